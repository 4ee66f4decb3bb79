// Repository patterns are matched segment by segment, in time bounded by pattern × name
// segments: a rule made of many `**` must not let one anonymous token request stall the server
// (it compiled to a backtracking regular expression before).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { matchesRepository } from '../../src/auth/policy/rules.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { accessOf, adminToken, api, tokenFor } from './support.js';

/** The meaning of a pattern, written as directly as possible (exponential, for small inputs only). */
function reference(pattern: readonly string[], name: readonly string[], user?: string): boolean {
  const [head, ...rest] = pattern;
  if (head === undefined) return name.length === 0;
  if (head === '**') return Array.from({ length: name.length + 1 }, (_, skip) => skip).some((skip) => reference(rest, name.slice(skip), user));
  if (name.length === 0) return false;
  const segmentMatches = head === '*' || (head === '${user}' ? user !== undefined && name[0] === user : head === name[0]);
  return segmentMatches && reference(rest, name.slice(1), user);
}

/** Every sequence of 1..maxLength items drawn from `alphabet`. */
function sequences(alphabet: readonly string[], maxLength: number): string[][] {
  let level: string[][] = [[]];
  const all: string[][] = [];
  for (let length = 1; length <= maxLength; length++) {
    level = level.flatMap((prefix) => alphabet.map((item) => [...prefix, item]));
    all.push(...level);
  }
  return all;
}

describe('pattern matching by segments', () => {
  it('agrees with the definition on every small pattern and name', () => {
    const patterns = sequences(['a', 'b', '*', '**', '${user}'], 4);
    const names = sequences(['a', 'b'], 4);
    let compared = 0;
    for (const pattern of patterns) {
      for (const name of names) {
        for (const user of [undefined, 'a']) {
          const expected = reference(pattern, name, user);
          const actual = matchesRepository(pattern.join('/'), name.join('/'), user);
          assert.equal(actual, expected, `${pattern.join('/')} vs ${name.join('/')} (user ${user ?? 'none'})`);
          compared++;
        }
      }
    }
    assert.equal(compared, (5 + 25 + 125 + 625) * (2 + 4 + 8 + 16) * 2);
  });

  it('keeps the meanings the rules rely on', () => {
    assert.ok(matchesRepository('team-a/**', 'team-a'), '** covers zero segments');
    assert.ok(matchesRepository('**/x', 'x'));
    assert.ok(matchesRepository('a/**/b/**/c', 'a/b/c'));
    assert.ok(matchesRepository('a/**/b/**/c', 'a/1/b/2/3/b/c'));
    assert.ok(!matchesRepository('a/**/b/**/c', 'a/1/c/2/b'));
    assert.ok(!matchesRepository('*', 'a/b'), '* is one segment');
    assert.ok(!matchesRepository('*/*', 'a'));
    assert.ok(!matchesRepository('team-a', 'team-a/app'), 'a literal pattern is the whole name');
    assert.ok(!matchesRepository('team', 'team-a'), 'segments compare whole, not as prefixes');
    assert.ok(!matchesRepository('a.b', 'axb'), 'no character is a wildcard');
  });
});

describe('pattern matching over HTTP', () => {
  let server: RunningRegistry;
  let admin: string;

  before(async () => {
    server = await startPortcullis();
    admin = await adminToken(server);
    const applied = await api(server.url, admin, 'PUT', '/admin/v1/rules', {
      rules: [
        { subject: 'anonymous', repositories: '**/**/**/**/**/**/**/**/x', actions: ['pull'] },
        { subject: 'anonymous', repositories: '**/*/**/*/**/*/**/*/**/z', actions: ['pull'] },
      ],
    });
    assert.equal(applied.status, 200, applied.text);
  });
  after(() => server.stop());

  it('an anonymous token request for a 120-segment name is answered, and correctly', { timeout: 120_000 }, async () => {
    const segments = Array.from({ length: 119 }, (_, index) => String.fromCharCode(97 + (index % 10)));
    const miss = `${segments.join('/')}/y`;
    const hitX = `${segments.join('/')}/x`;
    const hitZ = `${segments.join('/')}/z`;
    assert.ok(miss.length <= 255 && hitX.split('/').length === 120);
    // With the backtracking expression this request held the event loop for hours.
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, [`repository:${miss}:pull`])), []);
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, [`repository:${hitX}:pull,push`])), [{ type: 'repository', name: hitX, actions: ['pull'] }]);
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, [`repository:${hitZ}:pull`])), [{ type: 'repository', name: hitZ, actions: ['pull'] }]);
    // `*/**/*/**/…/z` needs at least four segments before z.
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, ['repository:a/b/c/z:pull'])), []);
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, ['repository:a/b/c/d/z:pull'])), [{ type: 'repository', name: 'a/b/c/d/z', actions: ['pull'] }]);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200, await health.text());
  });
});
