// Process-level behaviour: configuration errors, method handling, health, restarts, scale of
// tag listings, and the request log.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import knex from 'knex';
import { CLI, startPortcullis } from '../support/server.js';
import { adminClient, expectError, OCI_MANIFEST, randomName, sha256 } from '../support/registry-client.js';

const run = promisify(execFile);

async function cliFails(env: Record<string, string>, args: string[] = ['serve']): Promise<string> {
  try {
    await run(process.execPath, [CLI, ...args], { env: { ...process.env, PORTCULLIS_DATA_DIR: tmpdir(), ...env }, timeout: 10_000 });
  } catch (error) {
    const failure = error as { code: number; stderr: string };
    assert.equal(failure.code, 2);
    return failure.stderr;
  }
  throw new Error('the CLI started although the configuration was bad');
}

describe('configuration', () => {
  it('names the bad key and where it came from', async () => {
    assert.match(await cliFails({ PORTCULLIS_LISTEN: 'nonsense' }), /listen .*PORTCULLIS_LISTEN/);
    assert.match(await cliFails({ PORTCULLIS_LIMITS_PAGE_MAX_ENTRIES: 'many' }), /limits\.pageMaxEntries must be integer/);
    assert.match(await cliFails({ PORTCULLIS_METADATA_DRIVER: 'mysql' }), /metadata\.driver must be one of sqlite, postgres/);
    assert.match(await cliFails({ PORTCULLIS_LISTEN: '0.0.0.0:5999' }), /auth\.token\.realm is required .*listens on 0\.0\.0\.0:5999, not on loopback/);
    assert.match(await cliFails({ PORTCULLIS_AUTH_LDAP_URL: 'ldap://127.0.0.1:1', PORTCULLIS_AUTH_LDAP_USER_BASE_DN: 'dc=x', PORTCULLIS_AUTH_LDAP_BIND_DN: 'cn=svc' }), /bindPassword is required/);
    // A misspelled variable is not ignored in silence.
    assert.match(await cliFails({ PORTCULLIS_HTTP_TRUST_PROXIES: '10.0.0.0/8' }), /PORTCULLIS_HTTP_TRUST_PROXIES is not a known setting; did you mean PORTCULLIS_HTTP_TRUST_PROXY\?/);
    assert.match(await cliFails({ PORTCULLIS_FROBNICATE: '1' }), /PORTCULLIS_FROBNICATE is not a known setting\n|PORTCULLIS_FROBNICATE is not a known setting$/m);
    assert.match(await cliFails({ PORTCULLIS_UPLOADS_EXPIRE_AFTER_SECONDS: '120' }), /uploads\.expireAfterSeconds \(120\) must be longer than http\.idleBodyTimeoutSeconds/);
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-config-'));
    try {
      const file = join(dir, 'config.yml');
      await writeFile(file, 'listen: 127.0.0.1:5000\nstorage:\n  drivr: filesystem\n');
      assert.match(await cliFails({ PORTCULLIS_CONFIG: file }), /storage\.drivr is not a known setting; did you mean storage\.driver\? \(in .*config\.yml\)/);
      await writeFile(file, 'listen: [unclosed');
      assert.match(await cliFails({ PORTCULLIS_CONFIG: file }), /not valid YAML/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps a new data folder and its database to the registry\'s user', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'portcullis-modes-'));
    const dataDir = join(parent, 'data');
    try {
      await run(process.execPath, [CLI, 'migrate'], { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir } });
      assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
      assert.equal((await stat(join(dataDir, 'portcullis.db'))).mode & 0o777, 0o600);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('runs migrations on demand', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-migrate-'));
    try {
      const first = await run(process.execPath, [CLI, 'migrate'], { env: { ...process.env, PORTCULLIS_DATA_DIR: dir } });
      assert.match(first.stdout, /applied: 20261126_001_registry_core/);
      const second = await run(process.execPath, [CLI, 'migrate'], { env: { ...process.env, PORTCULLIS_DATA_DIR: dir } });
      assert.match(second.stdout, /up to date/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('serving', () => {
  it('answers /v2/, health, unknown endpoints and wrong methods', async () => {
    const server = await startPortcullis();
    try {
      const registry = adminClient(server);
      const base = await registry.fetch('/v2/');
      assert.equal(base.status, 200);
      assert.equal(base.headers.get('Docker-Distribution-API-Version'), 'registry/2.0');
      assert.equal((await registry.fetch('/healthz')).status, 200);
      const ready = await registry.fetch('/readyz');
      assert.deepEqual(await ready.json(), { status: 'ok', checks: { metadata: 'ok', storage: 'ok' } });
      await expectError(await registry.fetch('/v3/'), 404, 'NOT_FOUND');
      // Without auth.token.realm (loopback only), the challenge names the listen address; neither
      // Host nor X-Forwarded-Host can change it.
      const challenge = await fetch(`${server.url}/v2/`, {
        headers: { Host: 'attacker.example', 'X-Forwarded-Host': 'attacker.example', 'X-Forwarded-Proto': 'https' },
      });
      assert.equal(challenge.headers.get('WWW-Authenticate'), `Bearer realm="${server.url}/auth/token",service="portcullis"`);
      const wrongMethod = await registry.fetch(`/v2/a/blobs/${sha256(Buffer.from('x'))}`, { method: 'PUT' });
      await expectError(wrongMethod, 405, 'METHOD_NOT_ALLOWED');
      assert.match(wrongMethod.headers.get('Allow') ?? '', /GET/);
    } finally {
      await server.stop();
    }
  });

  it('logs one JSON line per request without credentials', async () => {
    const server = await startPortcullis();
    try {
      const registry = adminClient(server);
      const repository = randomName();
      await registry.pushBlob(repository, randomBytes(100));
      // A session: a PATCH of 30 bytes, then a PUT that brings the last 20.
      const chunks = [randomBytes(30), randomBytes(20)];
      const started = await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
      const patched = await registry.fetch(started.headers.get('Location') ?? '', { method: 'PATCH', body: chunks[0] });
      assert.equal(patched.status, 202);
      const finishAt = new URL(patched.headers.get('Location') ?? '', server.url);
      finishAt.searchParams.set('digest', sha256(Buffer.concat(chunks)));
      const finished = await registry.fetch(`${finishAt.pathname}${finishAt.search}`, { method: 'PUT', body: chunks[1] });
      assert.equal(finished.status, 201, await finished.text());
      await registry.fetch('/v2/', { headers: { Authorization: 'Basic c2VjcmV0OnBhc3N3b3Jk' } });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const lines = server
        .output()
        .split('\n')
        .filter((line) => line.includes('"msg":"request"'))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      assert.deepEqual(
        lines.filter((line) => line.route === 'upload.append' || line.route === 'upload.finish').map((line) => [line.route, line.status, line.bytesIn]),
        [
          ['upload.append', 202, 30],
          ['upload.finish', 201, 20],
        ],
      );
      const push = lines.find((line) => line.route === 'upload.start');
      assert.ok(push, server.output());
      assert.equal(push.repository, repository);
      assert.equal(push.status, 201);
      assert.equal(push.bytesIn, 100);
      assert.equal(push.method, 'POST');
      assert.equal(typeof push.reqId, 'string');
      assert.equal(typeof push.durationMs, 'number');
      // who it was for, and when (ISO 8601)
      assert.equal(push.principal, 'user');
      assert.equal(push.subject, 'admin');
      assert.match(String(push.time), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      const anonymous = lines.find((line) => line.route === 'base' && line.status === 401);
      assert.equal(anonymous?.principal, null, 'no token, no principal');
      assert.doesNotMatch(server.output(), /c2VjcmV0OnBhc3N3b3Jk|Basic /);
    } finally {
      await server.stop();
    }
  });

  it('resumes an upload after a restart and still verifies the digest', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-restart-'));
    const bytes = randomBytes(300_000);
    const repository = randomName();
    try {
      const first = await startPortcullis({ dataDir });
      t.after(() => first.stop());
      let registry = adminClient(first);
      const start = await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
      const location = start.headers.get('Location') ?? '';
      const chunk = await registry.fetch(location, { method: 'PATCH', headers: { 'Content-Range': '0-99999' }, body: bytes.subarray(0, 100_000) });
      assert.equal(chunk.status, 202);
      await first.stop();

      const second = await startPortcullis({ dataDir });
      t.after(() => second.stop());
      registry = adminClient(second);
      const status = await registry.fetch(location);
      assert.equal(status.headers.get('Range'), '0-99999');
      const put = await registry.fetch(`${location}?digest=${sha256(bytes)}`, {
        method: 'PUT',
        headers: { 'Content-Range': '100000-299999' },
        body: bytes.subarray(100_000),
      });
      assert.equal(put.status, 201, await put.text());
      const get = await registry.fetch(`/v2/${repository}/blobs/${sha256(bytes)}`);
      assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('leaves nothing visible when it crashes in the middle of an upload, and the same blob can be pushed again at once', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-crash-'));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    const repository = randomName();
    const bytes = randomBytes(3 * 1024 * 1024);
    const first = await startPortcullis({ dataDir });
    t.after(() => first.stop());
    const registry = adminClient(first);
    const start = await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    const location = start.headers.get('Location') ?? '';
    assert.equal((await registry.fetch(location, { method: 'PATCH', headers: { 'Content-Range': '0-1048575' }, body: bytes.subarray(0, 1048576) })).status, 202);

    // A second chunk starts streaming; the process dies before it ends.
    const stalled = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.subarray(1048576, 2 * 1048576));
      },
    });
    const hanging = registry.fetch(location, { method: 'PATCH', body: stalled, duplex: 'half' } as RequestInit).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await first.crash();
    await hanging;

    const second = await startPortcullis({ dataDir });
    t.after(() => second.stop());
    const again = adminClient(second);
    await expectError(await again.fetch(`/v2/${repository}/blobs/${sha256(bytes)}`), 404, 'BLOB_UNKNOWN');
    const status = await again.fetch(location);
    assert.equal(status.headers.get('Range'), '0-1048575', 'only the acknowledged chunk counts');
    // The dead writer's claim expires with its lease; the client can go on after that, or
    // start over. Starting over must work at once.
    const restart = await again.pushBlob(repository, bytes);
    assert.equal(restart.digest, sha256(bytes));
    const served = await again.fetch(`/v2/${repository}/blobs/${sha256(bytes)}`);
    assert.deepEqual(Buffer.from(await served.arrayBuffer()), bytes);
  });

  it('keeps a tag consistent under concurrent pushes of different manifests', async () => {
    const server = await startPortcullis();
    try {
      const registry = adminClient(server);
      const repository = randomName();
      const { manifest } = await registry.pushImage(repository, 'seed');
      const variants = Array.from({ length: 12 }, (_, i) => ({ ...manifest, annotations: { variant: String(i) } }));
      const responses = await Promise.all(
        variants.map((variant) =>
          registry.fetch(`/v2/${repository}/manifests/latest`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: JSON.stringify(variant) }),
        ),
      );
      for (const response of responses) assert.equal(response.status, 201);
      const pushed = new Set(responses.map((response) => response.headers.get('Docker-Content-Digest')));
      const latest = await registry.fetch(`/v2/${repository}/manifests/latest`);
      const body = Buffer.from(await latest.arrayBuffer());
      assert.equal(sha256(body), latest.headers.get('Docker-Content-Digest'));
      assert.ok(pushed.has(sha256(body)), 'the tag points at one of the pushed manifests');
      for (const digest of pushed) assert.equal((await registry.fetch(`/v2/${repository}/manifests/${digest}`, { method: 'HEAD' })).status, 200);
    } finally {
      await server.stop();
    }
  });

  it('pages through 100k tags from the metadata store', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-tags-'));
    try {
      const seeding = await startPortcullis({ dataDir });
      const repository = randomName();
      const { descriptor } = await adminClient(seeding).pushImage(repository, 'seed').finally(() => seeding.stop());

      // Seed the tags straight into the database: pushing 100k manifests is a benchmark, not a test.
      const db = knex({ client: 'better-sqlite3', connection: { filename: join(dataDir, 'portcullis.db') }, useNullAsDefault: true });
      const { id: repositoryId } = (await db('repositories').where({ name: repository }).first('id')) as { id: number };
      const { id: manifestId } = (await db('manifests').where({ digest: descriptor.digest }).first('id')) as { id: number };
      const rows = Array.from({ length: 100_000 }, (_, i) => ({
        repository_id: repositoryId,
        name: `t${String(i).padStart(6, '0')}`,
        manifest_id: manifestId,
        updated_at: Date.now(),
      }));
      await db.batchInsert('tags', rows, 400);
      await db.destroy();

      const server = await startPortcullis({ dataDir });
      t.after(() => server.stop());
      const registry = adminClient(server);
      const page = await registry.fetch(`/v2/${repository}/tags/list?n=3&last=t099990`);
      assert.deepEqual(((await page.json()) as { tags: string[] }).tags, ['t099991', 't099992', 't099993']);
      const capped = await registry.fetch(`/v2/${repository}/tags/list`);
      const body = (await capped.json()) as { tags: string[] };
      assert.equal(body.tags.length, 1000);
      assert.equal(body.tags[0], 'seed'); // 's' sorts before 't'
      assert.match(capped.headers.get('Link') ?? '', /last=t000998/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
