// Every value the admin API stores or looks up is checked against its column (and for NUL, which
// PostgreSQL refuses in text) before the database sees it: an over-long rule subject or robot
// description is a 400 that stores nothing, not a 500 — on SQLite and on PostgreSQL alike.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminToken, api } from './support.js';

interface ProblemBody {
  status: number;
  detail: string;
}

const LONG_PATTERN = `${'a/'.repeat(130)}a`;

for (const driver of ['sqlite', 'postgres'] as const) {
  describe(`admin API input limits on ${driver}`, () => {
    let database: TestDatabase | undefined;
    let server: RunningRegistry;
    let admin: string;

    before(async () => {
      database = driver === 'postgres' ? await createTestDatabase() : undefined;
      server = await startPortcullis({ env: database ? postgresEnv(database) : {} });
      admin = await adminToken(server);
    });
    after(async () => {
      await server?.stop();
      await database?.drop();
    });

    const stored = async () => {
      const rules = await api<{ rules: unknown[] }>(server.url, admin, 'GET', '/admin/v1/rules');
      const robots = await api<{ robots: { name: string; description?: string }[] }>(server.url, admin, 'GET', '/admin/v1/robots');
      assert.equal(rules.status, 200, rules.text);
      assert.equal(robots.status, 200, robots.text);
      return { rules: rules.body.rules, robots: robots.body.robots };
    };

    it('refuses over-long and NUL-containing values with a 400 that says which, and stores nothing', async () => {
      const refused: [string, string, string, unknown, RegExp][] = [
        ['long rule subject', 'POST', '/admin/v1/rules', { subject: `user:${'a'.repeat(600)}`, repositories: 'team-a/**', actions: ['pull'] }, /longer than 512 characters/],
        ['long subject in a rule set', 'PUT', '/admin/v1/rules', { rules: [{ subject: `group:${'g'.repeat(600)}`, repositories: '**', actions: ['pull'] }] }, /longer than 512 characters/],
        ['NUL in a subject', 'POST', '/admin/v1/rules', { subject: 'user:al\u0000ice', repositories: 'team-a/**', actions: ['pull'] }, /control character/],
        ['NUL in a group DN', 'PUT', '/admin/v1/rules', { rules: [{ subject: 'group:cn=dev\u0000,dc=example', repositories: '**', actions: ['pull'] }] }, /control character/],
        ['long pattern', 'POST', '/admin/v1/rules', { subject: 'user:alice', repositories: LONG_PATTERN, actions: ['pull'] }, /longer than 255 characters/],
        ['NUL in a pattern', 'POST', '/admin/v1/rules', { subject: 'user:alice', repositories: 'team-a/\u0000', actions: ['pull'] }, /invalid repository pattern/],
        ['long robot description', 'POST', '/admin/v1/robots', { name: 'described', description: 'd'.repeat(513) }, /description is longer than 512 characters/],
        ['NUL in a robot description', 'POST', '/admin/v1/robots', { name: 'described', description: 'before\u0000after' }, /description contains a control character/],
        ['long robot name', 'POST', '/admin/v1/robots', { name: 'r'.repeat(200) }, /invalid robot name/],
        ['NUL in a robot name', 'POST', '/admin/v1/robots', { name: 'ci\u0000' }, /invalid robot name/],
        ['long pattern in a robot rule', 'POST', '/admin/v1/robots', { name: 'patterned', rules: [{ repositories: LONG_PATTERN, actions: ['pull'] }] }, /longer than 255 characters/],
        ['description not a string', 'POST', '/admin/v1/robots', { name: 'typed', description: 42 }, /description must be a string/],
      ];
      for (const [what, method, path, body, message] of refused) {
        const response = await api<ProblemBody>(server.url, admin, method, path, body);
        assert.equal(response.status, 400, `${what}: ${response.status} ${response.text}`);
        assert.match(response.body.detail, message, what);
      }
      assert.deepEqual(await stored(), { rules: [], robots: [] });
    });

    it('stores values exactly at the limits intact', async () => {
      const subject = `user:${'a'.repeat(507)}`;
      const pattern = `${'b/'.repeat(127)}b`;
      assert.equal(subject.length, 512);
      assert.equal(pattern.length, 255);
      const rule = await api(server.url, admin, 'POST', '/admin/v1/rules', { subject, repositories: pattern, actions: ['pull'] });
      assert.equal(rule.status, 201, rule.text);
      const description = 'é\tü\n'.repeat(128);
      assert.equal(description.length, 512);
      const robot = await api(server.url, admin, 'POST', '/admin/v1/robots', { name: `r${'0'.repeat(63)}`, description });
      assert.equal(robot.status, 201, robot.text);
      const now = await stored();
      assert.deepEqual(now.rules.map((entry) => (entry as { subject: string; repositories: string }).subject), [subject]);
      assert.deepEqual(now.rules.map((entry) => (entry as { repositories: string }).repositories), [pattern]);
      assert.deepEqual(now.robots.map((entry) => [entry.name, entry.description]), [[`r${'0'.repeat(63)}`, description]]);
    });

    it('answers lookups of impossible names and ids as not found or bad requests, never 500', async () => {
      const cases: [string, string, number][] = [
        ['DELETE', '/admin/v1/robots/ci%00', 404],
        ['DELETE', `/admin/v1/robots/${'r'.repeat(300)}`, 404],
        ['DELETE', '/admin/v1/rules/99999999999', 404],
        ['DELETE', '/admin/v1/rules/4294967297', 404],
        ['DELETE', '/admin/v1/refresh-tokens/ab%00cd', 404],
        ['GET', '/admin/v1/refresh-tokens?user=al%00ice', 400],
        ['GET', `/admin/v1/refresh-tokens?user=${'u'.repeat(300)}`, 400],
        ['GET', '/admin/v1/access?subject=al%00ice&repository=team-a/app', 400],
        ['GET', '/admin/v1/audit?type=login%00', 400],
      ];
      for (const [method, path, status] of cases) {
        const response = await api<ProblemBody>(server.url, admin, method, path);
        assert.equal(response.status, status, `${method} ${path.slice(0, 60)}: ${response.text}`);
        assert.equal(response.body.status, status);
      }
    });
  });
}
