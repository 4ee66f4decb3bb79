// The admin REST API under /admin/v1 end to end: who may call it (administrators only, through a
// registry:admin:* token), declarative rules with dry runs and validation, robot accounts and
// their validation, access explanations and the audit trail of changes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { accessOf, addUser, adminToken, api, errorCode, getToken, postToken, tokenFor, type TokenResponse } from './support.js';

let server: RunningRegistry;
let admin: string;
const alice = { username: 'alice', password: 'alice-password-1234' };

interface ShownRule {
  id?: number;
  subject: string;
  repositories: string;
  actions: string[];
}
interface RulesBody {
  rules: ShownRule[];
}
interface DiffBody {
  dryRun: boolean;
  warnings: string[];
  added: ShownRule[];
  removed: ShownRule[];
  changed: { before: ShownRule; after: ShownRule }[];
}
interface RobotInfo {
  name: string;
  createdBy: string;
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
  description?: string;
}

const RULES = [
  { subject: 'user:alice', repositories: 'team-a/**', actions: ['pull', 'push'] },
  { subject: 'anonymous', repositories: 'public/**', actions: ['pull'] },
  { subject: 'authenticated', repositories: '${user}/**', actions: ['pull', 'push', 'delete'] },
];

before(async () => {
  server = await startPortcullis();
  await addUser(server.dataDir, alice.username, alice.password);
  admin = await adminToken(server);
});
after(() => server.stop());

const strip = (rules: ShownRule[]) => rules.map(({ subject, repositories, actions }) => ({ subject, repositories, actions }));

async function currentRules(): Promise<ShownRule[]> {
  const response = await api<RulesBody>(server.url, admin, 'GET', '/admin/v1/rules');
  assert.equal(response.status, 200, response.text);
  return response.body.rules;
}

/** Every admin endpoint, with a harmless body where one is needed; `audit`: auditors may read it. */
const ENDPOINTS: { method: string; path: string; body?: unknown; audit?: true }[] = [
  { method: 'GET', path: '/admin/v1/rules', audit: true },
  { method: 'PUT', path: '/admin/v1/rules', body: { rules: [{ subject: 'user:alice', repositories: '**', actions: ['pull', 'push', 'delete', 'admin'] }] } },
  { method: 'PUT', path: '/admin/v1/rules?dryRun=true', body: { rules: [] } },
  { method: 'POST', path: '/admin/v1/rules', body: { subject: 'user:alice', repositories: '**', actions: ['admin'] } },
  { method: 'DELETE', path: '/admin/v1/rules/1' },
  { method: 'GET', path: '/admin/v1/robots', audit: true },
  { method: 'POST', path: '/admin/v1/robots', body: { name: 'alice-bot', rules: [{ repositories: '**', actions: ['pull', 'push', 'delete'] }] } },
  { method: 'DELETE', path: '/admin/v1/robots/ci' },
  { method: 'GET', path: '/admin/v1/refresh-tokens' },
  { method: 'GET', path: '/admin/v1/refresh-tokens?user=admin' },
  { method: 'DELETE', path: '/admin/v1/refresh-tokens/000000000000000000000000' },
  { method: 'GET', path: '/admin/v1/access?subject=admin&repository=team-a/app', audit: true },
  { method: 'GET', path: '/admin/v1/audit/chain', audit: true },
  { method: 'GET', path: '/admin/v1/audit', audit: true },
  { method: 'GET', path: '/admin/v1/audit?type=login.failure', audit: true },
  { method: 'GET', path: '/admin/v1/trust', audit: true },
  { method: 'GET', path: '/admin/v1/trust?format=yaml', audit: true },
  { method: 'PUT', path: '/admin/v1/trust', body: { policies: [{ repositories: '**', immutableTags: ['*'] }] } },
  { method: 'PUT', path: '/admin/v1/trust?dryRun=true', body: { policies: [] } },
  { method: 'GET', path: '/admin/v1/trust/check?image=team-a/app:v1', audit: true },
  { method: 'GET', path: `/admin/v1/signatures?repository=team-a/app&digest=sha256:${'0'.repeat(64)}`, audit: true },
  { method: 'GET', path: '/admin/v1/signatures/report', audit: true },
  { method: 'GET', path: '/admin/v1/signatures/report?format=csv', audit: true },
];

describe('who may use the admin API', () => {
  it('an administrator gets registry:admin:* alongside other scopes', async () => {
    const token = await tokenFor(server.url, server.admin, ['repository:team-a/app:pull', 'registry:admin:*']);
    assert.deepEqual(accessOf(token), [
      { type: 'repository', name: 'team-a/app', actions: ['pull'] },
      { type: 'registry', name: 'admin', actions: ['*'] },
    ]);
    // Only `*` means the admin API; no other action word does.
    assert.deepEqual(accessOf(await tokenFor(server.url, server.admin, ['registry:admin:pull'])), []);
  });

  it('answers 401 with a challenge for registry:admin:* (registry:audit:* where auditors may read) without a token, and invalid_token for a bad one', async () => {
    for (const endpoint of ENDPOINTS) {
      const challenge = `Bearer realm="${server.url}/auth/token",service="portcullis",scope="registry:${endpoint.audit ? 'audit' : 'admin'}:*"`;
      const response = await api(server.url, undefined, endpoint.method, endpoint.path, endpoint.body);
      assert.equal(response.status, 401, `${endpoint.method} ${endpoint.path}: ${response.text}`);
      assert.equal(errorCode(response.text), 'UNAUTHORIZED');
      assert.equal(response.headers.get('WWW-Authenticate'), challenge, `${endpoint.method} ${endpoint.path}`);
      const bad = await api(server.url, 'not.a.token', endpoint.method, endpoint.path, endpoint.body);
      assert.equal(bad.status, 401, `${endpoint.method} ${endpoint.path}: ${bad.text}`);
      assert.equal(bad.headers.get('WWW-Authenticate'), `${challenge},error="invalid_token"`);
    }
    // Basic credentials are not an admin token either.
    const basicAuth = await fetch(`${server.url}/admin/v1/rules`, {
      headers: { Authorization: `Basic ${Buffer.from(`${server.admin.username}:${server.admin.password}`).toString('base64')}` },
    });
    assert.equal(basicAuth.status, 401, await basicAuth.text());
  });

  it('a non-administrator asking registry:admin:* gets a token without it, and a 403 problem everywhere', async () => {
    const asked = await tokenFor(server.url, alice, ['registry:admin:*', 'registry:catalog:*']);
    assert.deepEqual(accessOf(asked), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    // Through the OAuth2 grants too.
    const viaPost = await postToken(server.url, {
      grant_type: 'password',
      username: alice.username,
      password: alice.password,
      client_id: 'tests',
      access_type: 'offline',
      scope: 'registry:admin:*',
    });
    assert.equal(viaPost.status, 200);
    const posted = (await viaPost.json()) as TokenResponse;
    assert.deepEqual(accessOf(posted.access_token), []);
    const refreshed = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: posted.refresh_token ?? '', client_id: 'tests', scope: 'registry:admin:*' });
    assert.equal(refreshed.status, 200);
    assert.deepEqual(accessOf(((await refreshed.json()) as TokenResponse).access_token), []);

    const before = await currentRules();
    for (const endpoint of ENDPOINTS) {
      const response = await api(server.url, asked, endpoint.method, endpoint.path, endpoint.body);
      assert.equal(response.status, 403, `${endpoint.method} ${endpoint.path}: ${response.text}`);
      assert.equal(response.headers.get('Content-Type'), 'application/problem+json');
      const detail = endpoint.audit ? 'administrator or auditor rights required' : 'administrator rights required';
      assert.deepEqual(response.body, { type: 'about:blank', title: 'Forbidden', status: 403, detail });
      assert.ok(!response.text.includes('alice-bot') && !response.text.includes('"rules"'), response.text);
    }
    // Nothing she tried took effect.
    assert.deepEqual(await currentRules(), before);
    assert.deepEqual((await api(server.url, admin, 'GET', '/admin/v1/trust')).body, { policies: [] });
    const robots = await api<{ robots: RobotInfo[] }>(server.url, admin, 'GET', '/admin/v1/robots');
    assert.ok(!robots.body.robots.some((robot) => robot.name === 'alice-bot'), robots.text);
  });
});

describe('access rules', () => {
  it('PUT with dryRun=true shows the difference and changes nothing; without it applies', async () => {
    assert.deepEqual(await currentRules(), []);
    const dry = await api<DiffBody>(server.url, admin, 'PUT', '/admin/v1/rules?dryRun=true', { rules: RULES });
    assert.equal(dry.status, 200, dry.text);
    assert.equal(dry.body.dryRun, true);
    assert.deepEqual(strip(dry.body.added), RULES);
    assert.deepEqual(dry.body.removed, []);
    assert.deepEqual(dry.body.changed, []);
    // A personal namespace at the top level is allowed, with a warning recommending users/${user}.
    assert.equal(dry.body.warnings.length, 1, dry.text);
    assert.match(dry.body.warnings[0] ?? '', /authenticated on \$\{user\}\/\*\*: .*prefer users\/\$\{user\}\/\*\*/);
    assert.deepEqual(await currentRules(), [], 'a dry run must not change the rules');

    const applied = await api<DiffBody>(server.url, admin, 'PUT', '/admin/v1/rules', { rules: RULES });
    assert.equal(applied.status, 200, applied.text);
    assert.equal(applied.body.dryRun, false);
    assert.deepEqual(strip(applied.body.added), RULES);
    const stored = await currentRules();
    assert.deepEqual(strip(stored), RULES);
    assert.ok(stored.every((rule) => typeof rule.id === 'number'));

    // Applying the same set again is a no-op.
    const again = await api<DiffBody>(server.url, admin, 'PUT', '/admin/v1/rules', { rules: RULES });
    assert.deepEqual([again.body.added, again.body.removed, again.body.changed], [[], [], []]);

    // A changed action list is a change, a missing rule a removal (dry run first, then nothing changed).
    const edited = [{ ...RULES[0], actions: ['pull'] }, RULES[1]];
    const diff = await api<DiffBody>(server.url, admin, 'PUT', '/admin/v1/rules?dryRun=true', { rules: edited });
    assert.deepEqual(strip(diff.body.changed.map((change) => change.after)), [edited[0]]);
    assert.deepEqual(strip(diff.body.changed.map((change) => change.before)), [RULES[0]]);
    assert.deepEqual(strip(diff.body.removed), [RULES[2]]);
    assert.deepEqual(strip(await currentRules()), RULES);
  });

  it('refuses a bad rule set with 400 and changes nothing', async () => {
    const before = await currentRules();
    const bad: Record<string, unknown> = {
      'unknown action': { rules: [{ subject: 'user:alice', repositories: 'team-a/**', actions: ['pull', 'steal'] }] },
      'no actions': { rules: [{ subject: 'user:alice', repositories: 'team-a/**', actions: [] }] },
      'actions not a list': { rules: [{ subject: 'user:alice', repositories: 'team-a/**', actions: 'pull' }] },
      'bad subject kind': { rules: [{ subject: 'usr:alice', repositories: 'team-a/**', actions: ['pull'] }] },
      'subject without name': { rules: [{ subject: 'user:', repositories: 'team-a/**', actions: ['pull'] }] },
      'bare word subject': { rules: [{ subject: 'everyone', repositories: 'team-a/**', actions: ['pull'] }] },
      'upper-case pattern': { rules: [{ subject: 'user:alice', repositories: 'Team-A/**', actions: ['pull'] }] },
      'dot-dot pattern': { rules: [{ subject: 'user:alice', repositories: '../**', actions: ['pull'] }] },
      'empty segment': { rules: [{ subject: 'user:alice', repositories: 'team-a//x', actions: ['pull'] }] },
      'empty pattern': { rules: [{ subject: 'user:alice', repositories: '', actions: ['pull'] }] },
      'regex pattern': { rules: [{ subject: 'user:alice', repositories: 'team-.*', actions: ['pull'] }] },
      'unknown key': { rules: [{ subject: 'user:alice', repositories: 'team-a/**', actions: ['pull'], expires: 'never' }] },
      'one bad rule among good ones': { rules: [...RULES, { subject: 'user:bob', repositories: 'x/**', actions: ['pul'] }] },
      'rules not a list': { rules: { subject: 'user:alice' } },
      'no rules key': { rule: [] },
      'array body': [RULES[0]],
      'not JSON': 'rules: [',
    };
    for (const [what, body] of Object.entries(bad)) {
      for (const path of ['/admin/v1/rules', '/admin/v1/rules?dryRun=true']) {
        const response = await api(server.url, admin, 'PUT', path, body);
        assert.equal(response.status, 400, `${what} (${path}): ${response.status} ${response.text}`);
        assert.equal(response.headers.get('Content-Type'), 'application/problem+json', `${what} (${path})`);
      }
    }
    const single = await api(server.url, admin, 'POST', '/admin/v1/rules', { subject: 'user:alice', repositories: 'x/**', actions: ['fly'] });
    assert.equal(single.status, 400, single.text);
    assert.deepEqual(await currentRules(), before);
  });

  it('adds and removes single rules', async () => {
    const added = await api<ShownRule>(server.url, admin, 'POST', '/admin/v1/rules', { subject: 'group:ops', repositories: 'infra/*', actions: ['pull'] });
    assert.equal(added.status, 201, added.text);
    assert.equal(typeof added.body.id, 'number');
    assert.deepEqual(strip([added.body]), [{ subject: 'group:ops', repositories: 'infra/*', actions: ['pull'] }]);
    assert.ok((await currentRules()).some((rule) => rule.id === added.body.id));
    assert.equal((await api(server.url, admin, 'DELETE', `/admin/v1/rules/${added.body.id ?? 0}`)).status, 204);
    assert.equal((await api(server.url, admin, 'DELETE', `/admin/v1/rules/${added.body.id ?? 0}`)).status, 404);
    assert.equal((await api(server.url, admin, 'DELETE', '/admin/v1/rules/not-a-number')).status, 404);
    assert.deepEqual(strip(await currentRules()), RULES);
  });
});

describe('robot accounts', () => {
  it('creates a robot with its rules; the secret is in the response only', async () => {
    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const created = await api<{ robot: RobotInfo; username: string; secret: string }>(server.url, admin, 'POST', '/admin/v1/robots', {
      name: 'deployer',
      description: 'deploys team-a',
      rules: [{ repositories: 'team-a/**', actions: ['pull'] }],
      expiresAt,
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.username, 'robot$deployer');
    assert.ok(created.body.secret.length >= 32);
    assert.equal(created.body.robot.createdBy, 'admin');
    assert.equal(created.body.robot.expiresAt, Date.parse(expiresAt));
    const rules = await currentRules();
    assert.ok(rules.some((rule) => rule.subject === 'robot:deployer' && rule.repositories === 'team-a/**'));

    const listed = await api<{ robots: RobotInfo[] }>(server.url, admin, 'GET', '/admin/v1/robots');
    assert.equal(listed.status, 200);
    assert.ok(listed.body.robots.some((robot) => robot.name === 'deployer'));
    assert.ok(!listed.text.includes(created.body.secret), 'the secret must not be shown again');
    assert.ok(!/secret|hash/i.test(listed.text), listed.text);

    const token = await getToken(server.url, { username: 'robot$deployer', password: created.body.secret }, ['repository:team-a/app:pull,push']);
    assert.deepEqual(accessOf(token.token), [{ type: 'repository', name: 'team-a/app', actions: ['pull'] }]);

    const duplicate = await api(server.url, admin, 'POST', '/admin/v1/robots', { name: 'deployer' });
    assert.equal(duplicate.status, 409, duplicate.text);
  });

  it('refuses invalid robots with 400 and creates nothing', async () => {
    const rulesBefore = await currentRules();
    const bad: Record<string, Record<string, unknown>> = {
      'no name': { rules: [] },
      'upper-case name': { name: 'CI' },
      'name with a dollar': { name: 'robot$ci' },
      'name with a slash': { name: 'a/b' },
      'dot-dot name': { name: '..' },
      'expiry in the past': { name: 'late', expiresAt: new Date(Date.now() - 1000).toISOString() },
      'expiry not a date': { name: 'someday', expiresAt: 'soon' },
      'unknown action': { name: 'greedy', rules: [{ repositories: '**', actions: ['pull', 'own'] }] },
      'bad pattern': { name: 'sloppy', rules: [{ repositories: 'Team-A/**', actions: ['pull'] }] },
      'no actions': { name: 'idle', rules: [{ repositories: 'team-a/**' }] },
    };
    for (const [what, body] of Object.entries(bad)) {
      const response = await api(server.url, admin, 'POST', '/admin/v1/robots', body);
      assert.equal(response.status, 400, `${what}: ${response.status} ${response.text}`);
      assert.equal((response.body as { status?: number }).status, 400, `${what}: ${response.text}`);
    }
    const robots = await api<{ robots: RobotInfo[] }>(server.url, admin, 'GET', '/admin/v1/robots');
    assert.deepEqual(robots.body.robots.map((robot) => robot.name), ['deployer']);
    assert.deepEqual(await currentRules(), rulesBefore);
    const missing = await api(server.url, admin, 'DELETE', '/admin/v1/robots/nobody');
    assert.equal(missing.status, 404, missing.text);
  });
});

describe('access explanations and audit', () => {
  interface Explanation {
    subject: string;
    repository: string;
    admin: boolean;
    allowed: string[];
    rules: ShownRule[];
  }

  it('GET /admin/v1/access explains what a user, a robot, anonymous or an admin may do, and why', async () => {
    const aliceTeamA = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=alice&repository=team-a/app');
    assert.equal(aliceTeamA.status, 200, aliceTeamA.text);
    assert.equal(aliceTeamA.body.admin, false);
    assert.deepEqual(aliceTeamA.body.allowed, ['pull', 'push']);
    assert.deepEqual(strip(aliceTeamA.body.rules), [RULES[0]]);

    const aliceOwn = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=alice&repository=alice/tools');
    assert.deepEqual(aliceOwn.body.allowed, ['delete', 'pull', 'push']);
    assert.deepEqual(strip(aliceOwn.body.rules), [RULES[2]]);

    const alicePublic = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=alice&repository=public/base');
    assert.deepEqual(alicePublic.body.allowed, ['pull']);

    const aliceOther = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=alice&repository=team-b/app');
    assert.deepEqual(aliceOther.body.allowed, []);
    assert.deepEqual(aliceOther.body.rules, []);

    const anonymous = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=anonymous&repository=public/base');
    assert.deepEqual(anonymous.body.allowed, ['pull']);
    const robot = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=robot$deployer&repository=team-a/app');
    assert.equal(robot.status, 200, robot.text);
    assert.deepEqual(robot.body.allowed, ['pull']);
    const root = await api<Explanation>(server.url, admin, 'GET', '/admin/v1/access?subject=admin&repository=team-b/app');
    assert.equal(root.body.admin, true);
    assert.deepEqual(root.body.allowed, ['admin', 'delete', 'pull', 'push']);

    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/access?subject=nobody&repository=team-a/app')).status, 404);
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/access?subject=alice&repository=Not/Valid')).status, 400);
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/access?subject=alice')).status, 400);
  });

  it('records rule and robot changes with the acting administrator', async () => {
    const changes = await api<{ events: { type: string; actor?: string; clientIp?: string }[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=rules.changed');
    assert.equal(changes.status, 200, changes.text);
    assert.ok(changes.body.events.length >= 2, changes.text);
    assert.ok(changes.body.events.every((event) => event.type === 'rules.changed' && event.actor === 'admin' && event.clientIp === '127.0.0.1'), changes.text);
    const robots = await api<{ events: { type: string; actor?: string }[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=robot.created');
    assert.equal(robots.body.events.length, 1, robots.text);
    const limited = await api<{ events: unknown[] }>(server.url, admin, 'GET', '/admin/v1/audit?limit=1');
    assert.equal(limited.body.events.length, 1);
  });
});

describe('replacing a whole set only at the version it was read (If-Match)', () => {
  /** PUT with an If-Match header (the api helper sends none). */
  const putIfMatch = async (path: string, body: unknown, etag: string) => {
    const response = await fetch(`${server.url}${path}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json', 'If-Match': etag },
      body: JSON.stringify(body),
    });
    return { status: response.status, etag: response.headers.get('etag'), body: (await response.json()) as { basedOn?: string; detail?: string } };
  };

  for (const [what, path, change] of [
    ['rules', '/admin/v1/rules', (n: number) => ({ rules: [{ subject: `user:if-match-${n}`, repositories: 'team-a/**', actions: ['pull'] }] })],
    ['trust policies', '/admin/v1/trust', (n: number) => ({ policies: [{ repositories: `if-match-${n}/**`, immutableTags: ['v*'] }] })],
  ] as const) {
    it(`${what}: a preview's version applies; once another change lands, it is refused with 412 and nothing is written`, async () => {
      const read = await api(server.url, admin, 'GET', path);
      const etag = read.headers.get('etag') ?? '';
      assert.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
      const preview = await putIfMatch(`${path}?dryRun=true`, change(1), etag);
      assert.equal(preview.status, 200);
      assert.equal(`"${preview.body.basedOn}"`, etag, 'the dry run says which version it compared against');
      // Someone else applies first.
      assert.equal((await api(server.url, admin, 'PUT', path, change(2))).status, 200);
      const stale = await putIfMatch(path, change(1), etag);
      assert.equal(stale.status, 412);
      assert.match(stale.body.detail ?? '', /changed since they were read/);
      const now = (await api(server.url, admin, 'GET', path)).headers.get('etag');
      assert.equal(stale.etag, now, 'the refusal names the version in force');
      assert.match((await api(server.url, admin, 'GET', path)).text, /if-match-2/, 'the other change stands');
      assert.equal((await putIfMatch(path, change(1), now ?? '')).status, 200, 'applied at the current version');
      assert.match((await api(server.url, admin, 'GET', path)).text, /if-match-1/);
      assert.equal((await putIfMatch(path, change(1), 'W/"weak"')).status, 412, 'a weak tag never matches');
      assert.equal((await putIfMatch(path, change(3), '*')).status, 200, '* applies to whatever is there');
    });
  }
});
