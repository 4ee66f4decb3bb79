// Upload sessions are finished by exactly one request, whichever server holds them; committed
// blobs are immutable and read back bounded by their recorded size; deduplication never reuses a
// damaged copy; one principal cannot flood the registry with sessions.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, expectError, randomName, sha256, type TestRegistry } from '../support/registry-client.js';

/** A PATCH whose body is still streaming: the test decides when it ends. */
interface OpenPatch {
  request: ClientRequest;
  response: Promise<IncomingMessage & { text: string }>;
  finish(last?: Buffer): void;
}

function openPatch(baseUrl: string, location: string, token: string, first: Buffer): OpenPatch {
  const req = request(new URL(location, baseUrl), {
    method: 'PATCH',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' },
  });
  const response = new Promise<IncomingMessage & { text: string }>((resolve, reject) => {
    req.once('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.once('end', () => resolve(Object.assign(res, { text })));
    });
    req.once('error', reject);
  });
  req.write(first);
  return { request: req, response, finish: (last) => req.end(last) };
}

/** Sends one raw request and returns every byte the server sent until it closed the connection. */
function rawExchange(host: string, requestText: string): Promise<Buffer> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(Number(port), hostname as string, () => socket.write(requestText));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

async function startUpload(registry: TestRegistry, repository: string): Promise<string> {
  const response = await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  assert.equal(response.status, 202, await response.text());
  return response.headers.get('Location') ?? '';
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The files that hold a digest's stored copies. */
async function storedCopies(dataDir: string, digest: string): Promise<string[]> {
  const hex = digest.slice('sha256:'.length);
  const dir = join(dataDir, 'blobs', 'blobs', 'sha256', hex.slice(0, 2));
  return (await readdir(dir)).filter((name) => name.startsWith(`${hex}.`)).map((name) => join(dir, name));
}

describe('two servers on one PostgreSQL and one blob folder', () => {
  let database: TestDatabase;
  let first: RunningRegistry;
  let second: RunningRegistry;

  before(async () => {
    database = await createTestDatabase();
    first = await startPortcullis({ env: postgresEnv(database) });
    // Same data folder (blobs, signing key), same database: a second replica.
    second = await startPortcullis({ env: postgresEnv(database), dataDir: first.dataDir });
  });
  after(async () => {
    await second?.stop();
    await first?.stop();
    await database?.drop();
  });

  it('refuses PUT, PATCH and DELETE on one server while a PATCH streams on the other, then commits exactly the bytes', async () => {
    const onFirst = adminClient(first);
    const onSecond = adminClient(second);
    const repository = randomName();
    const location = await startUpload(onFirst, repository);
    const id = location.split('/').pop() ?? '';
    const head = randomBytes(64 * 1024);
    const tail = randomBytes(32 * 1024);
    const patch = openPatch(second.url, location, await onSecond.token([`repository:${repository}:pull,push`]), head);
    // The streaming request holds the session once the server has claimed it.
    await until('the PATCH to claim the session', async () => {
      const { rows } = await database.query<{ writer: string | null }>('select writer from uploads where id = $1', [id]);
      return rows[0]?.writer != null;
    });

    const digestOfHeadOnly = sha256(head);
    await expectError(await onFirst.fetch(`${location}?digest=${digestOfHeadOnly}`, { method: 'PUT' }), 400, 'BLOB_UPLOAD_INVALID');
    await expectError(await onFirst.fetch(location, { method: 'PATCH', body: randomBytes(10) }), 400, 'BLOB_UPLOAD_INVALID');
    await expectError(await onFirst.fetch(location, { method: 'DELETE' }), 400, 'BLOB_UPLOAD_INVALID');
    // Nothing was committed by the refused PUT.
    assert.equal((await onFirst.fetch(`/v2/${repository}/blobs/${digestOfHeadOnly}`, { method: 'HEAD' })).status, 404);

    patch.finish(tail);
    const patched = await patch.response;
    assert.equal(patched.statusCode, 202, patched.text);
    assert.equal(patched.headers.range, `0-${head.length + tail.length - 1}`);

    const whole = Buffer.concat([head, tail]);
    const digest = sha256(whole);
    const put = await onFirst.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
    assert.equal(put.status, 201, await put.text());
    // A late request on the other server finds the session finished and changes nothing.
    await expectError(await onSecond.fetch(location, { method: 'PATCH', body: randomBytes(10) }), 404, 'BLOB_UPLOAD_UNKNOWN');

    for (const server of [onFirst, onSecond]) {
      const get = await server.fetch(`/v2/${repository}/blobs/${digest}`);
      assert.equal(get.status, 200);
      assert.equal(get.headers.get('Content-Length'), String(whole.length));
      assert.deepEqual(Buffer.from(await get.arrayBuffer()), whole);
    }
    const [copy, ...others] = await storedCopies(first.dataDir, digest);
    assert.equal(others.length, 0);
    assert.equal((await stat(copy as string)).size, whole.length, 'the stored copy holds exactly the digested bytes');
  });

  it('lets exactly one of two simultaneous PUTs on two servers finish a session', async () => {
    const onFirst = adminClient(first);
    const onSecond = adminClient(second);
    const repository = randomName();
    const location = await startUpload(onFirst, repository);
    const bytes = randomBytes(256 * 1024);
    const patched = await onFirst.fetch(location, { method: 'PATCH', body: bytes });
    assert.equal(patched.status, 202);
    const digest = sha256(bytes);
    const results = await Promise.all([onFirst, onSecond].map((r) => r.fetch(`${location}?digest=${digest}`, { method: 'PUT' })));
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses.filter((s) => s === 201).length, 1, `one PUT commits: ${statuses.join(',')}`);
    for (const result of results) {
      if (result.status === 201) continue;
      const { errors } = (await result.json()) as { errors: { code: string }[] };
      assert.ok(['BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN'].includes(errors[0]?.code ?? ''), JSON.stringify(errors));
    }
    const get = await onSecond.fetch(`/v2/${repository}/blobs/${digest}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);
  });
});

describe('stored copies', () => {
  let server: RunningRegistry;
  let registry: TestRegistry;

  before(async () => {
    server = await startPortcullis({ env: { PORTCULLIS_UPLOADS_MAX_OPEN_PER_PRINCIPAL: '3' } });
    registry = adminClient(server);
  });
  after(() => server.stop());

  it('serves a blob bounded by its recorded size even when its file has grown', async () => {
    const repository = randomName();
    const bytes = randomBytes(5000);
    const { digest } = await registry.pushBlob(repository, bytes);
    const [copy] = await storedCopies(server.dataDir, digest);
    await appendFile(copy as string, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged');
    // Read the raw connection: an HTTP client stops at Content-Length and would hide extra bytes.
    const token = await registry.token([`repository:${repository}:pull`]);
    const raw = await rawExchange(server.host, `GET /v2/${repository}/blobs/${digest} HTTP/1.1\r\nHost: ${server.host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    const split = raw.indexOf('\r\n\r\n');
    assert.match(raw.subarray(0, split).toString(), /content-length: 5000/i);
    assert.deepEqual(raw.subarray(split + 4), bytes, 'exactly the recorded bytes, nothing after them');
    const ranged = await registry.fetch(`/v2/${repository}/blobs/${digest}`, { headers: { Range: 'bytes=4990-' } });
    assert.equal(ranged.status, 206);
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), bytes.subarray(4990));
  });

  it('does not deduplicate a new push onto a copy whose size is wrong, and answers it like any push', async () => {
    const bytes = randomBytes(3000);
    const { digest } = await registry.pushBlob(randomName(), bytes);
    const [damaged] = await storedCopies(server.dataDir, digest);
    await appendFile(damaged as string, randomBytes(100));
    const repository = randomName();
    const response = await registry.fetch(`/v2/${repository}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes });
    assert.equal(response.status, 201);
    assert.equal(response.headers.get('Location'), `/v2/${repository}/blobs/${digest}`);
    const copies = await storedCopies(server.dataDir, digest);
    assert.equal(copies.length, 1, 'the damaged copy is replaced, not kept beside');
    assert.notEqual(copies[0], damaged);
    assert.equal((await stat(copies[0] as string)).size, bytes.length);
  });

  it('answers a push of content stored elsewhere exactly like a push of new content', async () => {
    const answer = async (repository: string, bytes: Buffer) => {
      const response = await registry.fetch(`/v2/${repository}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
      const headers = Object.fromEntries([...response.headers].filter(([name]) => !['date', 'x-request-id'].includes(name)));
      return { status: response.status, headers, body: await response.text() };
    };
    const known = randomBytes(4096);
    await registry.pushBlob(randomName('elsewhere'), known); // in a repository the pusher may not read
    const repository = randomName();
    const fresh = await answer(repository, randomBytes(4096));
    const deduplicated = await answer(repository, known);
    assert.equal(deduplicated.status, fresh.status);
    assert.deepEqual(Object.keys(deduplicated.headers).sort(), Object.keys(fresh.headers).sort());
    assert.equal(deduplicated.body, fresh.body);
    assert.equal(deduplicated.headers.location, `/v2/${repository}/blobs/${sha256(known)}`);
  });

  it('checks the digest of a copy stored before sealed uploads before reusing it', async () => {
    const bytes = randomBytes(2048);
    const { digest } = await registry.pushBlob(randomName(), bytes);
    const [legacy] = await storedCopies(server.dataDir, digest);
    // A copy from an older version: right size, wrong content, not marked sealed.
    await writeFile(legacy as string, randomBytes(bytes.length));
    const db = new Database(join(server.dataDir, 'portcullis.db'));
    try {
      db.prepare('update blobs set sealed = 0 where digest = ?').run(digest);
    } finally {
      db.close();
    }
    const repository = randomName();
    await registry.pushBlob(repository, bytes);
    const get = await registry.fetch(`/v2/${repository}/blobs/${digest}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);
  });

  it('caps the upload sessions one principal may hold open', async () => {
    const repository = randomName();
    const sessions = [];
    for (let i = 0; i < 3; i++) sessions.push(await startUpload(registry, repository));
    await expectError(await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' }), 429, 'TOOMANYREQUESTS');
    const cancelled = await registry.fetch(sessions[0] as string, { method: 'DELETE' });
    assert.equal(cancelled.status, 204);
    sessions[0] = await startUpload(registry, repository);
    for (const location of sessions) assert.equal((await registry.fetch(location, { method: 'DELETE' })).status, 204);
  });
});

describe('the upload sweeper', () => {
  it('removes every expired session in one sweep, however many there are', async () => {
    const env = { PORTCULLIS_UPLOADS_MAX_OPEN_PER_PRINCIPAL: '5000', PORTCULLIS_UPLOADS_SWEEP_INTERVAL_SECONDS: '3600' };
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-sweep-'));
    const server = await startPortcullis({ env, dataDir });
    try {
      const registry = adminClient(server);
      const repository = randomName();
      const count = 1200;
      for (let i = 0; i < count; i += 50) {
        await Promise.all(Array.from({ length: Math.min(50, count - i) }, () => startUpload(registry, repository)));
      }
      await server.stop();
      const db = new Database(join(dataDir, 'portcullis.db'));
      try {
        db.prepare('update uploads set updated_at = 0').run();
      } finally {
        db.close();
      }
    } catch (error) {
      await server.stop();
      throw error;
    }
    // The sweep at start is the only one within this test (the interval is an hour).
    const restarted = await startPortcullis({ env, dataDir });
    try {
      await until('the first sweep', async () => restarted.output().includes('expired idle uploads'));
      const db = new Database(join(dataDir, 'portcullis.db'), { readonly: true });
      try {
        const { open } = db.prepare('select count(*) as open from uploads').get() as { open: number };
        assert.equal(open, 0);
      } finally {
        db.close();
      }
      assert.deepEqual(await readdir(join(dataDir, 'blobs', '_uploads')), []);
    } finally {
      await restarted.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
