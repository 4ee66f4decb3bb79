// Personal namespaces (`${user}`) cannot capture shared ones: a directory account named `Team-A`
// gets nothing on `team-a/**` (names are not folded into namespaces), one named `public` gets
// no push on `public/*` (a namespace another rule names is never anyone's), and rule sets that
// put `${user}` at the top level are accepted with a warning recommending `users/${user}/**`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSlapd, ssha, type RunningSlapd, portcullisLdapEnv } from '../support/slapd.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { accessOf, adminToken, api, tokenFor } from './support.js';

let slapd: RunningSlapd;
let server: RunningRegistry;
let admin: string;

const teamA = { username: 'Team-A', password: 'team-a-directory-pass' };
const publicAccount = { username: 'public', password: 'public-directory-pass' };
const alice = { username: 'alice', password: 'alice-pass' };

const RULES = [
  { subject: 'authenticated', repositories: '${user}/**', actions: ['pull', 'push', 'delete'] },
  { subject: 'group:developers', repositories: 'team-a/**', actions: ['pull', 'push'] },
  { subject: 'anonymous', repositories: 'public/*', actions: ['pull'] },
];

function directoryPerson(uid: string, password: string, base: string): string {
  return [`dn: uid=${uid},ou=people,${base}`, 'changetype: add', 'objectClass: inetOrgPerson', `uid: ${uid}`, `cn: ${uid}`, `sn: ${uid}`, `userPassword: ${ssha(password)}`, ''].join('\n');
}

before(async () => {
  slapd = await startSlapd({ memberOf: 'overlay' });
  await slapd.modify([directoryPerson(teamA.username, teamA.password, slapd.baseDn), directoryPerson(publicAccount.username, publicAccount.password, slapd.baseDn)].join('\n'));
  server = await startPortcullis({
    env: portcullisLdapEnv(slapd, {
      PORTCULLIS_AUTH_LDAP_GROUPS_SOURCE: 'memberOf',
    }),
  });
  admin = await adminToken(server);
});
after(async () => {
  await server?.stop();
  await slapd?.stop();
});

const granted = async (credentials: { username: string; password: string }, repository: string) =>
  accessOf(await tokenFor(server.url, credentials, [`repository:${repository}:pull,push,delete`]));

describe('personal namespaces', () => {
  it('a top-level ${user} rule set is applied with a warning recommending users/${user}/**', async () => {
    const applied = await api<{ warnings: string[]; added: unknown[] }>(server.url, admin, 'PUT', '/admin/v1/rules', { rules: RULES });
    assert.equal(applied.status, 200, applied.text);
    assert.equal(applied.body.added.length, 3);
    assert.deepEqual(applied.body.warnings, [
      'rule for authenticated on ${user}/**: ${user} at the top level lets a user name take a namespace that a shared rule may need later; prefer users/${user}/**',
    ]);
  });

  it('a directory account named Team-A gets nothing on team-a/** (no folding)', async () => {
    assert.deepEqual(await granted(teamA, 'team-a/app'), []);
    const explained = await api<{ allowed: string[]; rules: unknown[] }>(server.url, admin, 'GET', '/admin/v1/access?subject=Team-A&repository=team-a/app');
    assert.equal(explained.status, 200, explained.text);
    assert.deepEqual([explained.body.allowed, explained.body.rules], [[], []]);
    // The developers still own it.
    assert.deepEqual(await granted(alice, 'team-a/app'), [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }]);
  });

  it('an account named public gets only what anonymous gets on public/*', async () => {
    assert.deepEqual(await granted(publicAccount, 'public/base'), [{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
    assert.deepEqual(await granted(publicAccount, 'public/deep/base'), []);
  });

  it('everyone else keeps a personal namespace, and users/${user}/** works without a warning', async () => {
    assert.deepEqual(await granted(alice, 'alice/tools'), [{ type: 'repository', name: 'alice/tools', actions: ['pull', 'push', 'delete'] }]);
    const nested = [{ subject: 'authenticated', repositories: 'users/${user}/**', actions: ['pull', 'push'] }, ...RULES.slice(1)];
    const applied = await api<{ warnings: string[] }>(server.url, admin, 'PUT', '/admin/v1/rules', { rules: nested });
    assert.equal(applied.status, 200, applied.text);
    assert.deepEqual(applied.body.warnings, []);
    assert.deepEqual(await granted(alice, 'users/alice/tools'), [{ type: 'repository', name: 'users/alice/tools', actions: ['pull', 'push'] }]);
    assert.deepEqual(await granted(alice, 'alice/tools'), []);
    assert.deepEqual(await granted(publicAccount, 'users/public/x'), [{ type: 'repository', name: 'users/public/x', actions: ['pull', 'push'] }]);
    assert.deepEqual(await granted(teamA, 'users/team-a/x'), []);
  });

});
