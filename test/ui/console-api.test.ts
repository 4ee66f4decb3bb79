// The web console's server side over HTTP, without a browser: the pages and their headers, the
// session cookie, CSRF and cross-site refusals, the bearer tokens a session gets (only what the
// access rules grant), sign-out and expiry; and the read-only endpoints the console reads
// (per-repository tag details and trust explanations for anyone who may pull, the audit chain
// verdict, rules and robots for auditors).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { addUser, adminToken, api, sleep, tokenFor } from '../auth/support.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient } from '../support/registry-client.js';

const dev = { username: 'dev', password: 'dev-password-1234' };
const auditor = { username: 'auditor', password: 'auditor-password-1234' };
const SESSION_SECONDS = 3;

let server: RunningRegistry;
let admin: string;

interface SignedIn {
  cookie: string;
  csrfToken: string;
  body: Record<string, unknown>;
  setCookie: string;
}

async function signIn(credentials: { username: string; password: string }): Promise<SignedIn> {
  const response = await fetch(`${server.url}/ui/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(credentials) });
  const text = await response.text();
  assert.equal(response.status, 201, text);
  const setCookie = response.headers.get('set-cookie') ?? '';
  const cookie = setCookie.split(';')[0] ?? '';
  const body = JSON.parse(text) as Record<string, unknown>;
  return { cookie, csrfToken: String(body.csrfToken), body, setCookie };
}

function sessionCall(session: SignedIn | undefined, method: string, path: string, options: { body?: string; type?: string; headers?: Record<string, string>; csrf?: boolean } = {}) {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (session) headers.Cookie = session.cookie;
  if (session && options.csrf !== false) headers['X-CSRF-Token'] = session.csrfToken;
  if (options.body !== undefined) headers['Content-Type'] = options.type ?? 'application/json';
  return fetch(`${server.url}${path}`, { method, headers, ...(options.body !== undefined ? { body: options.body } : {}) });
}

async function consoleToken(session: SignedIn, scope: string[]): Promise<{ token: string; access: { type: string; name: string; actions: string[] }[] }> {
  const response = await sessionCall(session, 'POST', '/ui/api/token', { body: JSON.stringify({ scope }) });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text) as { token: string; access: { type: string; name: string; actions: string[] }[] };
}

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0', PORTCULLIS_CONSOLE_SESSION_SECONDS: String(SESSION_SECONDS) } });
  admin = await adminToken(server);
  await addUser(server.dataDir, dev.username, dev.password);
  await addUser(server.dataDir, auditor.username, auditor.password);
  const rules = await api(server.url, admin, 'PUT', '/admin/v1/rules', {
    rules: [
      { subject: 'user:dev', repositories: 'team/**', actions: ['pull', 'push'] },
      { subject: 'user:auditor', repositories: '**', actions: ['audit'] },
    ],
  });
  assert.equal(rules.status, 200, rules.text);
  const trust = await api(server.url, admin, 'PUT', '/admin/v1/trust', { policies: [{ repositories: 'team/**', immutableTags: ['v*'], signatures: { mode: 'off', signers: [] } }] });
  assert.equal(trust.status, 200, trust.text);
  const registry = adminClient(server);
  await registry.pushImage('team/app', 'v1');
  await registry.pushImage('secret/app', 'v1');
});
after(() => server?.stop());

describe('console pages', () => {
  it('serves the app under /ui/ with a strict Content-Security-Policy and no framing or sniffing', async () => {
    for (const path of ['/ui/', '/ui/repository?name=team/app', '/ui/audit']) {
      const response = await fetch(`${server.url}${path}`);
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
      const csp = response.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/, 'no inline script, no eval');
      assert.match(csp, /frame-ancestors 'none'/);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      const html = await response.text();
      assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/, 'every script is a file');
      assert.doesNotMatch(html, /https?:\/\//, 'nothing from another origin');
    }
    const html = await (await fetch(`${server.url}/ui/`)).text();
    const script = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(script);
    const asset = await fetch(`${server.url}${script}`);
    assert.equal(asset.status, 200);
    assert.match(asset.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.match(asset.headers.get('cache-control') ?? '', /immutable/);
    assert.equal((await fetch(`${server.url}/ui/assets/nothing.js`)).status, 404);
    assert.equal((await fetch(`${server.url}/ui/assets/..%2f..%2fpackage.json`)).status, 404);
    const root = await fetch(`${server.url}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/ui/');
  });
});

describe('console sessions', () => {
  it('signs a person in with an HttpOnly, SameSite=Strict cookie scoped to /ui/api', async () => {
    const session = await signIn(dev);
    assert.match(session.setCookie, /^portcullis_console=[0-9a-f]{24}\.[A-Za-z0-9_-]+;/);
    assert.match(session.setCookie, /; HttpOnly/);
    assert.match(session.setCookie, /; SameSite=Strict/);
    assert.match(session.setCookie, /; Path=\/ui\/api/);
    assert.match(session.setCookie, new RegExp(`; Max-Age=${SESSION_SECONDS}`));
    assert.doesNotMatch(session.setCookie, /Secure/, 'plain HTTP here: a Secure cookie would never come back');
    assert.equal(session.body.user, 'dev');
    assert.equal(session.body.admin, false);
    assert.equal(session.body.auditor, false);
    const who = await sessionCall(session, 'GET', '/ui/api/session', { csrf: false });
    assert.equal(who.status, 200);
    assert.equal(((await who.json()) as { user: string }).user, 'dev');
  });

  it('refuses wrong passwords and robot accounts', async () => {
    const wrong = await fetch(`${server.url}/ui/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username: 'dev', password: 'nope' }) });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get('set-cookie'), null);
    const created = await api<{ username: string; secret: string }>(server.url, admin, 'POST', '/admin/v1/robots', { name: 'ci', rules: [] });
    assert.equal(created.status, 201, created.text);
    const robot = await fetch(`${server.url}/ui/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username: created.body.username, password: created.body.secret }) });
    assert.equal(robot.status, 403);
    assert.equal(robot.headers.get('set-cookie'), null);
  });

  it('gives bearer tokens for only what the access rules grant', async () => {
    const session = await signIn(dev);
    const { token, access } = await consoleToken(session, ['repository:team/app:pull', 'repository:secret/app:pull', 'registry:admin:*']);
    assert.deepEqual(access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    const tags = await api<{ tags: { tag: string }[] }>(server.url, token, 'GET', '/extensions/v2/team/app/tags');
    assert.equal(tags.status, 200, tags.text);
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/secret/app/tags')).status, 401);
    assert.equal((await api(server.url, token, 'GET', '/admin/v1/rules')).status, 403);
  });

  it('refuses calls made with the cookie alone, from another site, or as a form would send them', async () => {
    const session = await signIn(dev);
    const body = JSON.stringify({ scope: ['repository:team/app:pull'] });
    const refusals: [string, Response][] = [
      ['no X-CSRF-Token', await sessionCall(session, 'POST', '/ui/api/token', { body, csrf: false })],
      ['a wrong X-CSRF-Token', await sessionCall(session, 'POST', '/ui/api/token', { body, csrf: false, headers: { 'X-CSRF-Token': 'A'.repeat(43) } })],
      ['Sec-Fetch-Site: cross-site', await sessionCall(session, 'POST', '/ui/api/token', { body, headers: { 'Sec-Fetch-Site': 'cross-site' } })],
      ['Sec-Fetch-Site: same-site', await sessionCall(session, 'POST', '/ui/api/token', { body, headers: { 'Sec-Fetch-Site': 'same-site' } })],
      ['another Origin', await sessionCall(session, 'POST', '/ui/api/token', { body, headers: { Origin: 'http://evil.example' } })],
      ['sign-out without X-CSRF-Token', await sessionCall(session, 'DELETE', '/ui/api/session', { csrf: false })],
      ['a login from another site', await sessionCall(undefined, 'POST', '/ui/api/session', { body: JSON.stringify(dev), headers: { 'Sec-Fetch-Site': 'cross-site' } })],
    ];
    for (const [what, response] of refusals) assert.equal(response.status, 403, what);
    const form = await sessionCall(session, 'POST', '/ui/api/token', { body, type: 'text/plain' });
    assert.equal(form.status, 415, 'a body a form can send is not read');
    const login = await sessionCall(undefined, 'POST', '/ui/api/session', { body: JSON.stringify(dev), type: 'application/x-www-form-urlencoded' });
    assert.equal(login.status, 415);
    // None of that ended the session.
    assert.equal((await sessionCall(session, 'GET', '/ui/api/session', { csrf: false })).status, 200);
  });

  it('takes one scope per entry, at most 50', async () => {
    const session = await signIn(dev);
    const many = Array.from({ length: 51 }, (_, index) => `repository:team/app${index}:pull`);
    for (const scope of [many, ['repository:team/app:pull repository:team/other:pull'], 'repository:team/app:pull', [42]]) {
      const response = await sessionCall(session, 'POST', '/ui/api/token', { body: JSON.stringify({ scope }) });
      assert.equal(response.status, 400, JSON.stringify(scope).slice(0, 80));
    }
  });

  it('finds its own session among cookies another site planted, and replaces it on a new sign-in', async () => {
    const first = await signIn(dev);
    const planted = `portcullis_console=${'0'.repeat(24)}.${'A'.repeat(43)}`;
    const withPlanted = { ...first, cookie: `${planted}; ${first.cookie}` };
    const who = await sessionCall(withPlanted, 'GET', '/ui/api/session', { csrf: false });
    assert.equal(who.status, 200, 'the planted cookie (sent first) does not lock the person out');
    // Signing in again from the same browser ends the session it had.
    const again = await fetch(`${server.url}/ui/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json', Cookie: first.cookie }, body: JSON.stringify(dev) });
    assert.equal(again.status, 201);
    assert.equal((await sessionCall(first, 'GET', '/ui/api/session', { csrf: false })).status, 401);
    const sessions = await api<{ refreshTokens: { name: string; purpose: string; revokedAt?: number }[] }>(server.url, admin, 'GET', '/admin/v1/refresh-tokens?user=dev');
    assert.ok(sessions.body.refreshTokens.length > 0);
    assert.ok(sessions.body.refreshTokens.every((token) => token.purpose === 'console'), 'administrators see console sign-ins for what they are');
  });

  it('ends a session on sign-out, for good', async () => {
    const session = await signIn(dev);
    const out = await sessionCall(session, 'DELETE', '/ui/api/session');
    assert.equal(out.status, 204);
    assert.match(out.headers.get('set-cookie') ?? '', /^portcullis_console=; .*Max-Age=0/);
    assert.equal((await sessionCall(session, 'GET', '/ui/api/session', { csrf: false })).status, 401);
    assert.equal((await sessionCall(session, 'POST', '/ui/api/token', { body: JSON.stringify({ scope: [] }) })).status, 401);
  });

  it('ends a session when its time is up', async () => {
    const session = await signIn(dev);
    await consoleToken(session, []);
    await sleep(SESSION_SECONDS * 1000 + 300);
    assert.equal((await sessionCall(session, 'GET', '/ui/api/session', { csrf: false })).status, 401);
    assert.equal((await sessionCall(session, 'POST', '/ui/api/token', { body: JSON.stringify({ scope: [] }) })).status, 401);
  });

  it('marks the cookie Secure when told that a proxy in front terminates TLS', async () => {
    const behindProxy = await startPortcullis({ env: { PORTCULLIS_CONSOLE_SECURE_COOKIE: 'true' } });
    try {
      const response = await fetch(`${behindProxy.url}/ui/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(behindProxy.admin) });
      assert.equal(response.status, 201);
      assert.match(response.headers.get('set-cookie') ?? '', /; HttpOnly; SameSite=Strict; Secure$/);
    } finally {
      await behindProxy.stop();
    }
  });

  it('is not served at all when console.enabled is false', async () => {
    const off = await startPortcullis({ env: { PORTCULLIS_CONSOLE_ENABLED: 'false' } });
    try {
      assert.equal((await fetch(`${off.url}/ui/`)).status, 404);
      assert.equal((await fetch(`${off.url}/ui/api/session`)).status, 404);
    } finally {
      await off.stop();
    }
  });
});

describe('what the console reads', () => {
  it('lists a repository\'s tags with who pushed them, size, immutability and signature status, to those who may pull', async () => {
    const token = await tokenFor(server.url, dev, ['repository:team/app:pull,push']);
    const registry = adminClient(server);
    const pushed = await registry.pushImage('team/app', 'latest');
    const devClient = adminClient({ url: server.url, admin: dev });
    await devClient.pushImage('team/app', 'dev-build');
    const tags = await api<{ name: string; tags: Record<string, unknown>[] }>(server.url, token, 'GET', '/extensions/v2/team/app/tags');
    assert.equal(tags.status, 200, tags.text);
    const byTag = new Map(tags.body.tags.map((tag) => [tag.tag, tag]));
    const latest = byTag.get('latest');
    assert.ok(latest);
    assert.equal(latest.digest, pushed.descriptor.digest);
    assert.equal(latest.taggedBy, 'admin');
    assert.equal(latest.immutable, false);
    assert.equal(latest.status, 'none');
    assert.equal(latest.verdict, 'served');
    assert.equal(typeof latest.totalSize, 'number');
    assert.equal(byTag.get('v1')?.immutable, true, 'v* is immutable under the policy');
    assert.equal(byTag.get('dev-build')?.taggedBy, 'dev');
    const paged = await api<{ tags: { tag: string }[]; next?: string }>(server.url, token, 'GET', '/extensions/v2/team/app/tags?n=1');
    assert.equal(paged.body.tags.length, 1);
    assert.ok(paged.body.next);
    assert.match(paged.headers.get('link') ?? '', /rel="next"/);
    const rest = await api<{ tags: { tag: string }[] }>(server.url, token, 'GET', `/extensions/v2/team/app/tags?n=50&last=${encodeURIComponent(paged.body.next ?? '')}`);
    assert.deepEqual([...paged.body.tags, ...rest.body.tags].map((tag) => tag.tag), [...byTag.keys()]);
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/team/app/tags?n=0')).status, 400);
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/team/app/tags?last=garbage!')).status, 400);
    const explained = await api<{ verdict: string; signatures: unknown[]; policy: { tagImmutable?: boolean } }>(server.url, token, 'GET', '/extensions/v2/team/app/trust/v1');
    assert.equal(explained.status, 200, explained.text);
    assert.equal(explained.body.verdict, 'served');
    assert.equal(explained.body.policy.tagImmutable, true);
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/team/app/trust/nosuchtag')).status, 404);
    const mayPull = await tokenFor(server.url, dev, ['repository:team/nothing-here:pull']);
    const unknown = await api(server.url, mayPull, 'GET', '/extensions/v2/team/nothing-here/tags');
    assert.equal(unknown.status, 404, 'as tags/list: an unknown repository is NAME_UNKNOWN');
    assert.match(unknown.text, /NAME_UNKNOWN/);
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/Team/App/tags')).status, 400, 'a name outside the grammar');
    assert.equal((await api(server.url, token, 'GET', '/extensions/v2/secret/app/trust/v1')).status, 401);
    assert.equal((await api(server.url, undefined, 'GET', '/extensions/v2/team/app/tags')).status, 401);
  });

  it('tells auditors the audit chain\'s verdict, the rules and the robots, and lets them change nothing', async () => {
    const token = await tokenFor(server.url, auditor, ['registry:audit:*']);
    const chain = await api<{ intact: boolean; count: number; head: { seq: number } }>(server.url, token, 'GET', '/admin/v1/audit/chain');
    assert.equal(chain.status, 200, chain.text);
    assert.equal(chain.body.intact, true);
    assert.ok(chain.body.count > 0);
    assert.equal(chain.body.head.seq, chain.body.count);
    const again = await api<{ checkedAt: string }>(server.url, token, 'GET', '/admin/v1/audit/chain');
    assert.equal(again.body.checkedAt, (chain.body as unknown as { checkedAt: string }).checkedAt, 'requests close together share one walk of the chain');
    assert.equal(again.headers.get('cache-control'), 'no-store');
    assert.equal((await api(server.url, token, 'GET', '/admin/v1/rules')).status, 200);
    assert.equal((await api(server.url, token, 'GET', '/admin/v1/robots')).status, 200);
    assert.equal((await api(server.url, token, 'GET', '/admin/v1/access?subject=dev&repository=team/app')).status, 200);
    assert.equal((await api(server.url, token, 'PUT', '/admin/v1/rules?dryRun=true', { rules: [] })).status, 403);
    assert.equal((await api(server.url, token, 'POST', '/admin/v1/robots', { name: 'sneaky' })).status, 403);
    const devToken = await tokenFor(server.url, dev, ['registry:audit:*']);
    assert.equal((await api(server.url, devToken, 'GET', '/admin/v1/audit/chain')).status, 403);
  });
});
