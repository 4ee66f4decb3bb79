// An administrative change over the admin API and the audit event that records it are one
// transaction, on SQLite and on PostgreSQL: after the call both are there, and when the database
// refuses the event (a trigger here, standing for a full disk or a lost privilege: no client
// value can make a sanitised event unstorable) the change is refused too and nothing is left of it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { accessOf, adminToken, api, getToken, postToken, SERVICE } from '../auth/support.js';
import { BACKENDS, cli, type Backend } from '../support/audit-backends.js';
import type { RunningRegistry } from '../support/server.js';

interface ShownRule {
  id?: number;
  subject: string;
  repositories: string;
  actions: string[];
}
interface AuditEntry {
  type: string;
  actor?: string;
  clientIp?: string;
  details?: Record<string, unknown>;
}
interface Problem {
  status: number;
  title: string;
  detail: string;
  requestId?: string;
}

const RULES = [{ subject: 'group:developers', repositories: 'dev/**', actions: ['pull', 'push'] }];
const OTHER_RULES = [{ subject: 'anonymous', repositories: 'public/**', actions: ['pull'] }];

const strip = (rules: ShownRule[]) => rules.map(({ subject, repositories, actions }) => ({ subject, repositories, actions }));

for (const backend of BACKENDS) {
  describe(`admin changes and their audit events on ${backend.name}`, () => {
    let running: Awaited<ReturnType<Backend['start']>>;
    let server: RunningRegistry;
    let token: string;

    before(async () => {
      running = await backend.start();
      server = running.server;
      token = await adminToken(server);
    });
    after(() => running?.stop());

    const call = <T>(method: string, path: string, body?: unknown) => api<T>(server.url, token, method, path, body);
    const rules = async () => strip((await call<{ rules: ShownRule[] }>('GET', '/admin/v1/rules')).body.rules);
    const events = async (type: string) => (await call<{ events: AuditEntry[] }>('GET', `/admin/v1/audit?type=${type}&limit=1000`)).body.events;

    /** Runs `work` while the database refuses audit events of `type`. */
    async function whileRefusing(type: string, work: () => Promise<void>): Promise<void> {
      const allow = await running.refuse(type);
      try {
        await work();
      } finally {
        await allow();
      }
    }

    /** A change refused because its event was: a 500 problem carrying the request id, nothing more. */
    function assertRefused(response: { status: number; body: unknown; headers: Headers; text: string }): void {
      assert.equal(response.status, 500, response.text);
      assert.equal(response.headers.get('content-type'), 'application/problem+json');
      const problem = response.body as Problem;
      assert.equal(problem.detail, 'internal server error');
      assert.match(problem.requestId ?? '', /\S/);
      assert.ok(!response.text.includes('audit event refused'), 'the database error stays in the log');
    }

    it('a rule replacement stores the rules and its rules.changed event together', async () => {
      const applied = await call<{ added: ShownRule[] }>('PUT', '/admin/v1/rules', { rules: RULES });
      assert.equal(applied.status, 200, applied.text);
      assert.deepEqual(strip(applied.body.added), RULES);
      assert.deepEqual(await rules(), RULES);
      const [recorded] = await events('rules.changed');
      assert.equal(recorded?.actor, 'admin');
      assert.equal(recorded?.clientIp, '127.0.0.1');
      assert.deepEqual(strip((recorded?.details?.applied as { added: ShownRule[] }).added), RULES);
    });

    it('a rule change whose rules.changed event the database refuses fails whole: replace, add and remove', async () => {
      const before = await events('rules.changed');
      const [stored] = (await call<{ rules: ShownRule[] }>('GET', '/admin/v1/rules')).body.rules;
      assert.ok(stored?.id !== undefined);
      await whileRefusing('rules.changed', async () => {
        assertRefused(await call('PUT', '/admin/v1/rules', { rules: OTHER_RULES }));
        assertRefused(await call('POST', '/admin/v1/rules', OTHER_RULES[0]));
        assertRefused(await call('DELETE', `/admin/v1/rules/${stored.id}`));
        // The policy in force is still the old one, not only the stored rows.
        assert.deepEqual(accessOf((await getToken(server.url, undefined, ['repository:public/x:pull'])).token), []);
      });
      assert.deepEqual(await rules(), RULES);
      assert.equal((await events('rules.changed')).length, before.length);

      // With the event accepted again, the same replacement goes through with its event.
      const applied = await call('PUT', '/admin/v1/rules', { rules: OTHER_RULES });
      assert.equal(applied.status, 200, applied.text);
      assert.deepEqual(await rules(), OTHER_RULES);
      assert.deepEqual(accessOf((await getToken(server.url, undefined, ['repository:public/x:pull'])).token), [{ type: 'repository', name: 'public/x', actions: ['pull'] }]);
      assert.equal((await events('rules.changed')).length, before.length + 1);
    });

    it('a robot, its rules and robot.created commit together; so do a revocation and robot.revoked', async () => {
      const rulesBefore = await rules();
      const robot = { name: 'nightly', description: 'nightly builds', rules: [{ repositories: 'nightly/**', actions: ['pull', 'push'] }] };
      await whileRefusing('robot.created', async () => {
        assertRefused(await call('POST', '/admin/v1/robots', robot));
      });
      assert.deepEqual((await call<{ robots: { name: string }[] }>('GET', '/admin/v1/robots')).body.robots, []);
      assert.deepEqual(await rules(), rulesBefore, 'no rule of the robot that was not created');
      assert.deepEqual(await events('robot.created'), []);

      const created = await call<{ username: string; secret: string }>('POST', '/admin/v1/robots', robot);
      assert.equal(created.status, 201, created.text);
      const credentials = { username: created.body.username, password: created.body.secret };
      assert.deepEqual(await rules(), [...rulesBefore, { subject: 'robot:nightly', repositories: 'nightly/**', actions: ['pull', 'push'] }]);
      assert.deepEqual((await events('robot.created')).map((e) => e.details?.robot), ['nightly']);
      const offline = await getToken(server.url, credentials, [], { offline_token: 'true', client_id: 'ci' });
      const refresh = offline.refresh_token ?? '';
      assert.match(refresh, /^[0-9a-f]{24}\./);

      await whileRefusing('robot.revoked', async () => {
        assertRefused(await call('DELETE', '/admin/v1/robots/nightly'));
      });
      // Still active, with its rules and its refresh token.
      const stillActive = await getToken(server.url, credentials, ['repository:nightly/app:push']);
      assert.equal(stillActive.token.split('.').length, 3);
      assert.equal((await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refresh, service: SERVICE, client_id: 'ci' })).status, 200);
      assert.equal((await rules()).length, rulesBefore.length + 1);
      assert.deepEqual(await events('robot.revoked'), []);

      const revoked = await call('DELETE', '/admin/v1/robots/nightly');
      assert.equal(revoked.status, 204, revoked.text);
      assert.deepEqual(await rules(), rulesBefore);
      const refused = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refresh, service: SERVICE, client_id: 'ci' });
      assert.equal(refused.status, 400);
      assert.equal(((await refused.json()) as { error: string }).error, 'invalid_grant');
      assert.deepEqual((await events('robot.revoked')).map((e) => e.details?.robot), ['nightly']);
    });

    it('a refresh token revocation and refresh_token.revoked commit together', async () => {
      const offline = await getToken(server.url, server.admin, [], { offline_token: 'true', client_id: 'docker' });
      const id = (offline.refresh_token ?? '').split('.')[0] ?? '';
      await whileRefusing('refresh_token.revoked', async () => {
        assertRefused(await call('DELETE', `/admin/v1/refresh-tokens/${id}`));
      });
      const listed = (await call<{ refreshTokens: { id: string; revokedAt?: number }[] }>('GET', '/admin/v1/refresh-tokens?user=admin')).body.refreshTokens;
      assert.equal(listed.find((entry) => entry.id === id)?.revokedAt, undefined);
      assert.deepEqual(await events('refresh_token.revoked'), []);

      assert.equal((await call('DELETE', `/admin/v1/refresh-tokens/${id}`)).status, 204);
      assert.deepEqual((await events('refresh_token.revoked')).map((e) => e.details?.id), [id]);
    });

    it('user changes from the CLI are recorded in their own transaction: refused events leave the user as it was', async () => {
      const { cliEnv } = running;
      const bob = { username: 'bob', password: 'bob-password-1234' };
      const added = await cli(cliEnv, ['user', 'add', bob.username, '--password-stdin'], `${bob.password}\n`);
      assert.equal(added.code, 0, added.stderr);
      assert.deepEqual((await events('user.created')).map((e) => [e.actor, e.details]), [['cli', { user: 'bob', admin: false }]]);
      // A refused change: no event, and nothing written.
      const duplicate = await cli(cliEnv, ['user', 'add', bob.username, '--password-stdin'], 'another-password-1234\n');
      assert.equal(duplicate.code, 2);
      assert.equal((await events('user.created')).length, 1);

      await whileRefusing('user.password_changed', async () => {
        const refused = await cli(cliEnv, ['user', 'passwd', bob.username, '--password-stdin'], 'a-new-password-5678\n');
        assert.equal(refused.code, 1, refused.stdout);
        assert.match(refused.stderr, /audit event refused/);
      });
      assert.equal((await getToken(server.url, bob)).token.split('.').length, 3, 'the old password still works');
      await whileRefusing('user.removed', async () => {
        assert.equal((await cli(cliEnv, ['user', 'rm', bob.username])).code, 1);
      });
      assert.equal((await getToken(server.url, bob)).token.split('.').length, 3, 'bob is still there');
      assert.deepEqual([...(await events('user.password_changed')), ...(await events('user.removed'))], []);

      const removed = await cli(cliEnv, ['user', 'rm', bob.username]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.deepEqual((await events('user.removed')).map((e) => [e.actor, e.details]), [['cli', { user: 'bob', refreshTokensRevoked: 0 }]]);
    });

    it('a client address too long for its column (an IPv6 zone from a trusted proxy) is recorded without the zone; the change commits', async () => {
      const response = await fetch(`${server.url}/admin/v1/rules`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'X-Forwarded-For': `fe80::1%${'z'.repeat(80)}` },
        body: JSON.stringify({ rules: RULES }),
      });
      assert.equal(response.status, 200, await response.text());
      assert.deepEqual(await rules(), RULES);
      const [recorded] = await events('rules.changed');
      assert.equal(recorded?.clientIp, 'fe80::1');
    });
  });
}
