// The login throttle is one for every replica: two `portcullis serve` processes on one PostgreSQL
// database (and one data folder: the same signing key) count failed logins together, a success on
// one clears that address's failures for the name on the other, a restart forgets nothing, and a
// database that cannot count a login fails it closed (503 whatever the password) rather than let
// it through uncounted. Every request picks its loopback source address, as in login-throttle.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../support/cli.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { basic, errorCode, requestFrom, type RawResponse } from './support.js';

let database: TestDatabase;
let first: RunningRegistry;
let second: RunningRegistry;

/** A replica on the shared database and data folder (the signing key), like `first`. */
const replica = (dataDir: string): Promise<RunningRegistry> => startPortcullis({ env: postgresEnv(database), dataDir });

before(async () => {
  database = await createTestDatabase();
  first = await startPortcullis({ env: postgresEnv(database) });
  second = await replica(first.dataDir);
});
after(async () => {
  await second?.stop();
  await first?.stop();
  await database?.drop();
});

async function addUser(username: string, password: string): Promise<{ username: string; password: string }> {
  const added = await runCli(['user', 'add', username, '--password-stdin'], { dataDir: first.dataDir, env: postgresEnv(database), stdin: `${password}\n` });
  assert.equal(added.code, 0, added.stderr);
  return { username, password };
}

function login(on: RunningRegistry, from: string, credentials: { username: string; password: string }): Promise<RawResponse> {
  return requestFrom(from, `${on.url}/auth/token?service=portcullis&scope=repository:x/y:pull`, {
    headers: { Authorization: basic(credentials) },
  });
}

function expectStatus(response: RawResponse, status: number, what: string): void {
  assert.equal(response.status, status, `${what}: ${response.status} ${response.body}`);
}

function expectThrottled(response: RawResponse, what: string, retryAfter?: number): void {
  expectStatus(response, 429, what);
  assert.equal(errorCode(response.body), 'TOOMANYREQUESTS', response.body);
  if (retryAfter !== undefined) assert.equal(response.headers['retry-after'], String(retryAfter), `${what}: Retry-After`);
}

const wrong = (user: { username: string }) => ({ username: user.username, password: 'not-the-password' });

describe('one login throttle for two servers on one PostgreSQL database', () => {
  it('failures for one name from one address, alternating between the servers, are counted together', async () => {
    const carol = await addUser('carol', 'carol-password-123');
    const from = '127.0.20.1';
    // Five free failures, the sixth starts the wait: three on each server.
    for (let i = 1; i <= 6; i++) expectStatus(await login(i % 2 ? first : second, from, wrong(carol)), 401, `failure ${i}`);
    expectThrottled(await login(first, from, carol), 'the right password on the first server', 1);
    expectThrottled(await login(second, from, carol), 'the right password on the second server', 1);
    expectStatus(await login(second, '127.0.20.2', carol), 200, 'the same user from another address');
  });

  it('failures for one name from many addresses count together: the addresses that failed wait on either server', async () => {
    const dave = await addUser('dave', 'dave-password-4567');
    for (let i = 1; i <= 21; i++) expectStatus(await login(i % 2 ? first : second, `127.0.21.${i}`, wrong(dave)), 401, `failure ${i}`);
    expectThrottled(await login(first, '127.0.21.2', dave), 'an address that failed on the second server, on the first');
    expectThrottled(await login(second, '127.0.21.1', dave), 'an address that failed on the first server, on the second');
    expectStatus(await login(first, '127.0.21.99', dave), 200, 'the owner from an address of its own');
  });

  it("a success on one server clears that address's failures for the name on the other", async () => {
    const erin = await addUser('erin', 'erin-password-8910');
    const from = '127.0.22.1';
    for (let i = 1; i <= 4; i++) expectStatus(await login(first, from, wrong(erin)), 401, `failure ${i} on the first server`);
    expectStatus(await login(second, from, erin), 200, 'the right password on the second server');
    // Counted afresh: five more failures are free again (without the clearing, the sixth of nine would start a wait).
    for (let i = 1; i <= 5; i++) expectStatus(await login(first, from, wrong(erin)), 401, `failure ${i} after the success`);
    expectStatus(await login(first, from, erin), 200, 'the right password on the first server');
  });

  it('a restart keeps the counts', async () => {
    const frank = await addUser('frank', 'frank-password-1112');
    const from = '127.0.23.1';
    for (let i = 1; i <= 4; i++) expectStatus(await login(first, from, wrong(frank)), 401, `failure ${i} before the restart`);
    await first.stop();
    await second.stop();
    first = await replica(first.dataDir);
    second = await replica(first.dataDir);
    expectStatus(await login(second, from, wrong(frank)), 401, 'failure 5, after the restart');
    expectStatus(await login(first, from, wrong(frank)), 401, 'failure 6, after the restart: it starts the wait');
    expectThrottled(await login(second, from, frank), 'the right password', 1);
  });
});

describe('a database that cannot count logins fails them closed', () => {
  it('while the counts cannot be read, every login is 503, and counting resumes where it was', async () => {
    const grace = await addUser('grace', 'grace-password-1314');
    const from = '127.0.24.1';
    for (let i = 1; i <= 5; i++) expectStatus(await login(first, from, wrong(grace)), 401, `failure ${i}`);
    await database.query('ALTER TABLE login_throttle RENAME TO login_throttle_away');
    try {
      for (const [what, credentials] of [['the right password', grace], ['a wrong one', wrong(grace)]] as const) {
        const response = await login(second, from, credentials);
        expectStatus(response, 503, what);
        assert.equal(errorCode(response.body), 'UNAVAILABLE', response.body);
      }
    } finally {
      await database.query('ALTER TABLE login_throttle_away RENAME TO login_throttle');
    }
    // The five failures are still there: the sixth starts the wait.
    expectStatus(await login(first, from, wrong(grace)), 401, 'failure 6');
    expectThrottled(await login(second, from, grace), 'the right password after failure 6', 1);
  });

  it('while the counts can be read but not written, no password is checked: a right one gets the same 503 as a wrong one', async () => {
    const heidi = await addUser('heidi', 'heidi-password-1516');
    expectStatus(await login(first, '127.0.25.1', wrong(heidi)), 401, 'a failure recorded while the store works');
    // A store that reads but cannot write (a full disk, a read-only standby), for this table only.
    await database.query(`CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'read only' USING ERRCODE = '25006'; END $$`);
    await database.query('CREATE TRIGGER read_only BEFORE INSERT OR UPDATE OR DELETE ON login_throttle FOR EACH ROW EXECUTE FUNCTION refuse_writes()');
    try {
      // A 401 for this guess would go uncounted; a 503 it is.
      expectStatus(await login(first, '127.0.25.2', wrong(heidi)), 503, 'a wrong password that cannot be counted');
      // Had the server gone on checking passwords, a 200 here (a fresh address: nothing to clear)
      // against 503s for wrong ones would tell a guesser the answer, as often as it liked.
      for (let i = 1; i <= 3; i++) expectStatus(await login(first, `127.0.25.${2 + i}`, wrong(heidi)), 503, `wrong password ${i} after that`);
      const right = await login(first, '127.0.25.9', heidi);
      expectStatus(right, 503, 'the right password from a fresh address');
      assert.equal(errorCode(right.body), 'UNAVAILABLE', right.body);
    } finally {
      await database.query('DROP TRIGGER read_only ON login_throttle');
      await database.query('DROP FUNCTION refuse_writes()');
    }
    expectStatus(await login(first, '127.0.25.9', heidi), 200, 'the right password once the store takes writes again');
    // Only the failure written before counts: four more are free, the sixth starts the wait.
    for (let i = 2; i <= 6; i++) expectStatus(await login(second, '127.0.25.1', wrong(heidi)), 401, `failure ${i}`);
    expectThrottled(await login(first, '127.0.25.1', heidi), 'the right password after failure 6', 1);
  });
});
