// Portcullis on PostgreSQL and S3 (a real Ceph RADOS Gateway) over HTTP: pushes monolithic,
// chunked (chunks below and above S3's 5 MiB part minimum) and streamed, pulls whole and in
// ranges, a wrong digest that leaves nothing behind, deletes, and pulls redirected to a
// short-lived presigned URL when storage.s3.redirect is on.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { adminClient, expectError, randomName, type TestRegistry } from '../support/registry-client.js';
import { freshBucket, storageEnv, type TestBucket } from '../support/s3.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

const MiB = 1024 * 1024;
const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function objectKeys(bucket: TestBucket, prefix: string): Promise<string[]> {
  const listed = await bucket.client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: prefix }));
  return (listed.Contents ?? []).map((object) => object.Key ?? '');
}

for (const redirect of [false, true]) {
  describe(`PostgreSQL + S3${redirect ? ', pulls redirected to the store' : ''}`, () => {
    let database: TestDatabase;
    let bucket: TestBucket;
    let server: RunningRegistry;
    let client: TestRegistry;

    before(async () => {
      database = await createTestDatabase();
      bucket = await freshBucket('http');
      server = await startPortcullis({ env: { ...postgresEnv(database), ...storageEnv(bucket, { redirect }) } });
      client = adminClient(server);
    });
    after(async () => {
      await server?.stop();
      await bucket?.remove();
      await database?.drop();
    });

    /** GET a blob as a client does: following a redirect to the store, sending no token there. */
    async function pull(repository: string, digest: string, range?: string): Promise<{ status: number; body: Buffer; redirected: boolean }> {
      const headers: Record<string, string> = range ? { Range: range } : {};
      const first = await client.fetch(`/v2/${repository}/blobs/${digest}`, { headers, redirect: 'manual' });
      if (first.status !== 307) return { status: first.status, body: Buffer.from(await first.arrayBuffer()), redirected: false };
      const location = first.headers.get('Location') ?? '';
      assert.ok(location.startsWith(bucket.settings.endpoint), `redirected into the store: ${location}`);
      assert.match(location, /X-Amz-Expires=300/);
      const second = await fetch(location, { headers });
      return { status: second.status, body: Buffer.from(await second.arrayBuffer()), redirected: true };
    }

    it('pushes in one request, in chunks of every size and streamed, and pulls back the exact bytes', async () => {
      const repository = `s3/${randomName()}`;
      const monolithic = randomBytes(3 * MiB);
      await client.pushBlob(repository, monolithic);

      const chunked = randomBytes(13 * MiB + 5);
      const cuts = [0, 10, 6 * MiB, 6 * MiB + 100, chunked.length];
      const start = await client.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
      assert.equal(start.status, 202);
      let location = start.headers.get('Location') ?? '';
      for (let i = 0; i + 1 < cuts.length; i++) {
        const [from, to] = [cuts[i] as number, cuts[i + 1] as number];
        const patch = await client.fetch(location, {
          method: 'PATCH',
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${to - 1}` },
          body: chunked.subarray(from, to),
        });
        assert.equal(patch.status, 202, await patch.text());
        location = patch.headers.get('Location') ?? '';
      }
      const put = await client.fetch(`${location}${location.includes('?') ? '&' : '?'}digest=${digestOf(chunked)}`, { method: 'PUT' });
      assert.equal(put.status, 201, await put.text());

      for (const content of [monolithic, chunked]) {
        const whole = await pull(repository, digestOf(content));
        assert.equal(whole.status, 200);
        assert.equal(whole.redirected, redirect);
        assert.ok(whole.body.equals(content));
        const part = await pull(repository, digestOf(content), 'bytes=100-199');
        assert.equal(part.status, 206);
        assert.ok(part.body.equals(content.subarray(100, 200)));
      }
      assert.deepEqual(await objectKeys(bucket, 'registry/_uploads/'), [], 'no upload area is left behind');
    });

    it('keeps nothing of an upload whose digest is wrong', async () => {
      const repository = `s3/${randomName()}`;
      const bytes = randomBytes(2 * MiB);
      const wrong = digestOf(Buffer.from('something else'));
      const response = await client.fetch(`/v2/${repository}/blobs/uploads/?digest=${wrong}`, { method: 'POST', body: bytes });
      await expectError(response, 400, 'DIGEST_INVALID');
      await expectError(await client.fetch(`/v2/${repository}/blobs/${wrong}`), 404, 'BLOB_UNKNOWN');
      assert.deepEqual(await objectKeys(bucket, 'registry/_uploads/'), []);
      assert.ok(!(await objectKeys(bucket, 'registry/blobs/')).some((key) => key.includes(wrong.slice(7))));
    });

    it('pushes and pulls a whole image, and deletes a blob from the store with its last link', async () => {
      const repository = `s3/${randomName()}`;
      const image = await client.pushImage(repository, 'v1', { layers: 3 });
      const manifest = await client.fetch(`/v2/${repository}/manifests/v1`);
      assert.equal(manifest.status, 200);
      const layer = image.layers[0]?.digest ?? '';
      const stored = (await objectKeys(bucket, 'registry/blobs/')).filter((key) => key.includes(layer.slice(7)));
      assert.equal(stored.length, 1);
      assert.equal((await client.fetch(`/v2/${repository}/blobs/${layer}`, { method: 'DELETE' })).status, 202);
      assert.deepEqual((await objectKeys(bucket, 'registry/blobs/')).filter((key) => key.includes(layer.slice(7))), []);
      await expectError(await client.fetch(`/v2/${repository}/blobs/${layer}`), 404, 'BLOB_UNKNOWN');
    });

    it('sends every object with its length, so the SDK prints no warning of a body of unknown length', async () => {
      // Every upload session begins with an empty marker object, and an empty blob is an empty
      // object; the pushes of the tests above went through here too.
      const repository = `s3/${randomName()}`;
      const empty = await client.pushBlob(repository, Buffer.alloc(0));
      assert.equal((await pull(repository, empty.digest)).body.length, 0);
      assert.doesNotMatch(server.output(), /unknown length/);
    });

    if (!redirect) {
      it('keeps serving pushes and pulls while many pullers stop reading mid-blob', { timeout: 60_000 }, async () => {
        // Each stalled pull holds a connection to the store whose body it stopped consuming. A
        // fixed pool of store connections (the SDK's node:http default was 50) would let as many
        // slow readers queue every other request of the registry behind them.
        const repository = `s3/${randomName()}`;
        const large = await client.pushBlob(repository, randomBytes(24 * MiB));
        const token = await client.token([`repository:${repository}:pull`]);
        const stalled: ClientRequest[] = [];
        try {
          const started = Array.from({ length: 60 }, () =>
            new Promise<void>((resolve, reject) => {
              const request = httpRequest(new URL(`/v2/${repository}/blobs/${large.digest}`, server.url), { headers: { Authorization: `Bearer ${token}` } }, (response) => {
                assert.equal(response.statusCode, 200);
                response.pause(); // reads nothing more
                resolve();
              });
              request.on('error', reject);
              request.end();
              stalled.push(request);
            }),
          );
          await Promise.all(started);
          const small = randomBytes(1000);
          const pushed = await client.pushBlob(repository, small);
          assert.ok((await pull(repository, pushed.digest)).body.equals(small));
        } finally {
          for (const request of stalled) request.destroy();
        }
      });
    }

    it('is ready when the bucket answers', async () => {
      const ready = await fetch(`${server.url}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
    });
  });
}
