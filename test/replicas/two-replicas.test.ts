// Two replicas behind a load balancer: two `portcullis serve` processes on one PostgreSQL database
// and one S3 bucket (a real Ceph RADOS Gateway), each with its own data folder, sharing only the
// token signing key (auth.token.keyFile). A token from one is good on the other; an upload moves
// between them at every request (the replica that continues it rebuilds the hash from the stored
// parts); racing pushes of one tag through both leave one winner and one consistent history; what
// either stores or deletes, the other serves at once.
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { adminToken, api } from '../auth/support.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { adminClient, OCI_MANIFEST, randomName, sha256, type TestRegistry } from '../support/registry-client.js';
import { freshBucket, storageEnv, type TestBucket } from '../support/s3.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

const MiB = 1024 * 1024;

interface AuditEntry {
  type: string;
  tag?: string;
  oldDigest?: string;
  newDigest?: string;
}

/** Bytes of a response, asserting its status. */
async function body(response: Response, status: number): Promise<Buffer> {
  const bytes = Buffer.from(await response.arrayBuffer());
  assert.equal(response.status, status, bytes.toString('utf8', 0, 500));
  return bytes;
}

describe('two replicas on one PostgreSQL database and one S3 bucket', () => {
  let keyDir: string;
  let database: TestDatabase;
  let bucket: TestBucket;
  let replicas: RunningRegistry[] = [];
  /** Clients of the first and the second replica, each logged in there. */
  let clients: TestRegistry[];

  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'portcullis-replicas-'));
    const keyFile = join(keyDir, 'signing.pem');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    [database, bucket] = await Promise.all([createTestDatabase(), freshBucket('replicas')]);
    const env = { ...postgresEnv(database), ...storageEnv(bucket), PORTCULLIS_AUTH_TOKEN_KEY_FILE: keyFile };
    // Started together, as a deployment starts them: both migrate and bootstrap the same database.
    const started = await Promise.allSettled([startPortcullis({ env }), startPortcullis({ env })]);
    replicas = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    for (const result of started) if (result.status === 'rejected') throw result.reason;
    clients = replicas.map((replica) => adminClient(replica));
  });
  after(async () => {
    await Promise.all(replicas.map((replica) => replica.stop()));
    await bucket?.remove();
    await database?.drop();
    await rm(keyDir, { recursive: true, force: true });
  });

  const replica = (i: number): RunningRegistry => replicas[i % 2] as RunningRegistry;
  const client = (i: number): TestRegistry => clients[i % 2] as TestRegistry;

  /** A request to replica `i` with a token another replica issued (as behind a load balancer). */
  const send = (i: number, token: string, path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(new URL(path, replica(i).url), { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}` } });

  it('accepts on each replica the tokens the other issued', async () => {
    const token = await client(0).token(['registry:catalog:*']);
    await body(await send(1, token, '/v2/_catalog'), 200);
    const keys = await Promise.all(replicas.map(async (r) => (await (await fetch(`${r.url}/auth/jwks`)).json()) as { keys: { kid: string }[] }));
    assert.deepEqual(keys[0], keys[1], 'both publish the one shared key');
  });

  it('continues a chunked upload on the other replica at every PATCH, and both serve the exact bytes', async () => {
    const repository = `replicas/${randomName()}`;
    const token = await client(0).token([`repository:${repository}:pull,push`]);
    const content = randomBytes(3 * MiB + 123);
    // Chunks of a few bytes to over a MiB; the last one travels with the PUT.
    const cuts = [0, 1000, MiB, 2 * MiB + 7, 3 * MiB, content.length];
    const chunks = cuts.slice(1).map((to, k) => ({ from: cuts[k] as number, to }));
    const last = chunks.pop() as { from: number; to: number };
    const started = await send(0, token, `/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    await body(started, 202);
    let location = started.headers.get('Location') ?? '';
    // PATCHes on replicas 1, 0, 1, 0: each continues what the other one wrote.
    for (const [k, { from, to }] of chunks.entries()) {
      const patch = await send(k + 1, token, location, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${to - 1}` },
        body: content.subarray(from, to),
      });
      await body(patch, 202);
      assert.equal(patch.headers.get('Range'), `0-${to - 1}`);
      location = patch.headers.get('Location') ?? '';
      // The other replica sees the progress at once.
      const status = await send(k, token, location);
      await body(status, 204);
      assert.equal(status.headers.get('Range'), `0-${to - 1}`);
    }
    // The last chunk with the PUT, on replica 1 again.
    const put = await send(chunks.length + 1, token, `${location}?digest=${sha256(content)}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${last.from}-${last.to - 1}` },
      body: content.subarray(last.from),
    });
    await body(put, 201);

    for (const r of [0, 1]) {
      const pulled = await body(await send(r, token, `/v2/${repository}/blobs/${sha256(content)}`), 200);
      assert.ok(pulled.equals(content), `replica ${r} serves the exact bytes`);
      const part = await body(await send(r, token, `/v2/${repository}/blobs/${sha256(content)}`, { headers: { Range: `bytes=${MiB - 5}-${MiB + 4}` } }), 206);
      assert.ok(part.equals(content.subarray(MiB - 5, MiB + 5)));
    }
    const areas = await bucket.client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: 'registry/_uploads/' }));
    assert.deepEqual(areas.Contents ?? [], [], 'the finished upload left no parts behind');
  });

  it('pulls through either replica what was pushed through the other, and deletes are seen by both at once', async () => {
    const repository = `replicas/${randomName()}`;
    const image = await client(1).pushImage(repository, 'v1', { layers: 2 });
    const manifestBytes = Buffer.from(JSON.stringify(image.manifest));
    for (const r of [0, 1]) {
      for (const reference of ['v1', image.descriptor.digest]) {
        const manifest = await client(r).fetch(`/v2/${repository}/manifests/${reference}`, { headers: { Accept: OCI_MANIFEST } });
        assert.ok((await body(manifest, 200)).equals(manifestBytes), `replica ${r}, ${reference}`);
        assert.equal(manifest.headers.get('Docker-Content-Digest'), image.descriptor.digest);
      }
      for (const blob of [image.config, ...image.layers]) {
        const pulled = await body(await client(r).fetch(`/v2/${repository}/blobs/${blob.digest}`), 200);
        assert.equal(sha256(pulled), blob.digest);
      }
      const tags = await body(await client(r).fetch(`/v2/${repository}/tags/list`), 200);
      assert.deepEqual(JSON.parse(tags.toString()), { name: repository, tags: ['v1'] });
    }
    // A tag deleted through one replica is gone on the other: no replica answers from a memory of it.
    assert.equal((await client(0).fetch(`/v2/${repository}/manifests/v1`, { method: 'DELETE' })).status, 202);
    await body(await client(1).fetch(`/v2/${repository}/manifests/v1`), 404);
    const layer = image.layers[0]?.digest ?? '';
    assert.equal((await client(1).fetch(`/v2/${repository}/blobs/${layer}`, { method: 'DELETE' })).status, 202);
    await body(await client(0).fetch(`/v2/${repository}/blobs/${layer}`, { method: 'HEAD' }), 404);
  });

  it('keeps one winner and one consistent history when both replicas push one tag at once', async () => {
    const repository = `replicas/${randomName()}`;
    const base = await client(0).pushImage(repository, 'base', { layers: 1 });
    const racers = 8;
    const pushes = await Promise.all(
      Array.from({ length: racers }, (_, i) =>
        client(i).fetch(`/v2/${repository}/manifests/latest`, {
          method: 'PUT',
          headers: { 'Content-Type': OCI_MANIFEST },
          body: JSON.stringify({ ...base.manifest, annotations: { racer: String(i) } }),
        }),
      ),
    );
    const statuses = pushes.map((response) => response.status);
    // Each push succeeds or fails cleanly (an OCI error a client can retry on), never a server error.
    for (const response of pushes) {
      if (response.status === 201) continue;
      assert.ok([409, 429, 503].includes(response.status), `push answered ${response.status}: ${await response.text()}`);
    }
    const succeeded = statuses.filter((status) => status === 201).length;
    assert.ok(succeeded >= 1, `statuses ${statuses.join(',')}`);

    const token = await adminToken(replica(1));
    const audit = await api<{ events: AuditEntry[] }>(replica(1).url, token, 'GET', `/admin/v1/audit?repository=${encodeURIComponent(repository)}&limit=1000`);
    assert.equal(audit.status, 200, audit.text);
    const moves = audit.body.events.reverse().filter((event) => event.tag === 'latest' && event.type.startsWith('tag.'));
    assert.equal(moves.length, succeeded, 'each successful push created or moved the tag once');
    assert.equal(moves[0]?.type, 'tag.created');
    for (let i = 1; i < moves.length; i++) {
      assert.equal(moves[i]?.type, 'tag.moved');
      assert.equal(moves[i]?.oldDigest, moves[i - 1]?.newDigest, 'each move starts where the previous one ended');
    }
    const winner = moves[moves.length - 1]?.newDigest;
    for (const r of [0, 1]) {
      const head = await client(r).fetch(`/v2/${repository}/manifests/latest`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('Docker-Content-Digest'), winner, `replica ${r} serves the last move`);
    }
  });
});
