// Rotating the token signing key with the CLI while a server runs: tokens signed before keep
// working until the key after next, new tokens carry the new key, /auth/jwks lists both.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';
import { decodeJwt, sleep, tokenFor } from './support.js';

const run = promisify(execFile);
let server: RunningRegistry;

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_TOKEN_KEY_RELOAD_SECONDS: '1' } });
});
after(() => server.stop());

async function rotate(): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, 'keys', 'rotate'], { env: { ...process.env, PORTCULLIS_DATA_DIR: server.dataDir } });
  const kid = /current key: (\S+)/.exec(stdout)?.[1];
  assert.ok(kid, stdout);
  return kid;
}

const base = (token: string) => fetch(`${server.url}/v2/`, { headers: { Authorization: `Bearer ${token}` } });
const jwksKids = async () => ((await (await fetch(`${server.url}/auth/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid);

describe('signing key rotation', () => {
  it('keeps tokens of the previous key valid and drops the key before it', async () => {
    const first = await tokenFor(server.url, server.admin);
    const firstKid = decodeJwt(first).header.kid;
    assert.deepEqual(await jwksKids(), [firstKid]);

    const secondKid = await rotate();
    assert.notEqual(secondKid, firstKid);
    await sleep(1_500); // the server reloads its keys every second here
    assert.deepEqual(await jwksKids(), [secondKid, firstKid]);
    const second = await tokenFor(server.url, server.admin);
    assert.equal(decodeJwt(second).header.kid, secondKid);
    assert.equal((await base(first)).status, 200, 'a token of the previous key still verifies');
    assert.equal((await base(second)).status, 200);

    const thirdKid = await rotate();
    await sleep(1_500);
    assert.deepEqual(await jwksKids(), [thirdKid, secondKid]);
    const dropped = await base(first);
    assert.equal(dropped.status, 401, 'a token of a dropped key is refused');
    assert.match(dropped.headers.get('WWW-Authenticate') ?? '', /error="invalid_token"/);
    assert.equal((await base(second)).status, 200);
  });
});
