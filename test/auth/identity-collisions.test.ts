// Identities that try to pass for others: a directory account spelled like a local user
// (`Admin` for the bootstrap `admin`), a directory group *named* like the administrators' DN,
// and a refresh token redeemed through the wrong provider. None may gain anything.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSlapd, ssha, type RunningSlapd } from '../support/slapd.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { accessOf, getToken, postToken, requestToken } from './support.js';

let slapd: RunningSlapd;
let server: RunningRegistry;
const ADMINS_DN = 'cn=admins,ou=groups,dc=example,dc=org';

before(async () => {
  slapd = await startSlapd({ memberOf: 'overlay' });
  const base = slapd.baseDn;
  await slapd.modify(
    [
      `dn: uid=Admin,ou=people,${base}`,
      'changetype: add',
      'objectClass: inetOrgPerson',
      'uid: Admin',
      'cn: Not The Admin',
      'sn: Admin',
      `userPassword: ${ssha('directory-admin-pass')}`,
      '',
      // A group in another branch whose name is the administrators' DN, with dave in it.
      `dn: cn=cn\\3Dadmins\\2Cou\\3Dgroups\\2Cdc\\3Dexample\\2Cdc\\3Dorg,ou=people,${base}`,
      'changetype: add',
      'objectClass: groupOfNames',
      `cn: ${ADMINS_DN}`,
      `member: uid=dave,ou=people,${base}`,
      '',
    ].join('\n'),
  );
  server = await startPortcullis({
    env: {
      PORTCULLIS_AUTH_LDAP_URL: slapd.url,
      PORTCULLIS_AUTH_LDAP_BIND_DN: slapd.bindDn,
      PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: slapd.bindPassword,
      PORTCULLIS_AUTH_LDAP_USER_BASE_DN: `ou=people,${base}`,
      PORTCULLIS_AUTH_LDAP_GROUPS_SOURCE: 'memberOf',
      PORTCULLIS_AUTH_LDAP_GROUPS_BASE_DN: `ou=groups,${base}`,
      PORTCULLIS_AUTH_ADMIN_GROUPS: ADMINS_DN,
    },
  });
});
after(async () => {
  await server?.stop();
  await slapd?.stop();
});

const ADMIN_SCOPE = 'registry:admin:*';

describe('identity collisions', () => {
  it('a directory account spelled like a local user cannot log in as it', async () => {
    for (const username of ['Admin', 'admin ', ' ADMIN', 'ａｄｍｉｎ']) {
      const response = await requestToken(server.url, { credentials: { username, password: 'directory-admin-pass' }, scopes: [ADMIN_SCOPE] });
      assert.equal(response.status, 401, `${JSON.stringify(username)} got ${response.status}`);
    }
    // The local administrator is unaffected.
    assert.deepEqual(accessOf((await getToken(server.url, server.admin, [ADMIN_SCOPE])).token), [{ type: 'registry', name: 'admin', actions: ['*'] }]);
  });

  it('a group named like the administrators DN grants nothing; the real group does', async () => {
    const dave = await getToken(server.url, { username: 'dave', password: 'dave-pass' }, [ADMIN_SCOPE]);
    assert.deepEqual(accessOf(dave.token), []);
    const carol = await getToken(server.url, { username: 'carol', password: 'carol-pass' }, [ADMIN_SCOPE]);
    assert.deepEqual(accessOf(carol.token), [{ type: 'registry', name: 'admin', actions: ['*'] }]);
  });

  it('a directory user’s refresh token resolves through the directory only', async () => {
    const login = await getToken(server.url, { username: 'alice', password: 'alice-pass' }, [], { offline_token: 'true', client_id: 'tests' });
    assert.ok(login.refresh_token);
    const refreshed = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: login.refresh_token, client_id: 'tests', scope: ADMIN_SCOPE });
    assert.equal(refreshed.status, 200);
    const body = (await refreshed.json()) as { token: string };
    assert.deepEqual(accessOf(body.token), []);
  });
});
