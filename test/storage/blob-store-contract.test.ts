// The BlobStore contract, run against every driver, as distribution's storage driver suite is:
// the filesystem and S3 (a real Ceph RADOS Gateway). What the registry relies on: parts are
// written whole and read back exactly; a commit joins parts of any sizes (S3's 5 MiB part minimum
// must not show) into one object that reads back byte for byte, in ranges too; a recorded part
// that is missing or of another size is a damaged upload; the area goes at commit; nothing of an
// abandoned upload (a multipart write cut off) survives the sweeper's delete; the garbage
// collector's listing shows every committed object (and nothing of upload areas) with its size and
// the time it was committed, however long before its parts were written.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, UploadPartCommand } from '@aws-sdk/client-s3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { UploadAreaMissingError, type BlobStore, type UploadPart } from '../../src/storage/blob-store.js';
import { FilesystemBlobStore } from '../../src/storage/filesystem.js';
import { S3BlobStore } from '../../src/storage/s3.js';
import { freshBucket, type TestBucket } from '../support/s3.js';

const MiB = 1024 * 1024;

interface OpenDriver {
  store: BlobStore;
  /** Leaves what a writer that crashed mid-part leaves in an upload area. */
  abandonWrite(uploadId: string): Promise<void>;
  /** How many things (files, objects, multipart uploads) an upload area still holds. */
  leftovers(uploadId: string): Promise<number>;
  /** Removes an upload area as another replica's sweeper would: through a store of its own. */
  sweptElsewhere(uploadId: string): Promise<void>;
  /** Makes a written part look written long ago, where the driver can (the filesystem). */
  backdatePart?(uploadId: string, part: string): Promise<void>;
  cleanup(): Promise<void>;
}

interface Driver {
  name: string;
  open(): Promise<OpenDriver>;
}

const drivers: Driver[] = [
  {
    name: 'filesystem',
    async open() {
      const root = await mkdtemp(join(tmpdir(), 'portcullis-contract-'));
      const store = new FilesystemBlobStore(root);
      await store.init();
      const area = (id: string) => join(root, '_uploads', id);
      return {
        store,
        abandonWrite: (id) => writeFile(join(area(id), `crashed-${randomUUID()}`), randomBytes(1000)),
        leftovers: async (id) => (await readdir(area(id)).catch(() => [])).length,
        sweptElsewhere: (id) => new FilesystemBlobStore(root).deleteUpload(id),
        backdatePart: async (id, part) => {
          const longAgo = new Date(Date.now() - 2 * 24 * 3600_000);
          await utimes(join(area(id), part), longAgo, longAgo);
        },
        cleanup: () => rm(root, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 's3 (Ceph RGW)',
    async open() {
      const bucket: TestBucket = await freshBucket('contract');
      const store = new S3BlobStore({ ...bucket.settings, prefix: 'registry/' });
      const { client } = bucket;
      const Bucket = bucket.settings.bucket;
      const area = (id: string) => `registry/_uploads/${id}/`;
      return {
        store,
        async abandonWrite(id) {
          // A part streamed past its first 8 MiB is a multipart upload until its writer completes it.
          const Key = `${area(id)}crashed-${randomUUID()}`;
          const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key }));
          await client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(1000) }));
        },
        async leftovers(id) {
          const objects = await client.send(new ListObjectsV2Command({ Bucket, Prefix: area(id) }));
          const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket, Prefix: area(id) }));
          return (objects.Contents ?? []).length + (uploads.Uploads ?? []).length;
        },
        async sweptElsewhere(id) {
          const replica = new S3BlobStore({ ...bucket.settings, prefix: 'registry/' });
          try {
            await replica.deleteUpload(id);
          } finally {
            replica.close();
          }
        },
        async cleanup() {
          store.close();
          await bucket.remove();
        },
      };
    },
  },
];

/** A stream of `bytes` in chunks of `chunk` bytes, as a socket delivers a body. */
function chunked(bytes: Buffer, chunk = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let at = 0; at < bytes.length; at += chunk) yield bytes.subarray(at, at + chunk);
    })(),
  );
}

async function collect(stream: Readable | undefined): Promise<Buffer> {
  assert.ok(stream, 'the object is there');
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const key = () => `blobs/sha256/${randomBytes(1).toString('hex')}/${randomBytes(32).toString('hex')}.${randomUUID()}`;

for (const driver of drivers) {
  describe(`BlobStore contract: ${driver.name}`, () => {
    let opened: OpenDriver;
    let store: BlobStore;

    before(async () => {
      opened = await driver.open();
      store = opened.store;
    });
    after(() => opened?.cleanup());

    /** Writes `contents` as parts of a new upload; returns the id and the parts as recorded. */
    async function upload(contents: Buffer[]): Promise<{ id: string; parts: UploadPart[] }> {
      const id = randomUUID();
      await store.createUpload(id);
      const parts: UploadPart[] = [];
      for (const [index, content] of contents.entries()) {
        const seen = createHash('sha256');
        const name = `${index}-${randomUUID()}`;
        const size = await store.writePart(id, name, chunked(content), (chunk) => seen.update(chunk));
        assert.equal(size, content.length);
        assert.equal(seen.digest('hex'), sha(content), 'every byte was shown to the observer, in order');
        parts.push({ name, size });
      }
      return { id, parts };
    }

    it('reads finished parts back in order, byte for byte', async () => {
      const contents = [randomBytes(1000), Buffer.alloc(0), randomBytes(9 * MiB + 7)];
      const { id, parts } = await upload(contents);
      assert.equal(sha(await collect(await store.readParts(id, parts))), sha(Buffer.concat(contents)));
      await store.deleteUpload(id, parts);
    });

    it('refuses a part for an upload area that does not exist', async () => {
      await assert.rejects(store.writePart(randomUUID(), 'p', chunked(randomBytes(10)), () => undefined), UploadAreaMissingError);
    });

    it('commits one part, reads it whole and in ranges, and removes the upload area', async () => {
      const content = randomBytes(3 * MiB + 11);
      const { id, parts } = await upload([content]);
      const target = key();
      await store.commitUpload(id, parts, target);
      assert.equal(await store.size(target), content.length);
      assert.ok((await collect(await store.read(target, { start: 0, end: content.length - 1 }))).equals(content));
      assert.ok((await collect(await store.read(target, { start: 5, end: 5 }))).equals(content.subarray(5, 6)));
      assert.ok((await collect(await store.read(target, { start: MiB, end: 2 * MiB }))).equals(content.subarray(MiB, 2 * MiB + 1)));
      await assert.rejects(store.readParts(id, parts), UploadAreaMissingError, 'the area is gone after the commit');
      const areas: string[] = [];
      for await (const area of store.listUploads()) areas.push(area.id);
      assert.ok(!areas.includes(id));
    });

    it('commits parts of any sizes, below and above 5 MiB, into one exact object', async () => {
      const contents = [randomBytes(3), randomBytes(6 * MiB), randomBytes(100), Buffer.alloc(0), randomBytes(5 * MiB + 1), randomBytes(2 * MiB), randomBytes(4 * MiB)];
      const { id, parts } = await upload(contents);
      const target = key();
      await store.commitUpload(id, parts, target);
      const whole = Buffer.concat(contents);
      assert.equal(await store.size(target), whole.length);
      assert.equal(sha(await collect(await store.read(target, { start: 0, end: whole.length - 1 }))), sha(whole));
    });

    it('reads an object of several parts in any range, across part boundaries, and deletes it whole', async () => {
      const contents = [randomBytes(5 * MiB + 3), randomBytes(17), Buffer.alloc(0), randomBytes(2 * MiB), randomBytes(1)];
      const { id, parts } = await upload(contents);
      // A writer that lost its claim may leave a file nobody recorded: it is never part of the object.
      await opened.abandonWrite(id);
      const target = key();
      await store.commitUpload(id, parts, target);
      const whole = Buffer.concat(contents);
      assert.equal(await store.size(target), whole.length);
      const boundaries = [0, 5 * MiB + 2, 5 * MiB + 3, 5 * MiB + 19, 7 * MiB + 19, whole.length - 1];
      for (const start of boundaries) {
        for (const end of boundaries.filter((end) => end >= start)) {
          const got = await collect(await store.read(target, { start, end }));
          assert.ok(got.equals(whole.subarray(start, end + 1)), `bytes ${start}-${end}`);
        }
      }
      assert.equal((await collect(await store.read(target, { start: 3, end: 2 }))).length, 0, 'an empty range');
      const listed: string[] = [];
      for await (const object of store.listCommitted()) if (object.key === target) listed.push(object.key);
      assert.deepEqual(listed, [target], 'listed once, as one object');
      await store.delete(target);
      assert.equal(await store.size(target), undefined);
      assert.equal(await store.read(target, { start: 0, end: 0 }), undefined);
      for await (const object of store.listCommitted()) assert.notEqual(object.key, target);
    });

    it("commits a PUT's own last part, alone or after others, and still checks one recorded at another size", async () => {
      for (const earlier of [[], [randomBytes(2 * MiB), randomBytes(17)]]) {
        const { id, parts } = await upload(earlier);
        const last = randomBytes(MiB + 7);
        const size = await store.writePart(id, 'last', chunked(last), () => undefined, { length: last.length, last: true });
        const target = key();
        await store.commitUpload(id, [...parts, { name: 'last', size }], target);
        const whole = Buffer.concat([...earlier, last]);
        assert.equal(await store.size(target), whole.length);
        assert.equal(sha(await collect(await store.read(target, { start: 0, end: whole.length - 1 }))), sha(whole));
        await assert.rejects(store.readParts(id, [{ name: 'last', size }]), UploadAreaMissingError, 'the area is gone after the commit');
      }
      const id = randomUUID();
      await store.createUpload(id);
      await store.writePart(id, 'last', chunked(randomBytes(100)), () => undefined, { last: true });
      await assert.rejects(store.commitUpload(id, [{ name: 'last', size: 99 }], key()), UploadAreaMissingError);
      await assert.rejects(store.commitUpload(id, [{ name: 'other', size: 100 }], key()), UploadAreaMissingError);
      await store.deleteUpload(id);
      assert.equal(await opened.leftovers(id), 0);
      // Swept by another replica between the write and the commit: a missing area, and no object.
      const swept = randomUUID();
      await store.createUpload(swept);
      await store.writePart(swept, 'last', chunked(randomBytes(100)), () => undefined, { last: true });
      await opened.sweptElsewhere(swept);
      const target = key();
      await assert.rejects(store.commitUpload(swept, [{ name: 'last', size: 100 }], target), UploadAreaMissingError);
      assert.equal(await store.size(target), undefined);
    });

    it('commits an upload of no bytes at all as an empty object', async () => {
      const id = randomUUID();
      await store.createUpload(id);
      const target = key();
      await store.commitUpload(id, [], target);
      assert.equal(await store.size(target), 0);
      assert.equal((await collect(await store.read(target, { start: 0, end: -1 }))).length, 0);
    });

    it('treats a recorded part that is missing or of another size as a damaged upload', async () => {
      const { id, parts } = await upload([randomBytes(100)]);
      const [part] = parts as [UploadPart];
      await assert.rejects(store.commitUpload(id, [{ ...part, size: 99 }], key()), UploadAreaMissingError);
      await assert.rejects(store.commitUpload(id, [part, { name: 'never-written', size: 5 }], key()), UploadAreaMissingError);
      await assert.rejects(store.readParts(id, [{ ...part, size: 101 }]), UploadAreaMissingError);
      await store.deleteUpload(id);
    });

    it('answers undefined for an object that is not there, and deletes idempotently', async () => {
      const missing = key();
      assert.equal(await store.read(missing, { start: 0, end: 10 }), undefined);
      assert.equal(await store.size(missing), undefined);
      await store.delete(missing);
      const { id, parts } = await upload([randomBytes(10)]);
      const target = key();
      await store.commitUpload(id, parts, target);
      await store.delete(target);
      await store.delete(target);
      assert.equal(await store.size(target), undefined);
    });

    it('refuses keys, ids and part names that could reach outside their place', async () => {
      for (const bad of ['../etc/passwd', 'blobs/../../x', '/abs', 'blobs//x', '_uploads/x']) {
        await assert.rejects(store.read(bad, { start: 0, end: 0 }), /invalid storage key/, bad);
      }
      await assert.rejects(store.createUpload('../x'), /invalid upload id/);
      const id = randomUUID();
      await store.createUpload(id);
      await assert.rejects(store.writePart(id, '../x', chunked(Buffer.from('x')), () => undefined), /invalid part name/);
      await store.deleteUpload(id);
    });

    it('lists upload areas for the sweeper, and removes one whole without its parts being named', async () => {
      const { id } = await upload([randomBytes(10), randomBytes(20)]);
      const areas = new Map<string, Date>();
      for await (const area of store.listUploads()) areas.set(area.id, area.lastModified);
      const listed = areas.get(id);
      assert.ok(listed, 'the area is listed');
      assert.ok(Date.now() - listed.getTime() < 10 * 60_000, 'with a recent last write');
      await store.deleteUpload(id);
      for await (const area of store.listUploads()) assert.notEqual(area.id, id);
      await assert.rejects(store.writePart(id, 'late', chunked(Buffer.from('x')), () => undefined), UploadAreaMissingError);
    });

    it('removes everything a crashed writer left in an abandoned area when the sweeper deletes it', async () => {
      const { id } = await upload([randomBytes(10)]);
      await opened.abandonWrite(id);
      assert.ok((await opened.leftovers(id)) >= 2);
      await store.deleteUpload(id);
      assert.equal(await opened.leftovers(id), 0);
    });

    it('leaves nothing of a part whose stream failed midway, and the failure reaches the caller', async () => {
      const id = randomUUID();
      await store.createUpload(id);
      const failing = Readable.from(
        (async function* () {
          yield randomBytes(9 * MiB); // past the first streamed part: a multipart write on S3
          throw new Error('the client went away');
        })(),
      );
      await assert.rejects(store.writePart(id, 'cut', failing, () => undefined), /the client went away/);
      await assert.rejects(store.readParts(id, [{ name: 'cut', size: 9 * MiB }]), UploadAreaMissingError);
      await store.deleteUpload(id);
    });

    it('writes a part of a declared length exactly, and keeps nothing of one that ends short, runs long or fails', async () => {
      const id = randomUUID();
      await store.createUpload(id);
      const content = randomBytes(6 * MiB + 5);
      const seen = createHash('sha256');
      assert.equal(await store.writePart(id, 'declared', chunked(content), (chunk) => seen.update(chunk), { length: content.length }), content.length);
      assert.equal(seen.digest('hex'), sha(content));
      assert.equal(sha(await collect(await store.readParts(id, [{ name: 'declared', size: content.length }]))), sha(content));
      await assert.rejects(store.writePart(id, 'short', chunked(content.subarray(0, MiB)), () => undefined, { length: 2 * MiB }), /of the .* bytes declared/);
      await assert.rejects(store.readParts(id, [{ name: 'short', size: MiB }]), UploadAreaMissingError);
      await assert.rejects(store.writePart(id, 'long', chunked(content), () => undefined, { length: MiB }), /bytes declared/);
      await assert.rejects(store.readParts(id, [{ name: 'long', size: MiB }]), UploadAreaMissingError);
      const failing = Readable.from(
        (async function* () {
          yield randomBytes(3 * MiB);
          throw new Error('the client went away');
        })(),
      );
      await assert.rejects(store.writePart(id, 'cut', failing, () => undefined, { length: 4 * MiB }), /the client went away/);
      await assert.rejects(store.readParts(id, [{ name: 'cut', size: 3 * MiB }]), UploadAreaMissingError);
      await store.deleteUpload(id);
      assert.equal(await opened.leftovers(id), 0);
    });

    it('lists committed objects for the collector: key, size and commit time, no upload areas', async () => {
      const startedAt = Date.now();
      const single = await upload([randomBytes(1234)]);
      await opened.backdatePart?.(single.id, (single.parts[0] as UploadPart).name);
      const joined = await upload([randomBytes(10), randomBytes(20)]);
      const [one, two] = [key(), key()];
      await store.commitUpload(single.id, single.parts, one);
      await store.commitUpload(joined.id, joined.parts, two);
      const pending = await upload([randomBytes(5)]);
      const gone = key();
      const doomed = await upload([randomBytes(7)]);
      await store.commitUpload(doomed.id, doomed.parts, gone);
      await store.delete(gone);

      const listed = new Map<string, { size: number; lastModified: Date }>();
      for await (const object of store.listCommitted()) listed.set(object.key, object);
      assert.equal(listed.get(one)?.size, 1234);
      assert.equal(listed.get(two)?.size, 30);
      const skew = 5_000; // the object store's clock against ours
      for (const k of [one, two]) {
        const at = listed.get(k)?.lastModified.getTime() ?? 0;
        assert.ok(at >= startedAt - skew && at <= Date.now() + skew, `${k} was committed just now, whenever its parts were written (${new Date(at).toISOString()})`);
      }
      assert.equal(listed.has(gone), false, 'a deleted object is not listed');
      assert.ok([...listed.keys()].every((k) => k.startsWith('blobs/')), 'nothing of an upload area');
      await store.deleteUpload(pending.id);
      await store.delete(one);
      await store.delete(two);
    });

    it('reports healthy while the backend answers', async () => {
      await store.checkHealth();
    });
  });
}
