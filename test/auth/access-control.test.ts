// Access rules and robot accounts set through the admin API, and what they do to the
// distribution API: who may push and pull where, what the catalog shows, mounts that must not
// leak blobs, robots that expire or are revoked, refresh tokens of removed users, and an audit
// trail and log that never carry a secret.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { adminClient, sha256, TestRegistry, type Descriptor } from '../support/registry-client.js';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';
import {
  accessOf,
  addUser,
  adminToken,
  api,
  basic,
  decodeJwt,
  errorCode,
  getToken,
  parseChallenge,
  postToken,
  requestFrom,
  sleep,
  tokenFor,
  type TokenResponse,
} from './support.js';

const run = promisify(execFile);

let server: RunningRegistry;
let admin: string;
const alice = { username: 'alice', password: 'alice-password-1234' };
const bob = { username: 'bob', password: 'bob-password-56789' };
/** Every secret this file sees: none may show up in the audit trail or the server log. */
const secrets: string[] = [alice.password, bob.password, 'test-admin-password'];
/** Failed logins come from their own loopback address (per-address throttling). */
const FAILURES_FROM = '127.0.0.5';
const MORE_FAILURES_FROM = '127.0.0.6';
/** Hidden repositories pushed before public/base, more than the filtered catalog scans per request. */
const HIDDEN = 25;

const RULES = [
  { subject: 'user:alice', repositories: 'team-a/**', actions: ['pull', 'push'] },
  { subject: 'anonymous', repositories: 'public/**', actions: ['pull'] },
  { subject: 'authenticated', repositories: '${user}/**', actions: ['pull', 'push', 'delete'] },
];

let teamBLayer: Descriptor;
let teamBConfig: Descriptor;
let publicLayer: Descriptor;

before(async () => {
  // A small page size, so the filtered catalog's bounded scan (10 × pageMaxEntries rows) matters.
  server = await startPortcullis({ env: { PORTCULLIS_LIMITS_PAGE_MAX_ENTRIES: '2' } });
  await addUser(server.dataDir, alice.username, alice.password);
  await addUser(server.dataDir, bob.username, bob.password);
  admin = await adminToken(server);
  const applied = await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: RULES });
  assert.equal(applied.status, 200, applied.text);

  const root = adminClient(server);
  const teamB = await root.pushImage('team-b/app', 'v1', { layers: 1 });
  teamBLayer = teamB.layers[0] as Descriptor;
  teamBConfig = teamB.config;
  publicLayer = (await root.pushImage('public/base', 'latest', { layers: 1 })).layers[0] as Descriptor;
  for (let i = 0; i < HIDDEN; i++) await root.pushBlob(`hidden/r${String(i).padStart(2, '0')}`, randomBytes(8));
});
after(() => server.stop());

async function call(token: string | undefined, method: string, path: string, init: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  return fetch(`${server.url}${path}`, { method, headers, ...(init.body !== undefined ? { body: init.body } : {}) });
}

async function expectInsufficient(response: Response): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, 401, text);
  assert.equal(parseChallenge(response.headers.get('WWW-Authenticate'))?.error, 'insufficient_scope');
}

/** A failed login from FAILURES_FROM; asserts the 401. */
async function failedLogin(username: string, password: string, from = FAILURES_FROM): Promise<void> {
  secrets.push(password);
  const response = await requestFrom(from, `${server.url}/auth/token?service=portcullis&scope=repository:team-a/app:pull`, {
    headers: { Authorization: basic({ username, password }) },
  });
  assert.equal(response.status, 401, `${username}: ${response.body}`);
  assert.equal(errorCode(response.body), 'UNAUTHORIZED');
}

/** The whole catalog as a caller sees it, following Link headers; also returns every Link seen. */
async function catalog(token: string): Promise<{ repositories: string[]; links: string[] }> {
  const repositories: string[] = [];
  const links: string[] = [];
  let path: string | undefined = '/v2/_catalog';
  for (let pages = 0; path !== undefined; pages++) {
    assert.ok(pages < 100, 'the catalog does not end');
    const response = await call(token, 'GET', path);
    const text = await response.text();
    assert.equal(response.status, 200, text);
    repositories.push(...(JSON.parse(text) as { repositories: string[] }).repositories);
    const link = response.headers.get('Link');
    if (link) links.push(link);
    path = link ? /^<([^>]+)>/.exec(link)?.[1] : undefined;
  }
  return { repositories, links };
}

describe('rules over the distribution API', () => {
  it('alice pushes and pulls team-a/app', async () => {
    const registry = new TestRegistry(server.url, alice);
    const { descriptor } = await registry.pushImage('team-a/app', 'v1', { layers: 1 });
    const pulled = await registry.fetch('/v2/team-a/app/manifests/v1', { headers: { Accept: descriptor.mediaType } });
    assert.equal(pulled.status, 200, await pulled.text());
    assert.equal(pulled.headers.get('Docker-Content-Digest'), descriptor.digest);
    // She asked for delete too: she gets what the rules allow, not a refusal.
    const token = await getToken(server.url, alice, ['repository:team-a/app:pull,push,delete']);
    assert.deepEqual(accessOf(token.token), [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }]);
    await expectInsufficient(await call(token.token, 'DELETE', `/v2/team-a/app/manifests/${descriptor.digest}`));
  });

  it('alice cannot push or pull team-b/app: the token comes back without the actions, the registry says insufficient_scope', async () => {
    // Docker asks pull,push even to pull: the token endpoint answers with the granted subset, never a 401.
    const token = await tokenFor(server.url, alice, ['repository:team-b/app:pull,push']);
    assert.deepEqual(accessOf(token), []);
    await expectInsufficient(await call(token, 'POST', '/v2/team-b/app/blobs/uploads/'));
    await expectInsufficient(
      await call(token, 'PUT', '/v2/team-b/app/manifests/evil', { headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: '{}' }),
    );
    await expectInsufficient(await call(token, 'GET', '/v2/team-b/app/manifests/v1'));
    await expectInsufficient(await call(token, 'GET', `/v2/team-b/app/blobs/${teamBLayer.digest}`));
    await expectInsufficient(await call(token, 'GET', '/v2/team-b/app/tags/list'));
  });

  it('${user} gives every signed-in user their own namespace, and nobody else\'s', async () => {
    const aliceRegistry = new TestRegistry(server.url, alice);
    const { descriptor } = await aliceRegistry.pushImage('alice/x', 'v1', { layers: 1 });
    const removed = await aliceRegistry.fetch(`/v2/alice/x/manifests/${descriptor.digest}`, { method: 'DELETE' });
    assert.equal(removed.status, 202, await removed.text());
    await aliceRegistry.pushImage('alice/x', 'v2', { layers: 1 });

    assert.deepEqual(accessOf(await tokenFor(server.url, alice, ['repository:bob/x:pull,push,delete'])), []);
    await new TestRegistry(server.url, bob).pushImage('bob/x', 'v1', { layers: 1 });
    assert.deepEqual(accessOf(await tokenFor(server.url, bob, ['repository:alice/x:pull'])), []);
    // Only the namespace itself and below, not names that merely start with it.
    assert.deepEqual(accessOf(await tokenFor(server.url, alice, ['repository:alicex/y:pull', 'repository:alice:push'])), [
      { type: 'repository', name: 'alice', actions: ['push'] },
    ]);
  });

  it('anonymous may pull public/** but not push, and nothing else', async () => {
    const anonymous = new TestRegistry(server.url);
    const manifest = await anonymous.fetch('/v2/public/base/manifests/latest', { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(manifest.status, 200, await manifest.text());
    assert.equal((await anonymous.fetch(`/v2/public/base/blobs/${publicLayer.digest}`)).status, 200);

    const token = await getToken(server.url, undefined, ['repository:public/base:pull,push,delete']);
    assert.deepEqual(accessOf(token.token), [{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
    assert.equal(decodeJwt(token.token).payload.sub, '');
    await expectInsufficient(await call(token.token, 'POST', '/v2/public/base/blobs/uploads/'));
    await expectInsufficient(await call(token.token, 'DELETE', '/v2/public/base/manifests/latest'));

    const teamA = await tokenFor(server.url, undefined, ['repository:team-a/app:pull']);
    assert.deepEqual(accessOf(teamA), []);
    await expectInsufficient(await call(teamA, 'GET', '/v2/team-a/app/manifests/v1'));
    // What anonymous may do, signed-in users may do too.
    assert.deepEqual(accessOf(await tokenFor(server.url, alice, ['repository:public/base:pull'])), [
      { type: 'repository', name: 'public/base', actions: ['pull'] },
    ]);
  });

  it('a mount from a repository alice cannot pull falls back to an upload session: no blob leaks', async () => {
    const token = await tokenFor(server.url, alice, ['repository:team-a/app:pull,push', 'repository:team-b/app:pull']);
    assert.deepEqual(accessOf(token), [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }]);
    const mount = await call(token, 'POST', `/v2/team-a/app/blobs/uploads/?mount=${teamBLayer.digest}&from=team-b/app`);
    assert.equal(mount.status, 202, await mount.text());
    assert.match(mount.headers.get('Location') ?? '', /\/v2\/team-a\/app\/blobs\/uploads\//);
    assert.equal((await call(token, 'HEAD', `/v2/team-a/app/blobs/${teamBLayer.digest}`)).status, 404);
    assert.equal((await call(token, 'GET', `/v2/team-a/app/blobs/${teamBLayer.digest}`)).status, 404);
    // A monolithic "upload" naming the digest without the bytes proves nothing either.
    const claimed = await call(token, 'POST', `/v2/team-a/app/blobs/uploads/?digest=${teamBLayer.digest}`, {
      headers: { 'Content-Type': 'application/octet-stream' },
      body: Buffer.alloc(0),
    });
    assert.notEqual(claimed.status, 201, await claimed.text());
    assert.equal((await call(token, 'HEAD', `/v2/team-a/app/blobs/${teamBLayer.digest}`)).status, 404);

    // The control: from a repository she may pull, the mount happens.
    const allowed = await tokenFor(server.url, alice, ['repository:team-a/app:pull,push', 'repository:public/base:pull']);
    const mounted = await call(allowed, 'POST', `/v2/team-a/app/blobs/uploads/?mount=${publicLayer.digest}&from=public/base`);
    assert.equal(mounted.status, 201, await mounted.text());
    assert.equal(mounted.headers.get('Docker-Content-Digest'), publicLayer.digest);
  });

  it('a manifest cannot adopt blobs of a repository its author cannot pull', async () => {
    const token = await tokenFor(server.url, alice, ['repository:alice/stolen:pull,push']);
    const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: teamBConfig, layers: [teamBLayer] };
    const put = await call(token, 'PUT', '/v2/alice/stolen/manifests/v1', {
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      body: JSON.stringify(manifest),
    });
    const text = await put.text();
    assert.equal(put.status, 400, text);
    assert.equal(errorCode(text), 'MANIFEST_BLOB_UNKNOWN');
    assert.equal((await call(token, 'GET', `/v2/alice/stolen/blobs/${teamBLayer.digest}`)).status, 404);
  });

  it('an upload session belongs to its repository: push rights elsewhere do not reach it', async () => {
    const aliceToken = await tokenFor(server.url, alice, ['repository:team-a/app:pull,push']);
    const started = await call(aliceToken, 'POST', '/v2/team-a/app/blobs/uploads/');
    assert.equal(started.status, 202, await started.text());
    const uuid = /\/blobs\/uploads\/([^/?]+)/.exec(started.headers.get('Location') ?? '')?.[1] ?? '';
    assert.ok(uuid.length > 0);

    const bobToken = await tokenFor(server.url, bob, ['repository:bob/x:pull,push']);
    const chunk = Buffer.from('bob was here');
    const attempts: [string, string, { headers?: Record<string, string>; body?: Buffer }][] = [
      ['GET', `/v2/bob/x/blobs/uploads/${uuid}`, {}],
      ['PATCH', `/v2/bob/x/blobs/uploads/${uuid}`, { headers: { 'Content-Type': 'application/octet-stream' }, body: chunk }],
      ['PUT', `/v2/bob/x/blobs/uploads/${uuid}?digest=${sha256(chunk)}`, { headers: { 'Content-Type': 'application/octet-stream' }, body: chunk }],
      ['DELETE', `/v2/bob/x/blobs/uploads/${uuid}`, {}],
    ];
    for (const [method, path, init] of attempts) {
      const response = await call(bobToken, method, path, init);
      const text = await response.text();
      assert.equal(response.status, 404, `${method} ${path}: ${text}`);
      assert.equal(errorCode(text), 'BLOB_UPLOAD_UNKNOWN');
    }
    // Nor with his token on alice's path.
    await expectInsufficient(await call(bobToken, 'PATCH', `/v2/team-a/app/blobs/uploads/${uuid}`, { body: chunk }));
    const status = await call(aliceToken, 'GET', `/v2/team-a/app/blobs/uploads/${uuid}`);
    assert.equal(status.status, 204, await status.text());
    assert.equal(status.headers.get('Range'), '0-0', 'nothing was written to her session');
    assert.equal((await call(bobToken, 'GET', `/v2/bob/x/blobs/${sha256(chunk)}`)).status, 404);
  });

  const hidden = Array.from({ length: HIDDEN }, (_, i) => `hidden/r${String(i).padStart(2, '0')}`);
  const visibleTo: [string, typeof alice | undefined, string[]][] = [
    ['alice', alice, ['alice/x', 'public/base', 'team-a/app']],
    ['bob', bob, ['bob/x', 'public/base']],
    ['anonymous', undefined, ['public/base']],
  ];

  it('the catalog never shows a repository the caller may not pull, neither in the list nor in a Link', async () => {
    const everything = (await catalog(await tokenFor(server.url, server.admin, ['registry:catalog:*']))).repositories;
    assert.deepEqual(everything, ['alice/x', 'bob/x', ...hidden, 'public/base', 'team-a/app', 'team-b/app']);
    for (const [who, credentials, visible] of visibleTo) {
      const seen = await catalog(await tokenFor(server.url, credentials, ['registry:catalog:*']));
      assert.deepEqual(seen.repositories.filter((name) => !visible.includes(name)), [], `${who} sees repositories they may not pull`);
      const leaked = seen.links.filter((link) => everything.some((name) => !visible.includes(name) && link.includes(`last=${encodeURIComponent(name)}`)));
      assert.deepEqual(leaked, [], `${who}: a Link header names a repository they may not pull`);
    }
  });

  it('the catalog, followed through its Link headers, lists every repository the caller may pull', async () => {
    // The filtered scan stops after 10 × pageMaxEntries rows (here 20); more hidden rows than
    // that before the visible ones must not end the listing early without a Link.
    for (const [who, credentials, visible] of visibleTo) {
      const seen = await catalog(await tokenFor(server.url, credentials, ['registry:catalog:*']));
      assert.deepEqual(seen.repositories, visible, `${who}: the catalog, followed through its Link headers`);
    }
  });
});

describe('robot accounts', () => {
  let ciSecret: string;

  it('a robot created through the admin API logs in with its secret and pushes where its rules allow', async () => {
    const created = await api<{ username: string; secret: string }>(server.url, admin, 'POST', '/admin/v1/robots', {
      name: 'ci',
      rules: [{ repositories: 'team-a/**', actions: ['pull', 'push'] }],
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.username, 'robot$ci');
    ciSecret = created.body.secret;
    secrets.push(ciSecret);

    const robot = { username: 'robot$ci', password: ciSecret };
    const token = await getToken(server.url, robot, ['repository:team-a/ci-built:pull,push']);
    assert.equal(decodeJwt(token.token).payload.sub, 'robot$ci');
    assert.deepEqual(accessOf(token.token), [{ type: 'repository', name: 'team-a/ci-built', actions: ['pull', 'push'] }]);
    await new TestRegistry(server.url, robot).pushImage('team-a/ci-built', 'v1', { layers: 1 });
    assert.deepEqual(accessOf(await tokenFor(server.url, robot, ['repository:team-b/app:pull,push'])), []);

    await failedLogin('robot$ci', 'not-the-robot-secret');
    await failedLogin('robot$ci', ciSecret.slice(0, -1));
  });

  it('a robot gets only what rules for robot:<name> grant: ${user} is not the robot\'s name', async () => {
    // robots.ts: robots "get exactly what rules for `robot:<name>` grant". The `authenticated`
    // rule `${user}/**` must not hand robot ci the namespace ci/** (which would also be the
    // personal namespace of a user named ci).
    const token = await tokenFor(server.url, { username: 'robot$ci', password: ciSecret }, ['repository:ci/x:pull,push,delete']);
    assert.deepEqual(accessOf(token), []);
    const explained = await api<{ allowed: string[] }>(server.url, admin, 'GET', '/admin/v1/access?subject=robot$ci&repository=ci/x');
    assert.deepEqual(explained.body.allowed, []);
  });

  it('a revoked robot can neither log in nor refresh', async () => {
    const login = await postToken(server.url, {
      grant_type: 'password',
      username: 'robot$ci',
      password: ciSecret,
      client_id: 'ci',
      access_type: 'offline',
      scope: 'repository:team-a/app:pull',
    });
    assert.equal(login.status, 200);
    const refreshToken = ((await login.json()) as TokenResponse).refresh_token ?? '';
    secrets.push(refreshToken);
    const refreshed = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'ci', scope: 'repository:team-a/app:pull' });
    assert.equal(refreshed.status, 200, await refreshed.text());

    const revoked = await api(server.url, admin, 'DELETE', '/admin/v1/robots/ci');
    assert.equal(revoked.status, 204, revoked.text);
    await failedLogin('robot$ci', ciSecret, MORE_FAILURES_FROM);
    const refused = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'ci' });
    assert.equal(refused.status, 400, await refused.text()); // OAuth2 invalid_grant
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/access?subject=robot$ci&repository=team-a/app')).status, 404);
    assert.equal((await api(server.url, admin, 'DELETE', '/admin/v1/robots/ci')).status, 404);
    const listed = await api<{ robots: { name: string; revokedAt?: number }[] }>(server.url, admin, 'GET', '/admin/v1/robots');
    assert.equal(typeof listed.body.robots.find((robot) => robot.name === 'ci')?.revokedAt, 'number');
  });

  it('a robot stops working when its expiry passes', async () => {
    const expiresAt = Date.now() + 1_500;
    const created = await api<{ secret: string }>(server.url, admin, 'POST', '/admin/v1/robots', {
      name: 'short-lived',
      rules: [{ repositories: 'team-a/**', actions: ['pull'] }],
      expiresAt: new Date(expiresAt).toISOString(),
    });
    assert.equal(created.status, 201, created.text);
    secrets.push(created.body.secret);
    const robot = { username: 'robot$short-lived', password: created.body.secret };
    assert.deepEqual(accessOf(await tokenFor(server.url, robot, ['repository:team-a/app:pull'])), [
      { type: 'repository', name: 'team-a/app', actions: ['pull'] },
    ]);
    await sleep(expiresAt - Date.now() + 100);
    await failedLogin(robot.username, robot.password, MORE_FAILURES_FROM);
  });
});

describe('refresh tokens of removed users', () => {
  it('a refresh token dies with its user, and does not come back for a new user of the same name', async () => {
    const carol = { username: 'carol', password: 'carol-password-0001' };
    secrets.push(carol.password);
    await addUser(server.dataDir, carol.username, carol.password);
    const offline = await getToken(server.url, carol, [], { offline_token: 'true', client_id: 'docker' });
    const refreshToken = offline.refresh_token ?? '';
    secrets.push(refreshToken);
    assert.equal((await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'docker' })).status, 200);

    await run(process.execPath, [CLI, 'user', 'rm', 'carol'], { env: { ...process.env, PORTCULLIS_DATA_DIR: server.dataDir } });
    const gone = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'docker' });
    assert.equal(gone.status, 400, await gone.text()); // OAuth2 invalid_grant

    // Someone else gets the name later: the old refresh token must not open the new account.
    await addUser(server.dataDir, 'carol', 'a-different-carol-password');
    secrets.push('a-different-carol-password');
    const reused = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'docker', scope: 'repository:carol/x:pull,push' });
    const text = await reused.text();
    assert.equal(reused.status, 400, `the removed user's refresh token works for the new carol: ${text.slice(0, 120)}`);
  });
});

describe('audit and secrecy', () => {
  interface Event {
    type: string;
    actor?: string;
    clientIp?: string;
    details?: Record<string, unknown>;
  }

  it('the audit trail shows failed logins with actor and client address', async () => {
    await failedLogin('alice', 'alice-wrong-password');
    const failures = await api<{ events: Event[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=login.failure');
    assert.equal(failures.status, 200, failures.text);
    assert.ok(failures.body.events.every((event) => event.type === 'login.failure'));
    assert.ok(failures.body.events.some((event) => event.actor === 'alice' && event.clientIp === FAILURES_FROM), failures.text);
    assert.ok(failures.body.events.some((event) => event.actor === 'robot$ci' && event.clientIp === FAILURES_FROM), failures.text);
    assert.ok(failures.body.events.some((event) => event.actor === 'robot$short-lived'), failures.text);

    const successes = await api<{ events: Event[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=login.success');
    assert.ok(successes.body.events.some((event) => event.actor === 'alice' && event.clientIp === '127.0.0.1' && event.details?.provider === 'local'), successes.text);
    assert.ok(successes.body.events.some((event) => event.actor === 'robot$ci' && event.details?.provider === 'robot'), successes.text);

    const robots = await api<{ events: Event[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=robot.revoked');
    assert.ok(robots.body.events.some((event) => event.actor === 'admin' && event.details?.robot === 'ci'), robots.text);
  });

  it('no audit event and no log line carries a password, a secret or a token', async () => {
    const all = await api(server.url, admin, 'GET', '/admin/v1/audit?limit=1000');
    assert.equal(all.status, 200);
    const output = server.output();
    for (const secret of secrets.filter((value) => value.length >= 8)) {
      assert.ok(!all.text.includes(secret), `the audit trail contains a secret (${secret.slice(0, 4)}…)`);
      assert.ok(!output.includes(secret), `the server log contains a secret (${secret.slice(0, 4)}…)`);
    }
    const jwt = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\./;
    const refresh = /[0-9a-f]{24}\.[A-Za-z0-9_-]{40,}/;
    assert.doesNotMatch(all.text, jwt);
    assert.doesNotMatch(output, jwt);
    assert.doesNotMatch(all.text, refresh);
    assert.doesNotMatch(output, refresh);
    assert.doesNotMatch(output, /Basic [A-Za-z0-9+/=]{8,}/);
  });
});
