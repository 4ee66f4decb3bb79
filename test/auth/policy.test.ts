// The access rules on their own: subjects, patterns, unions, deny by default.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  allowedActions,
  explain,
  matchesRepository,
  personalNamespaceWarnings,
  parseSubject,
  validateActions,
  validatePattern,
  type AccessRule,
  type Principal,
} from '../../src/auth/policy/rules.js';

const alice: Principal = {
  kind: 'user',
  identity: {
    username: 'alice',
    provider: 'ldap',
    groups: [{ dn: 'cn=developers,ou=groups,dc=example,dc=org', name: 'developers' }],
  },
};
const dave: Principal = { kind: 'user', identity: { username: 'dave', provider: 'ldap', groups: [] } };
const ci: Principal = { kind: 'robot', name: 'ci' };
const nobody: Principal = { kind: 'anonymous' };

const rule = (subject: string, repositories: string, actions: AccessRule['actions']): AccessRule => ({
  subject: parseSubject(subject),
  repositories: validatePattern(repositories),
  actions,
});

const rules: AccessRule[] = [
  rule('group:CN=Developers, OU=groups, DC=example, DC=org', 'team-a/**', ['pull', 'push']),
  rule('group:developers', 'shared/*', ['pull']),
  rule('authenticated', '${user}/**', ['pull', 'push', 'delete']),
  rule('anonymous', 'public/**', ['pull']),
  rule('robot:ci', 'team-a/app', ['push', 'pull']),
  rule('user:dave', 'ops/*', ['admin']),
];

const actions = (principal: Principal, repository: string) => [...allowedActions(rules, principal, repository)].sort();

describe('access rules', () => {
  it('matches patterns segment by segment', () => {
    assert.ok(matchesRepository('team-a/*', 'team-a/app'));
    assert.ok(!matchesRepository('team-a/*', 'team-a/app/sub'));
    assert.ok(!matchesRepository('team-a/*', 'team-ab/app'));
    assert.ok(matchesRepository('team-a/**', 'team-a/app/sub'));
    assert.ok(matchesRepository('team-a/**', 'team-a'));
    assert.ok(!matchesRepository('team-a/**', 'team-ab'));
    assert.ok(matchesRepository('**', 'anything/at/all'));
    assert.ok(matchesRepository('a.b/x', 'a.b/x'));
    assert.ok(!matchesRepository('a.b/x', 'aXb/x'), 'dots are literal');
    assert.ok(matchesRepository('${user}/**', 'alice/tools', 'alice'));
    assert.ok(!matchesRepository('${user}/**', 'alice/tools', 'Alice'), 'a name is not folded into a namespace');
    assert.ok(!matchesRepository('${user}/**', 'alice/tools', 'bob'));
    assert.ok(!matchesRepository('${user}/**', 'x/tools', 'not a valid name!'));
  });

  it('grants the union of matching rules and nothing else', () => {
    assert.deepEqual(actions(alice, 'team-a/app'), ['pull', 'push']);
    assert.deepEqual(actions(alice, 'shared/base'), ['pull']);
    assert.deepEqual(actions(alice, 'alice/scratch'), ['delete', 'pull', 'push']);
    assert.deepEqual(actions(alice, 'public/x'), ['pull']);
    assert.deepEqual(actions(alice, 'team-b/app'), []);
    assert.deepEqual(actions(dave, 'team-a/app'), []);
    assert.deepEqual(actions(dave, 'ops/tool'), ['admin', 'delete', 'pull', 'push']);
    assert.deepEqual(actions(ci, 'team-a/app'), ['pull', 'push']);
    assert.deepEqual(actions(ci, 'team-a/other'), []);
    assert.deepEqual(actions(nobody, 'public/x'), ['pull']);
    assert.deepEqual(actions(nobody, 'team-a/app'), []);
    assert.deepEqual(actions(nobody, 'alice/scratch'), []);
  });

  it('lets local administrators do everything', () => {
    const admin: Principal = { kind: 'user', identity: { username: 'admin', provider: 'local', groups: [], admin: true } };
    assert.deepEqual(actions(admin, 'any/thing'), ['admin', 'delete', 'pull', 'push']);
  });

  it('gives ${user} only names that are repository components as they stand, and none that another rule names', () => {
    const person = (username: string): Principal => ({ kind: 'user', identity: { username, provider: 'ldap', groups: [] } });
    const personal: AccessRule[] = [
      rule('authenticated', '${user}/**', ['pull', 'push', 'delete']),
      rule('authenticated', 'users/${user}/**', ['pull', 'push']),
      rule('group:developers', 'team-a/**', ['pull', 'push']),
      rule('anonymous', 'public/*', ['pull']),
      rule('group:ops', 'users/shared/**', ['pull']),
    ];
    const allowed = (principal: Principal, repository: string) => [...allowedActions(personal, principal, repository)].sort();
    // Another rule names team-a and public at the top, and users/shared below users.
    assert.deepEqual(allowed(person('team-a'), 'team-a/app'), []);
    assert.deepEqual(allowed(person('public'), 'public/x'), ['pull']);
    assert.deepEqual(allowed(person('shared'), 'users/shared/x'), []);
    assert.deepEqual(allowed(person('shared'), 'shared/x'), ['delete', 'pull', 'push']);
    assert.deepEqual(allowed(person('users'), 'users/x'), [], '"users" is named at the top by users/…');
    // Not folded: Team-A is not team-a, and a name that is no component gets nothing.
    assert.deepEqual(allowed(person('Team-A'), 'team-a/app'), []);
    assert.deepEqual(allowed(person('Alice'), 'alice/x'), []);
    assert.deepEqual(allowed(person('İnci'), 'inci/x'), []);
    assert.deepEqual(allowed(person('a/b'), 'a/b/x'), []);
    // Everyone else keeps a personal namespace.
    assert.deepEqual(allowed(person('alice'), 'alice/x'), ['delete', 'pull', 'push']);
    assert.deepEqual(allowed(person('alice'), 'users/alice/x'), ['pull', 'push']);
    assert.deepEqual(allowed(person('alice'), 'users/bob/x'), []);
    // The explanation agrees with the decision.
    assert.deepEqual(explain(personal, person('team-a'), 'team-a/app'), []);
    assert.deepEqual(explain(personal, person('alice'), 'alice/x'), [personal[0]]);
  });

  it('warns about ${user} at the top level and recommends users/${user}', () => {
    const warnings = personalNamespaceWarnings([
      rule('authenticated', '${user}/**', ['pull']),
      rule('authenticated', 'users/${user}/**', ['pull']),
      rule('group:x', '${user}', ['pull']),
    ]);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', /authenticated on \$\{user\}\/\*\*: .*prefer users\/\$\{user\}\/\*\*/);
    assert.match(warnings[1] ?? '', /group:x on \$\{user\}: .*prefer users\/\$\{user\}$/);
  });

  it('refuses subjects that can never match, with a hint', () => {
    assert.throws(() => parseSubject('group:CORP\\developers'), /use the group's name \(cn\), e\.g\. group:developers, or its full DN/);
    assert.throws(() => parseSubject('user:CORP\\alice'), /people sign in as alice .*e\.g\. user:alice/);
    assert.throws(() => parseSubject('user:   '), /the name is empty/);
    assert.throws(() => parseSubject('group:dev\u0000s'), /control character/);
    assert.throws(() => parseSubject('user:al\nice'), /control character/);
    assert.throws(() => parseSubject('robot:CI'), /robot names are/);
    assert.throws(() => parseSubject(`user:${'a'.repeat(600)}`), /longer than 512 characters/);
    // A DN may escape with a backslash; that is not a down-level name.
    assert.deepEqual(parseSubject('group:cn=Doe\\, Jane,ou=groups,dc=example,dc=org'), { kind: 'group', name: 'cn=Doe\\, Jane,ou=groups,dc=example,dc=org' });
    assert.deepEqual(parseSubject(`user:${'a'.repeat(507)}`), { kind: 'user', name: 'a'.repeat(507) });
  });

  it('refuses malformed rules with a clear message', () => {
    assert.throws(() => parseSubject('team:x'), /invalid subject/);
    assert.throws(() => parseSubject('group:'), /invalid subject/);
    assert.throws(() => validatePattern('team-a/../x'), /invalid repository pattern/);
    assert.throws(() => validatePattern('Team-A/*'), /invalid repository pattern/);
    assert.throws(() => validatePattern('a/**b'), /invalid repository pattern/);
    assert.throws(() => validatePattern('a/'.repeat(128) + 'a'), /longer than 255 characters/);
    assert.throws(() => validateActions(['pull', 'write']), /unknown action "write"/);
    assert.throws(() => validateActions([]), /non-empty/);
  });
});
