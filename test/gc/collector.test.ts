// What the garbage collector removes and what it keeps, on SQLite + a folder and on PostgreSQL +
// S3: a deleted image's own blobs (links, rows, bytes) go and what other images share stays; a
// blob nothing references goes once its grace is over, and an upload, a mount or a HEAD restarts
// that grace; untagged manifests follow gc.untagged, never when tagged, in an index or the
// referrer of a present subject, and orphaned referrers follow their subject; a blob deleted
// through the API frees its bytes at once, or through the outbox when storage fails; bytes no row
// names go once old enough; a dry run changes nothing and reports what a run does; every deletion
// is audited by system/gc.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createRegistry } from '../../src/registry/index.js';
import { parseDigest } from '../../src/registry/reference.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import {
  ageReviews,
  assertConsistent,
  BACKEND_PAIRS,
  collectAll,
  linked,
  pullImage,
  pushBlob,
  pushImage,
  pushIndex,
  quiet,
  randomRepository,
  storageKeyOf,
  type Bench,
} from './support.js';

const HOUR = 60 * 60_000;

interface AuditRow {
  type: string;
  actor: string;
  actor_kind: string;
  repository: string;
  old_digest: string;
  reason: string | null;
}

const gcEvents = async (bench: Bench, repository: string): Promise<AuditRow[]> =>
  (await bench.db('audit_events').where({ actor: 'gc', repository }).orderBy('seq').select('type', 'actor', 'actor_kind', 'repository', 'old_digest', 'reason')) as AuditRow[];

for (const pair of BACKEND_PAIRS) {
  describe(`garbage collection on ${pair.name}`, () => {
    let bench: Bench;
    before(async () => {
      bench = await pair.open();
    });
    after(() => bench?.close());

    it("removes a deleted image's own blobs (links, rows, bytes), keeps what another image shares, and audits each deletion as system/gc", async () => {
      const { registry, db } = bench;
      const repository = randomRepository();
      const base = randomBytes(4000);
      const kept = await pushImage(registry, repository, 'v1', { layers: [base, randomBytes(200)] });
      const doomed = await pushImage(registry, repository, 'v2', { layers: [base, randomBytes(300)] });
      const storedBefore = await bench.stored();
      await registry.manifests.delete(repository, doomed.descriptor.digest);

      const report = await bench.collector().collect();
      const garbage = [doomed.config, doomed.layers[1]!];
      for (const blob of garbage) {
        assert.equal(await linked(bench, repository, blob.digest), false, 'the link is gone');
        assert.equal(await storageKeyOf(db, blob.digest), undefined, 'the row is gone');
      }
      const storedAfter = await bench.stored();
      const garbageBytes = garbage.reduce((sum, blob) => sum + blob.size, 0);
      assert.equal(storedBefore.size - storedAfter.size, 2, 'two stored objects fewer');
      assert.equal(report.blobLinks.deleted, 2);
      assert.deepEqual(report.blobs, { deleted: 2, bytes: garbageBytes });
      assert.deepEqual(report.reclaimed, { objects: 2, bytes: garbageBytes });
      await pullImage(registry, repository, kept); // the shared base layer too
      const events = await gcEvents(bench, repository);
      assert.deepEqual(
        events.map((event) => [event.type, event.actor_kind, event.old_digest, event.reason]).sort(),
        garbage.map((blob) => ['blob.deleted', 'system', blob.digest, 'unreferenced']).sort(),
      );
      await assertConsistent(bench);
    });

    it('removes a blob nothing references once its grace is over; a HEAD, a mount and an upload restart the grace', async () => {
      const { registry, db } = bench;
      const [repository, other] = [randomRepository(), randomRepository()];
      const bytes = randomBytes(700);
      const lonely = await pushBlob(registry, repository, bytes);
      const collector = bench.collector({ graceMs: HOUR });
      assert.equal((await collector.collect()).blobLinks.deleted, 0, 'within its grace');

      await ageReviews(db, 2 * HOUR);
      await registry.blobs.stat(repository, parseDigest(lonely.digest)); // HEAD
      assert.equal((await collector.collect()).blobLinks.deleted, 0, 'a HEAD restarted the grace');

      const unrelated = await pushBlob(registry, repository, randomBytes(100));
      await ageReviews(db, 2 * HOUR);
      assert.ok(await registry.blobs.mount(other, repository, parseDigest(lonely.digest)), 'mounted');
      const afterMount = await collector.collect();
      assert.equal(afterMount.blobLinks.deleted, 1, 'the unrelated blob went');
      assert.equal(await linked(bench, repository, unrelated.digest), false);
      assert.equal(await linked(bench, repository, lonely.digest), true, 'the mount restarted the grace of the source link too');

      const another = await pushBlob(registry, other, randomBytes(100));
      await ageReviews(db, 2 * HOUR);
      await pushBlob(registry, repository, bytes); // the same bytes uploaded again
      const afterUpload = await collector.collect();
      assert.equal(afterUpload.blobLinks.deleted, 1, 'the other unrelated blob went');
      assert.equal(await linked(bench, other, another.digest), false);
      assert.equal(await linked(bench, repository, lonely.digest), true, 'the upload restarted the grace');
      assert.equal(await linked(bench, other, lonely.digest), true, 'in every repository');

      await ageReviews(db, 2 * HOUR);
      const key = (await storageKeyOf(db, lonely.digest))!;
      const last = await collector.collect();
      assert.equal(last.blobLinks.deleted, 2);
      assert.equal(await linked(bench, repository, lonely.digest), false);
      assert.equal(await linked(bench, other, lonely.digest), false);
      assert.equal(await storageKeyOf(db, lonely.digest), undefined);
      // The bytes outlive their row by an hour (the grace, at most an hour): a backup that copied
      // the database just before still finds them.
      assert.equal(last.storage.objects, 0);
      assert.equal((await bench.stored()).has(key), true);
      const later = await bench.collector({ graceMs: HOUR }, { now: () => Date.now() + 2 * HOUR }).collect();
      assert.equal(later.storage.objects, 3, 'its bytes, and those of the two unrelated blobs before');
      assert.equal((await bench.stored()).has(key), false);
      assert.equal(later.queue.storageDeletes, 0);
      await assertConsistent(bench);
    });

    it('untagged manifests: kept by default, deleted where gc.untagged says; never when tagged or in an index; orphaned referrers follow their subject', async () => {
      const { registry, db } = bench;
      const pruned = randomRepository('pruned');
      const keeping = randomRepository('keeping');
      const collector = bench.collector({ untagged: { default: 'keep', delete: ['pruned/**'], keep: [] } });

      const old = await pushImage(registry, pruned, 'latest');
      const current = await pushImage(registry, pruned, 'latest'); // the tag moves: `old` is untagged now
      const child = await pushImage(registry, pruned, undefined);
      const index = await pushIndex(registry, pruned, 'multi', [child.descriptor]);
      const subject = await pushImage(registry, pruned, 'signed');
      const signature = await pushImage(registry, pruned, undefined, { subject: subject.descriptor, artifactType: 'application/vnd.example.sig' });
      const untaggedKept = await pushImage(registry, keeping, undefined);
      const keptSubject = await pushImage(registry, keeping, undefined);
      const orphan = await pushImage(registry, keeping, undefined, { subject: keptSubject.descriptor, artifactType: 'application/vnd.example.sbom' });

      await collectAll(collector);
      const present = async (repository: string, digest: string) => (await registry.manifests.get(repository, digest).then(() => true, () => false));
      assert.equal(await present(pruned, old.descriptor.digest), false, 'untagged in a pruned repository');
      assert.equal(await linked(bench, pruned, old.layers[0]!.digest), false, 'and its own layer with it');
      await pullImage(registry, pruned, current);
      assert.equal(await present(pruned, child.descriptor.digest), true, 'an index needs it');
      assert.equal(await present(pruned, index.digest), true);
      assert.equal(await present(pruned, signature.descriptor.digest), true, 'the referrer of a present subject');
      await pullImage(registry, keeping, untaggedKept);
      assert.equal(await present(keeping, orphan.descriptor.digest), true, 'its subject is there (untagged, kept)');

      // The subject goes (by hand): its referrers follow, whatever gc.untagged says.
      await registry.manifests.delete(keeping, keptSubject.descriptor.digest);
      await registry.manifests.delete(pruned, index.digest);
      await collectAll(collector);
      assert.equal(await present(keeping, orphan.descriptor.digest), false, 'an orphaned referrer follows its subject');
      assert.equal(await linked(bench, keeping, orphan.layers[0]!.digest), false);
      assert.equal(await present(pruned, child.descriptor.digest), false, 'no index needs it any more');
      await pullImage(registry, keeping, untaggedKept);

      const events = await gcEvents(bench, keeping);
      assert.deepEqual(
        events.filter((event) => event.type === 'manifest.deleted').map((event) => [event.old_digest, event.reason, event.actor_kind]),
        [[orphan.descriptor.digest, 'orphaned referrer', 'system']],
      );
      assert.ok((await gcEvents(bench, pruned)).some((event) => event.type === 'manifest.deleted' && event.old_digest === old.descriptor.digest && event.reason === 'untagged'));
      assert.equal(Number(((await db('gc_manifest_reviews').count({ n: '*' }).first()) as { n: number | string }).n), 0, 'no review left behind');
      await assertConsistent(bench);
    });

    it('after gc.untagged changes from keep to delete, --queue-untagged brings the manifests it kept back for review', async () => {
      const { registry } = bench;
      const repository = randomRepository('policy');
      const image = await pushImage(registry, repository, undefined);
      await collectAll(bench.collector()); // kept: its review is settled
      const deleting = bench.collector({ untagged: { default: 'delete', delete: [], keep: [] } });
      assert.equal((await deleting.collect()).manifests.reviewed, 0, 'nothing queued any more');
      const report = await deleting.collect({ queueUntagged: true });
      assert.ok(report.queuedUntagged >= 1);
      assert.ok(report.manifests.deleted >= 1);
      await assert.rejects(registry.manifests.get(repository, image.descriptor.digest));
      await collectAll(deleting);
      assert.equal(await linked(bench, repository, image.layers[0]!.digest), false);
      await assertConsistent(bench);
    });

    it('a dry run changes nothing and reports what the run then does', async () => {
      const { registry, db } = bench;
      const repository = randomRepository('dry');
      const collector = bench.collector({ untagged: { default: 'delete', delete: [], keep: [] } });
      await collectAll(collector); // what earlier tests left
      const images = [];
      for (let i = 0; i < 3; i++) images.push(await pushImage(registry, repository, `t${i}`, { layers: [randomBytes(100 + i)] }));
      for (const image of images) await registry.manifests.delete(repository, image.descriptor.digest);
      await pushBlob(registry, repository, randomBytes(50));
      const rowsBefore = await db('repository_blobs').count({ n: '*' }).first();
      const storedBefore = await bench.stored();

      const dry = await collector.collect({ dryRun: true });
      assert.equal(dry.dryRun, true);
      assert.deepEqual(await db('repository_blobs').count({ n: '*' }).first(), rowsBefore, 'no link deleted');
      assert.deepEqual(await bench.stored(), storedBefore, 'no bytes deleted');
      assert.equal(dry.blobLinks.deleted, 7, 'three configs, three layers, one lone blob');
      assert.equal(dry.blobs.deleted, 7);

      const real = await collector.collect();
      assert.deepEqual([real.blobLinks.deleted, real.blobs.deleted, real.blobs.bytes], [dry.blobLinks.deleted, dry.blobs.deleted, dry.blobs.bytes]);
      assert.equal(real.storage.objects, 7);
      await assertConsistent(bench);
    });

    it('reports the queues: depth, what is due, and how late the oldest due review is', async () => {
      const { registry, db } = bench;
      const repository = randomRepository('figures');
      const collector = bench.collector({ graceMs: HOUR });
      await bench.collector().collect(); // an empty queue to start from
      for (let i = 0; i < 3; i++) await pushBlob(registry, repository, randomBytes(30));
      let figures = await collector.figures();
      assert.deepEqual([figures.blobReviews, figures.dueBlobReviews, figures.reviewLagSeconds], [3, 0, 0]);
      await ageReviews(db, 3 * HOUR);
      figures = await collector.figures();
      assert.equal(figures.dueBlobReviews, 3);
      assert.ok(figures.reviewLagSeconds >= 2 * 3600 - 5 && figures.reviewLagSeconds <= 2 * 3600 + 60, `lag ${figures.reviewLagSeconds}`);
      const report = await collector.collect();
      assert.deepEqual([report.queue.blobReviews, report.queue.storageDeletes, report.queue.reviewLagSeconds], [0, 3, 0], 'the bytes wait out the backup window');
      const later = await bench.collector({}, { now: () => Date.now() + 2 * HOUR }).collect();
      assert.equal(later.queue.storageDeletes, 0);
    });

    it('a blob deleted through the API frees its bytes at once, and through the outbox when storage fails', async () => {
      const { registry, db, metadata, store } = bench;
      const repository = randomRepository('api');
      const blob = await pushBlob(registry, repository, randomBytes(64));
      const key = await storageKeyOf(db, blob.digest);
      await registry.blobs.delete(repository, parseDigest(blob.digest));
      assert.equal((await bench.stored()).has(key!), false, 'freed at once');
      assert.equal(await db('gc_storage_deletes').where({ storage_key: key }).first(), undefined, 'and forgotten');

      let failures = 1;
      const flaky: BlobStore = Object.create(store, {
        delete: { value: async (k: string) => (failures-- > 0 ? Promise.reject(new Error('storage down')) : store.delete(k)) },
      }) as BlobStore;
      const failing = createRegistry({ metadata, store: flaky, log: quiet, pageMaxEntries: 100, uploads: { maxOpenPerOwner: 100 }, referrersPageMaxBytes: 1 << 20 });
      const second = await pushBlob(registry, repository, randomBytes(65));
      const secondKey = (await storageKeyOf(db, second.digest))!;
      await failing.blobs.delete(repository, parseDigest(second.digest));
      assert.equal(await storageKeyOf(db, second.digest), undefined, 'the row is gone');
      assert.equal((await bench.stored()).has(secondKey), true, 'the bytes stayed');
      assert.ok(await db('gc_storage_deletes').where({ storage_key: secondKey }).first(), 'the key waits in the outbox');
      // Left to the request that deleted it for a while, then the collector's.
      const later = bench.collector({}, { now: () => Date.now() + HOUR });
      assert.equal((await later.collect()).storage.objects, 1);
      assert.equal((await bench.stored()).has(secondKey), false);
      await assertConsistent(bench);
    });

    it('sweeps bytes no row names once they are old enough, never those of an upload still linking', async () => {
      const { registry, store } = bench;
      const repository = randomRepository('sweep');
      const commitUnlinked = async (generation: string, area = true) => {
        const key = `blobs/sha256/ab/${randomBytes(32).toString('hex')}/${generation}`;
        if (area) await store.createUpload(generation);
        await store.writePart(generation, 'p', Readable.from([randomBytes(333)]), () => undefined);
        await store.commitUpload(generation, [{ name: 'p', size: 333 }], key);
        return key;
      };
      const crashed = await commitUnlinked(randomUUID()); // a crash between the commit and its link
      const session = await registry.uploads.start(repository, 'someone');
      const linking = await commitUnlinked(session.id, false); // a commit whose link is still to come
      await sleep(20);

      const young = await bench.collector({}, { orphanMinAgeMs: HOUR }).collect();
      assert.equal(young.orphans.objects, 0, 'younger than an hour: never');
      assert.equal((await bench.stored()).has(crashed), true);

      const report = await bench.collector({}, { orphanMinAgeMs: 0 }).collect();
      assert.deepEqual([report.orphans.swept, report.orphans.objects, report.orphans.bytes], [true, 1, 333]);
      const stored = await bench.stored();
      assert.equal(stored.has(crashed), false);
      assert.equal(stored.has(linking), true, 'its upload session is still open');
      await registry.uploads.cancel(repository, session.id);
      await store.delete(linking);

      const turn = await bench.collector({}, { orphanMinAgeMs: 0 }).collect({ orphanSweepEveryMs: HOUR });
      assert.equal(turn.orphans.swept, false, 'another collector swept within the hour');
    });
  });
}
