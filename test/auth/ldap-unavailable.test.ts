// A directory that stops answering: directory users get 503 with a clear message (never 401,
// never 500), local users keep working, and nothing stored is affected.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSlapd, type RunningSlapd, portcullisLdapEnv } from '../support/slapd.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { requestToken } from './support.js';

let slapd: RunningSlapd;
let server: RunningRegistry;

before(async () => {
  slapd = await startSlapd();
  server = await startPortcullis({
    env: portcullisLdapEnv(slapd, {
      PORTCULLIS_AUTH_LDAP_TIMEOUT_SECONDS: '2',
    }),
  });
});
after(async () => {
  await server?.stop();
  await slapd?.stop();
});

describe('directory unavailable', () => {
  it('answers 503 for directory users and keeps serving local ones', async () => {
    const alice = { username: 'alice', password: 'alice-pass' };
    assert.equal((await requestToken(server.url, { credentials: alice })).status, 200);
    await slapd.stop();

    const down = await requestToken(server.url, { credentials: alice });
    assert.equal(down.status, 503);
    const body = (await down.json()) as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
    assert.match(body.errors[0]?.message ?? '', /LDAP directory is unavailable/);

    const local = await requestToken(server.url, { credentials: server.admin });
    assert.equal(local.status, 200, `local users are not affected: ${await local.text()}`);
    assert.doesNotMatch(server.output(), /alice-pass/);

    // Readiness names the directory for an operator, but holds: every replica shares the
    // directory, and taking them all out of service would stop pulls with valid tokens too.
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'degraded', checks: { metadata: 'ok', storage: 'ok', directory: 'unavailable' } });
  });

  it('starts while the directory cannot be reached, says so, and reports it until it answers', async () => {
    const unreachable = await startPortcullis({
      env: {
        PORTCULLIS_AUTH_LDAP_URL: 'ldap://127.0.0.1:1',
        PORTCULLIS_AUTH_LDAP_USER_BASE_DN: 'ou=people,dc=example,dc=org',
        PORTCULLIS_AUTH_LDAP_TIMEOUT_SECONDS: '2',
      },
    });
    try {
      assert.match(unreachable.output(), /LDAP directory unreachable at startup/);
      const ready = await fetch(`${unreachable.url}/readyz`);
      assert.equal(ready.status, 200);
      const body = (await ready.json()) as { status: string; checks: Record<string, string> };
      assert.equal(body.status, 'degraded');
      assert.equal(body.checks.directory, 'unavailable');
      assert.equal((await requestToken(unreachable.url, { credentials: unreachable.admin })).status, 200, 'local users log in meanwhile');
    } finally {
      await unreachable.stop();
    }
  });
});
