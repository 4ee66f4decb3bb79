// The access rules on their own: subjects, patterns, unions, deny by default.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  allowedActions,
  matchesRepository,
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
    assert.ok(matchesRepository('${user}/**', 'alice/tools', 'Alice'));
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

  it('refuses malformed rules with a clear message', () => {
    assert.throws(() => parseSubject('team:x'), /invalid subject/);
    assert.throws(() => parseSubject('group:'), /invalid subject/);
    assert.throws(() => validatePattern('team-a/../x'), /invalid repository pattern/);
    assert.throws(() => validatePattern('Team-A/*'), /invalid repository pattern/);
    assert.throws(() => validatePattern('a/**b'), /invalid repository pattern/);
    assert.throws(() => validateActions(['pull', 'write']), /unknown action "write"/);
    assert.throws(() => validateActions([]), /non-empty/);
  });
});
