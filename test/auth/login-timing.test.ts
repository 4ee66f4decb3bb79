// Login timing reveals nothing: with a directory configured, a wrong password for a local user, a
// wrong password for a directory user and a name that exists nowhere take about as long, so the
// answer time does not tell which names exist (today: 180–290 ms, 6–18 ms and 4–6 ms). The check
// compares medians of a few samples of each, interleaved, with generous bounds; never absolute times.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSlapd, type RunningSlapd, portcullisLdapEnv } from '../support/slapd.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { addUser, basic, requestFrom } from './support.js';

let slapd: RunningSlapd;
let server: RunningRegistry;
const local = { username: 'localperson', password: 'local-person-password-1' };
const SAMPLES = 5;

before(async () => {
  slapd = await startSlapd();
  server = await startPortcullis({
    env: portcullisLdapEnv(slapd),
  });
  await addUser(server.dataDir, local.username, local.password);
});
after(async () => {
  await server?.stop();
  await slapd?.stop();
});

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** Milliseconds until a failed login (asserted 401, generic message) is answered. */
async function failedLogin(from: string, username: string): Promise<number> {
  const started = performance.now();
  const response = await requestFrom(from, `${server.url}/auth/token?service=portcullis`, {
    headers: { Authorization: basic({ username, password: 'definitely-not-the-password' }) },
  });
  const took = performance.now() - started;
  assert.equal(response.status, 401, `${username}: ${response.body}`);
  assert.equal((JSON.parse(response.body) as { errors: { message: string }[] }).errors[0]?.message, 'invalid username or password');
  return took;
}

describe('login timing', () => {
  it('a local user, a directory user and an unknown name fail in about the same time', async () => {
    const cases = {
      'local user': (i: number) => failedLogin(`127.0.10.${i + 1}`, local.username),
      'directory user': (i: number) => failedLogin(`127.0.11.${i + 1}`, i % 2 === 0 ? 'alice' : 'bob'),
      'unknown name': (i: number) => failedLogin(`127.0.12.${i + 1}`, `nobody-${i}`),
    };
    const times: Record<string, number[]> = { 'local user': [], 'directory user': [], 'unknown name': [] };
    // Warm every path once (first hash, first LDAP connection), then measure in turns.
    for (const run of Object.values(cases)) await run(SAMPLES);
    for (let i = 0; i < SAMPLES; i++) {
      for (const [name, run] of Object.entries(cases)) times[name]?.push(await run(i));
    }
    const medians = Object.entries(times).map(([name, values]) => [name, median(values)] as const);
    const summary = medians.map(([name, value]) => `${name} ${value.toFixed(0)} ms`).join(', ');
    for (const [a, ma] of medians) {
      for (const [b, mb] of medians) {
        if (a >= b) continue;
        assert.ok(Math.abs(ma - mb) < 0.3 * Math.max(ma, mb), `${a} and ${b} can be told apart by time: ${summary}`);
      }
    }
  });
});
