// The S3 test harness itself: the Ceph RADOS Gateway (test/support/ceph-rgw.ts) speaks the S3 the
// S3 blob store relies on, through an SDK client configured as test/support/s3.ts does it
// (streamed puts, ranges, conditional puts, multipart uploads, aborts, SigV4, presigned URLs); a
// fresh bucket is removed whole; a private gateway runs beside the shared one on its own ports, its
// radosgw can be stopped and started again, and nothing of it is left once its owner is gone,
// whether it stopped it, simply exited, or was killed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3ServiceException,
  UploadPartCommand,
  type GetObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { startCephRgw } from '../support/ceph-rgw.js';
import { S3_ENV, freshBucket, presignedGetUrl, s3Client, testS3, type TestBucket } from '../support/s3.js';

const MiB = 1024 * 1024;
const PROJECT_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const S3_MODULE = pathToFileURL(fileURLToPath(new URL('../support/s3.js', import.meta.url))).href;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function bodyOf(output: GetObjectCommandOutput): Promise<Buffer> {
  assert.ok(output.Body, 'GetObject returned no body');
  return Buffer.from(await output.Body.transformToByteArray());
}

/** The S3 error a request must fail with: its code (e.g. NoSuchUpload) and HTTP status. */
async function s3Failure(work: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  const error: unknown = await work.then(
    () => assert.fail('the request succeeded'),
    (err: unknown) => err,
  );
  assert.ok(error instanceof S3ServiceException, `not an S3 error: ${String(error)}`);
  return { name: error.name, status: error.$metadata.httpStatusCode };
}

/** Processes whose command line mentions `path` (Ceph daemons get `-c <dir>/ceph.conf`). */
async function processesMentioning(path: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(path)) found.push(`${entry}: ${cmdline.replaceAll('\0', ' ')}`);
  }
  return found;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Waits until nothing runs from `dir` and it is empty; fails with what is left after `ms`. */
async function assertCleanedUp(dir: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const [processes, entries] = await Promise.all([processesMentioning(dir), readdir(dir)]);
    if (processes.length === 0 && entries.length === 0) return;
    if (Date.now() > deadline) assert.fail(`left behind in ${dir}: processes ${JSON.stringify(processes)}, files ${JSON.stringify(entries)}`);
    await sleep(100);
  }
}

async function refusesConnections(endpoint: string): Promise<boolean> {
  return fetch(endpoint, { signal: AbortSignal.timeout(5000) }).then(
    () => false,
    (err: unknown) => (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED',
  );
}

describe('the Ceph RADOS Gateway through the S3 SDK', () => {
  let bucket: TestBucket;
  let client: S3Client;

  before(async () => {
    bucket = await freshBucket('smoke');
    client = bucket.client;
  });
  after(async () => {
    await bucket?.remove();
  });

  it('stores a streamed object and reads it back whole, by range and by suffix range', async () => {
    const bytes = randomBytes(300 * 1024);
    const chunks = Array.from({ length: 10 }, (_, i) => bytes.subarray(i * 30 * 1024, (i + 1) * 30 * 1024));
    await client.send(
      new PutObjectCommand({ Bucket: bucket.name, Key: 'blobs/streamed', Body: Readable.from(chunks), ContentLength: bytes.length }),
    );

    const whole = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: 'blobs/streamed' }));
    assert.equal(whole.ContentLength, bytes.length);
    assert.equal(sha256(await bodyOf(whole)), sha256(bytes));

    const ranged = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: 'blobs/streamed', Range: 'bytes=1000-1999' }));
    assert.equal(ranged.$metadata.httpStatusCode, 206);
    assert.equal(ranged.ContentRange, `bytes 1000-1999/${bytes.length}`);
    assert.deepEqual(await bodyOf(ranged), bytes.subarray(1000, 2000));

    const suffix = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: 'blobs/streamed', Range: 'bytes=-10' }));
    assert.equal(suffix.$metadata.httpStatusCode, 206);
    assert.deepEqual(await bodyOf(suffix), bytes.subarray(bytes.length - 10));
  });

  it('refuses to overwrite an object with If-None-Match: *', async () => {
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: 'blobs/once', Body: 'first' }));
    const failure = await s3Failure(client.send(new PutObjectCommand({ Bucket: bucket.name, Key: 'blobs/once', Body: 'second', IfNoneMatch: '*' })));
    assert.deepEqual(failure, { name: 'PreconditionFailed', status: 412 });
    const kept = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: 'blobs/once' }));
    assert.equal((await bodyOf(kept)).toString(), 'first');
  });

  it('assembles a multipart upload of a 5 MiB part and a short last part', async () => {
    const Key = 'blobs/multipart';
    const parts = [randomBytes(5 * MiB), randomBytes(1234)];
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket.name, Key }));
    assert.ok(UploadId);
    const etags: string[] = [];
    for (const [index, part] of parts.entries()) {
      const { ETag } = await client.send(new UploadPartCommand({ Bucket: bucket.name, Key, UploadId, PartNumber: index + 1, Body: part }));
      assert.ok(ETag);
      etags.push(ETag);
    }

    const listed = await client.send(new ListPartsCommand({ Bucket: bucket.name, Key, UploadId }));
    assert.deepEqual(
      listed.Parts?.map((p) => ({ number: p.PartNumber, size: p.Size, etag: p.ETag })),
      parts.map((part, i) => ({ number: i + 1, size: part.length, etag: etags[i] })),
    );

    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket.name,
        Key,
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    // RGW answers CompleteMultipartUpload with an empty ETag: HeadObject has the real one.
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket.name, Key }));
    assert.equal(head.ContentLength, 5 * MiB + 1234);
    assert.match(head.ETag ?? '', /^"[0-9a-f]{32}-2"$/);
    const read = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key }));
    assert.equal(sha256(await bodyOf(read)), sha256(Buffer.concat(parts)));
  });

  it('aborts a multipart upload: it is no longer listed and its parts are gone', async () => {
    const Key = 'blobs/abandoned';
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket.name, Key }));
    await client.send(new UploadPartCommand({ Bucket: bucket.name, Key, UploadId, PartNumber: 1, Body: randomBytes(1024) }));
    const before = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
    assert.ok(before.Uploads?.some((u) => u.UploadId === UploadId));

    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket.name, Key, UploadId }));

    // AWS says NoSuchUpload; RGW 16.2 says NoSuchKey: a driver must go by the 404.
    const parts = await s3Failure(client.send(new ListPartsCommand({ Bucket: bucket.name, Key, UploadId })));
    assert.equal(parts.status, 404);
    assert.match(parts.name, /^NoSuch(?:Upload|Key)$/);
    const late = await s3Failure(client.send(new UploadPartCommand({ Bucket: bucket.name, Key, UploadId, PartNumber: 2, Body: 'late' })));
    assert.deepEqual(late, { name: 'NoSuchUpload', status: 404 });
    const afterAbort = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
    assert.ok(!afterAbort.Uploads?.some((u) => u.UploadId === UploadId));
    assert.deepEqual(await s3Failure(client.send(new HeadObjectCommand({ Bucket: bucket.name, Key }))), { name: 'NotFound', status: 404 });
  });

  it('checks SigV4 signatures: a wrong secret or an unknown key is refused with 403, and writes nothing', async () => {
    const wrongSecret = s3Client({ ...bucket.s3, secretAccessKey: `${bucket.s3.secretAccessKey}x` });
    const unknownKey = s3Client({ ...bucket.s3, accessKeyId: 'PCTUNKNOWNACCESSKEY0' });
    try {
      const write = wrongSecret.send(new PutObjectCommand({ Bucket: bucket.name, Key: 'blobs/forged', Body: 'forged' }));
      assert.deepEqual(await s3Failure(write), { name: 'SignatureDoesNotMatch', status: 403 });
      const list = unknownKey.send(new ListObjectsV2Command({ Bucket: bucket.name }));
      assert.deepEqual(await s3Failure(list), { name: 'InvalidAccessKeyId', status: 403 });
      const head = client.send(new HeadObjectCommand({ Bucket: bucket.name, Key: 'blobs/forged' }));
      assert.deepEqual(await s3Failure(head), { name: 'NotFound', status: 404 });
    } finally {
      wrongSecret.destroy();
      unknownKey.destroy();
    }
  });

  it('serves a presigned GET URL to plain fetch, and refuses it tampered with or expired', async () => {
    const Key = 'presigned/a b+c.txt';
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key, Body: 'presigned content' }));

    const url = presignedGetUrl(bucket.s3, bucket.name, Key, 60);
    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'presigned content');

    const otherKey = url.replace('a%20b%2Bc.txt', 'other.txt');
    const tampered = await fetch(otherKey);
    assert.equal(tampered.status, 403);
    assert.match(await tampered.text(), /SignatureDoesNotMatch/);

    const expired = await fetch(presignedGetUrl(bucket.s3, bucket.name, Key, 60, new Date(Date.now() - 3600_000)));
    assert.equal(expired.status, 403);
    assert.match(await expired.text(), /AccessDenied/);
  });

  it('freshBucket().remove() deletes the objects, the multipart uploads in progress and the bucket', async () => {
    const doomed = await freshBucket('doomed');
    for (const key of ['a', 'b/c', 'd/e/f']) {
      await doomed.client.send(new PutObjectCommand({ Bucket: doomed.name, Key: key, Body: key }));
    }
    const { UploadId } = await doomed.client.send(new CreateMultipartUploadCommand({ Bucket: doomed.name, Key: 'big' }));
    await doomed.client.send(new UploadPartCommand({ Bucket: doomed.name, Key: 'big', UploadId, PartNumber: 1, Body: randomBytes(100) }));

    await doomed.remove();

    assert.deepEqual(await s3Failure(client.send(new HeadBucketCommand({ Bucket: doomed.name }))), { name: 'NotFound', status: 404 });
  });
});

describe('private gateways (startCephRgw, or testS3 in a process without PORTCULLIS_TEST_S3_*)', () => {
  it('runs beside the shared gateway on its own ports; stopGateway/startGateway keep the endpoint and the data; stop() leaves nothing', async () => {
    const shared = await testS3();
    const own = await startCephRgw();
    const { dir } = own;
    const pids = own.pids();
    const client = s3Client(own);
    try {
      assert.notEqual(new URL(own.endpoint).port, new URL(shared.endpoint).port);
      assert.ok(![7480, 3300, 6789].includes(Number(new URL(own.endpoint).port)));
      const bytes = randomBytes(4096);
      await client.send(new CreateBucketCommand({ Bucket: 'private' }));
      await client.send(new PutObjectCommand({ Bucket: 'private', Key: 'kept', Body: bytes }));
      // Each gateway has its own users: the shared one does not know this one's key.
      const stranger = s3Client({ ...shared, accessKeyId: own.accessKeyId, secretAccessKey: own.secretAccessKey });
      assert.deepEqual(await s3Failure(stranger.send(new ListBucketsCommand({}))), { name: 'InvalidAccessKeyId', status: 403 });
      stranger.destroy();

      const memory = await own.memory();
      for (const [daemon, rss] of Object.entries(memory)) assert.ok(rss > 1024 * 1024, `${daemon} RSS ${rss}`);

      await own.stopGateway();
      assert.ok(await refusesConnections(own.endpoint), 'radosgw still answers after stopGateway()');
      await own.startGateway();
      const read = await client.send(new GetObjectCommand({ Bucket: 'private', Key: 'kept' }));
      assert.deepEqual(await bodyOf(read), bytes);
    } finally {
      client.destroy();
      await own.stop();
    }
    assert.equal(await exists(dir), false);
    for (const pid of [pids.mon, pids.osd]) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    assert.deepEqual(await processesMentioning(dir), []);
    assert.ok(await refusesConnections(own.endpoint));
  });

  /**
   * Runs `code` (an ES module with testS3/freshBucket in scope) in a process of its own whose temp
   * dir is `tmp` and which has no shared gateway; resolves its first line of output and the process.
   */
  function inChildProcess(tmp: string, code: string) {
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
    for (const name of Object.values(S3_ENV)) delete env[name];
    const script = `import { testS3, freshBucket } from ${JSON.stringify(S3_MODULE)};\n${code}`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const firstLine = (async (): Promise<string> => {
      const deadline = Date.now() + 120_000;
      while (!stdout.includes('\n')) {
        if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
          assert.fail(`the child printed nothing (exit ${child.exitCode ?? child.signalCode}); stderr:\n${stderr}`);
        }
        await sleep(50);
      }
      return stdout.slice(0, stdout.indexOf('\n'));
    })();
    return { child, exit, firstLine, stderr: () => stderr };
  }

  it('a test file run on its own starts a gateway through testS3(), and its exit removes it', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'portcullis-rgw-alone-'));
    try {
      const run = inChildProcess(
        tmp,
        `const bucket = await freshBucket('alone');
         console.log(JSON.stringify(bucket.s3));
         await bucket.remove();`,
      );
      const s3 = JSON.parse(await run.firstLine) as { endpoint: string };
      assert.deepEqual(await run.exit, { code: 0, signal: null }, run.stderr());
      await assertCleanedUp(tmp);
      assert.ok(await refusesConnections(s3.endpoint));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('a gateway whose owner is interrupted (SIGINT) is killed and removed by its watchdog', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'portcullis-rgw-sigint-'));
    try {
      const run = inChildProcess(
        tmp,
        `console.log(JSON.stringify(await testS3()));
         setInterval(() => {}, 1000);`,
      );
      const s3 = JSON.parse(await run.firstLine) as { endpoint: string };
      assert.equal((await fetch(s3.endpoint)).status, 200);
      run.child.kill('SIGINT');
      assert.deepEqual(await run.exit, { code: null, signal: 'SIGINT' });
      await assertCleanedUp(tmp);
      assert.ok(await refusesConnections(s3.endpoint));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
