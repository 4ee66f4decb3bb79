// Backend faults as a replica meets them, on PostgreSQL and a private Ceph RADOS Gateway that the
// test stops and starts: the gateway killed while a large PATCH streams or between the last PATCH
// and the PUT answers 503 (never 500), leaves nothing half-visible (no blob, no tag, the session at
// its last good size) and the push succeeds once the gateway is back; the registry's database
// connections killed, or refused for a while, answer 503 at worst, /readyz says which backend is
// out, and the server recovers without a restart, having lost nothing it stored.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { basic, getToken } from '../auth/support.js';
import { startCephRgw, type RunningCephRgw } from '../support/ceph-rgw.js';
import { runCli } from '../support/cli.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { adminClient, expectError, OCI_MANIFEST, randomName, sha256, type Descriptor, type TestRegistry } from '../support/registry-client.js';
import { s3Client, storageEnv, type TestBucket } from '../support/s3.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Readiness {
  status: string;
  checks: Record<string, string>;
}

/** A PATCH whose body streams (no length given): `first` is sent at once, the rest when the test ends it. */
function streamingPatch(url: URL, token: string, first: Buffer): { end(last: Buffer): Promise<{ status: number; text: string }> } {
  const req = request(url, {
    method: 'PATCH',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' },
  });
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.once('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.once('error', reject);
  });
  req.write(first);
  return {
    end: (last) => {
      req.end(last);
      return response;
    },
  };
}

function assertUnavailable({ status, text }: { status: number; text: string }): void {
  assert.equal(status, 503, text);
  assert.equal((JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code, 'UNAVAILABLE', text);
}

/** A bucket on this private gateway (stopping the gateway removes it with everything else). */
async function bucketOn(gateway: RunningCephRgw): Promise<TestBucket> {
  const client = s3Client(gateway);
  const name = `faults-${randomBytes(4).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  const { endpoint, region, accessKeyId, secretAccessKey } = gateway;
  return {
    name,
    s3: { endpoint, region, accessKeyId, secretAccessKey },
    client,
    settings: { bucket: name, region, endpoint, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } },
    remove: async () => client.destroy(),
  };
}

/** The database's URL with another user name. */
function urlAs(database: TestDatabase, user: string): string {
  const url = new URL(database.url);
  url.username = user;
  return url.toString();
}

async function readiness(server: RunningRegistry): Promise<{ status: number; body: Readiness }> {
  const response = await fetch(`${server.url}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness };
}

describe('backend faults on PostgreSQL and S3', () => {
  let gateway: RunningCephRgw;
  let database: TestDatabase;
  /** The registry connects as this role (owner of its database, not a superuser), so the test can refuse it connections. */
  let role: string;
  let bucket: TestBucket;
  let registryEnv: Record<string, string>;
  let server: RunningRegistry;
  let client: TestRegistry;

  before(async () => {
    [gateway, database] = await Promise.all([startCephRgw(), createTestDatabase()]);
    bucket = await bucketOn(gateway);
    role = `portcullis_faults_${randomBytes(4).toString('hex')}`;
    await database.query(`CREATE ROLE ${role} LOGIN`);
    await database.query(`ALTER DATABASE ${database.name} OWNER TO ${role}`);
    registryEnv = { PORTCULLIS_METADATA_DRIVER: 'postgres', PORTCULLIS_METADATA_POSTGRES_URL: urlAs(database, role), ...storageEnv(bucket) };
    server = await startPortcullis({ env: registryEnv });
    client = adminClient(server);
  });
  after(async () => {
    await server?.stop();
    await bucket?.remove();
    await gateway?.stop();
    if (role) {
      // The role owns the database and its tables: hand them back before the role goes.
      await database.query(`REASSIGN OWNED BY ${role} TO CURRENT_USER`);
      await database.query(`DROP ROLE ${role}`);
    }
    await database?.drop();
  });

  /** The errors the server logged, to explain a failed assertion. */
  const serverErrors = () => server.output().split('\n').filter((line) => /"level":50/.test(line)).join('\n');

  /** A token for push and pull on `repository`, fetched while every backend answers. */
  const pushToken = (repository: string) => client.token([`repository:${repository}:pull,push`]);
  const send = (token: string, path: string, init: RequestInit = {}) =>
    fetch(new URL(path, server.url), { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}` } });

  async function startUpload(token: string, repository: string): Promise<string> {
    const response = await send(token, `/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    assert.equal(response.status, 202, await response.text());
    return response.headers.get('Location') ?? '';
  }

  async function patch(token: string, location: string, from: number, bytes: Buffer): Promise<Response> {
    return send(token, location, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${from + bytes.length - 1}` },
      body: bytes,
    });
  }

  /** An image manifest whose only layer is `layer` (its config pushed here). */
  async function manifestWith(repository: string, layer: Descriptor): Promise<{ schemaVersion: 2; mediaType: string; config: Descriptor; layers: Descriptor[] }> {
    const config = await client.pushBlob(repository, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomName() })), 'application/vnd.oci.image.config.v1+json');
    return { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] };
  }

  const putManifest = (token: string, repository: string, tag: string, manifest: object) =>
    send(token, `/v2/${repository}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: JSON.stringify(manifest) });

  async function uploadAreas(): Promise<string[]> {
    const listed = await bucket.client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: 'registry/_uploads/' }));
    return (listed.Contents ?? []).map((object) => object.Key ?? '');
  }

  describe('the S3 gateway stopped', () => {
    it('answers 503 when the gateway dies while a large PATCH streams, keeps nothing of it, and takes the chunk again once it is back', async () => {
      const repository = `faults/${randomName()}`;
      const token = await pushToken(repository);
      const head = randomBytes(1024);
      const rest = randomBytes(8 * MiB + 64 * 1024); // past the first 8 MiB part: a multipart upload in S3
      const content = Buffer.concat([head, rest]);
      const location = await startUpload(token, repository);
      assert.equal((await patch(token, location, 0, head)).status, 202);

      const id = location.split('/').pop() ?? '';
      const streaming = streamingPatch(new URL(location, server.url), token, rest.subarray(0, 8 * MiB));
      // The first part is on its way into the gateway once the multipart upload exists.
      for (let tries = 0; ; tries++) {
        const listed = await bucket.client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name, Prefix: `registry/_uploads/${id}/` }));
        if ((listed.Uploads ?? []).length > 0) break;
        assert.ok(tries < 200, 'the PATCH never started a multipart upload');
        await sleep(25);
      }
      await gateway.stopGateway();
      assertUnavailable(await streaming.end(rest.subarray(8 * MiB)));

      // Nothing of the failed chunk counts: the session is where it was, the blob unknown.
      const status = await send(token, location);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('Range'), `0-${head.length - 1}`);
      assert.equal((await send(token, `/v2/${repository}/blobs/${sha256(content)}`, { method: 'HEAD' })).status, 404);
      const down = await readiness(server);
      assert.equal(down.status, 503);
      assert.deepEqual(down.body.checks, { metadata: 'ok', storage: 'unavailable' });
      // New pushes are refused the same way while the gateway is gone.
      await expectError(await send(token, `/v2/${repository}/blobs/uploads/`, { method: 'POST' }), 503, 'UNAVAILABLE');
      const small = randomBytes(100);
      await expectError(await send(token, `/v2/${repository}/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small }), 503, 'UNAVAILABLE');

      await gateway.startGateway();
      assert.equal((await readiness(server)).status, 200);
      const again = await patch(token, location, head.length, rest);
      assert.equal(again.status, 202, await again.text());
      const put = await send(token, `${location}?digest=${sha256(content)}`, { method: 'PUT' });
      assert.equal(put.status, 201, await put.text());
      const pulled = await send(token, `/v2/${repository}/blobs/${sha256(content)}`);
      assert.equal(pulled.status, 200);
      assert.ok(Buffer.from(await pulled.arrayBuffer()).equals(content));
    });

    it('answers 503 when the gateway is gone between the last PATCH and the PUT, links nothing, and commits once it is back', async () => {
      const repository = `faults/${randomName()}`;
      const token = await pushToken(repository);
      const layerBytes = randomBytes(64 * 1024);
      const layer: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layerBytes), size: layerBytes.length };
      const manifest = await manifestWith(repository, layer);
      const location = await startUpload(token, repository);
      assert.equal((await patch(token, location, 0, layerBytes)).status, 202);

      await gateway.stopGateway();
      await expectError(await send(token, `${location}?digest=${layer.digest}`, { method: 'PUT' }), 503, 'UNAVAILABLE');
      assert.equal((await send(token, `/v2/${repository}/blobs/${layer.digest}`, { method: 'HEAD' })).status, 404);
      // The client would not push the manifest now; one that does gets no tag.
      await expectError(await putManifest(token, repository, 'v1', manifest), 400, 'MANIFEST_BLOB_UNKNOWN');
      assert.equal((await send(token, `/v2/${repository}/manifests/v1`, { method: 'HEAD' })).status, 404);
      // A blob stored before the outage cannot be read now: UNAVAILABLE, not an error of the registry.
      await expectError(await send(token, `/v2/${repository}/blobs/${manifest.config.digest}`), 503, 'UNAVAILABLE');

      await gateway.startGateway();
      const put = await send(token, `${location}?digest=${layer.digest}`, { method: 'PUT' });
      assert.equal(put.status, 201, await put.text());
      assert.equal((await putManifest(token, repository, 'v1', manifest)).status, 201);
      const pulled = await send(token, `/v2/${repository}/blobs/${layer.digest}`);
      assert.ok(Buffer.from(await pulled.arrayBuffer()).equals(layerBytes));
      assert.deepEqual(await uploadAreas(), [], 'no upload area is left behind');
    });
  });

  describe('the PostgreSQL connections killed', () => {
    /** Ends every connection the registry holds to its database. */
    const killConnections = () =>
      database.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database.name]);

    /** Pulls an image's manifest and blobs, asserting the exact bytes. */
    async function assertPullable(repository: string, tag: string, image: { manifest: object; config: Descriptor; layers: Descriptor[] }): Promise<void> {
      const manifest = await client.fetch(`/v2/${repository}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
      assert.equal(manifest.status, 200, `${repository}:${tag}`);
      assert.deepEqual(JSON.parse(await manifest.text()), image.manifest);
      for (const blob of [image.config, ...image.layers]) {
        const pulled = await client.fetch(`/v2/${repository}/blobs/${blob.digest}`);
        assert.equal(sha256(Buffer.from(await pulled.arrayBuffer())), blob.digest);
      }
    }

    it('answers 503 at worst to the requests that meet the killed connections, and recovers without a restart', async () => {
      const repository = `faults/${randomName()}`;
      const earlier = await client.pushImage(repository, 'before', { layers: 1 });
      const token = await pushToken(repository);
      // Pushes of new tags race the kill: each commits whole (201) or not at all (503).
      const racing = Array.from({ length: 6 }, (_, i) => putManifest(token, repository, `racer-${i}`, { ...earlier.manifest, annotations: { racer: String(i) } }));
      await killConnections();
      const raced = await Promise.all(racing);
      for (const response of raced) assert.ok([201, 503].includes(response.status), `push answered ${response.status}: ${await response.text()}\n${serverErrors()}`);
      await killConnections();
      // Every request after the kill succeeds or is UNAVAILABLE, and they succeed again soon.
      for (const path of [`/v2/${repository}/manifests/before`, `/v2/${repository}/tags/list`, `/v2/${repository}/blobs/${earlier.layers[0]?.digest}`]) {
        for (let tries = 0; ; tries++) {
          const response = await send(token, path);
          if (response.status === 200) break;
          await expectError(response, 503, 'UNAVAILABLE');
          assert.ok(tries < 50, `${path} did not recover`);
          await sleep(100);
        }
      }
      assert.equal((await readiness(server)).status, 200);
      const later = await client.pushImage(repository, 'after', { layers: 1 });
      await assertPullable(repository, 'before', earlier);
      await assertPullable(repository, 'after', later);
      for (const [i, response] of raced.entries()) {
        if (response.status === 201) assert.equal((await send(token, `/v2/${repository}/manifests/racer-${i}`, { method: 'HEAD' })).status, 200, `racer-${i} was acknowledged`);
      }
    });

    it('reports the outage on /readyz and answers 503 while the database refuses connections, then recovers with everything it stored', async () => {
      const repository = `faults/${randomName()}`;
      const stored = await client.pushImage(repository, 'v1', { layers: 1 });
      const token = await pushToken(repository);
      const small = randomBytes(100);
      await database.query(`ALTER ROLE ${role} CONNECTION LIMIT 0`);
      try {
        await killConnections();
        const down = await readiness(server);
        assert.equal(down.status, 503);
        assert.deepEqual(down.body.checks, { metadata: 'unavailable', storage: 'ok' });
        await expectError(await send(token, `/v2/${repository}/manifests/v1`), 503, 'UNAVAILABLE');
        await expectError(await send(token, `/v2/${repository}/blobs/${stored.layers[0]?.digest}`), 503, 'UNAVAILABLE');
        await expectError(await send(token, `/v2/${repository}/blobs/uploads/`, { method: 'POST' }), 503, 'UNAVAILABLE');
        await expectError(await send(token, `/v2/${repository}/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small }), 503, 'UNAVAILABLE');
        const login = await fetch(`${server.url}/auth/token?service=portcullis&scope=repository:${repository}:pull`, { headers: { Authorization: basic(server.admin) } });
        assert.equal(login.status, 503, await login.text());
      } finally {
        await database.query(`ALTER ROLE ${role} CONNECTION LIMIT -1`);
      }
      // Back without a restart: ready, everything stored before is there, pushes work.
      const up = await readiness(server);
      assert.equal(up.status, 200, JSON.stringify(up.body));
      await assertPullable(repository, 'v1', stored);
      const next = await client.pushImage(repository, 'v2', { layers: 1 });
      await assertPullable(repository, 'v2', next);
      assert.ok((await getToken(server.url, server.admin, [`repository:${repository}:pull`])).token);
      assert.deepEqual(await uploadAreas(), [], 'the refused uploads left no area behind');
      const objects = await bucket.client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: 'registry/' }));
      assert.ok(!(objects.Contents ?? []).some((object) => object.Key?.includes(sha256(small).slice(7))), 'the refused monolithic push left no blob behind');
      // The audit log's hash chain is whole after both outages.
      const verify = await runCli(['audit', 'verify'], { dataDir: server.dataDir, env: registryEnv });
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    });
  });
});
