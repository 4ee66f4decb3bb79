// The garbage collector against the clients it races, on SQLite + a folder and on PostgreSQL + S3,
// with each interleaving made deterministic by pausing the collector at a hook:
//
// - HEAD → manifest PUT vs collector: a PUT that meets a collector deciding to delete a link it
//   needs waits for it and is refused (MANIFEST_BLOB_UNKNOWN), never stored over a missing blob;
//   one that came first keeps its blobs; a HEAD restarts a due review's grace; and (PostgreSQL) a
//   PUT holding the blob row is neither waited for nor robbed: the review is deferred.
// - re-upload vs storage delete: bytes uploaded again while the old generation's row is deleted or
//   its key waits in the outbox live under a new key, which deleting the old one never touches.
// - tag create vs manifest review: a tag pushed onto a manifest the collector is deleting stores
//   it anew; the image is whole afterwards.
// - a crash injected at every point of a collection: the next collection finishes the work, and
//   nothing is deleted twice or left half done.
// - two collectors at once split the work without deleting anything twice or failing.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { CollectorCrash, type GcPoint } from '../../src/gc/index.js';
import { RegistryError } from '../../src/registry/errors.js';
import { parseDigest } from '../../src/registry/reference.js';
import {
  ageReviews,
  assertConsistent,
  BACKEND_PAIRS,
  collectAll,
  Gate,
  linked,
  OCI_MANIFEST,
  pauseAt,
  pull,
  pullImage,
  pushBlob,
  pushImage,
  putManifest,
  randomRepository,
  sha256,
  storageKeyOf,
  type Bench,
} from './support.js';

const HOUR = 60 * 60_000;
/** Long enough for a request fired at a paused collector to reach the lock (or the pool) it waits on. */
const LET_IT_BLOCK_MS = 150;

/** The manifest of an image over blobs already pushed, and its digest. */
function imageManifest(config: { digest: string; size: number }, layers: { digest: string; size: number }[]): { payload: Buffer; digest: string } {
  const payload = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((layer) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer })),
    }),
  );
  return { payload, digest: sha256(payload) };
}

const isDecision = (step: GcPoint['step'], digest: string, verdict = 'delete') => (point: GcPoint) =>
  point.step === step && point.at === 'decided' && point.decision.digest === digest && point.decision.verdict === verdict;

/** Settles a promise into what happened, so a test can fire a request now and look later. */
const settle = <T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> =>
  promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );

async function gcDeletions(bench: Bench, repository: string): Promise<Map<string, number>> {
  const rows = (await bench.db('audit_events').where({ actor: 'gc', repository }).select('type', 'old_digest')) as { type: string; old_digest: string }[];
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(`${row.type} ${row.old_digest}`, (counts.get(`${row.type} ${row.old_digest}`) ?? 0) + 1);
  return counts;
}

for (const pair of BACKEND_PAIRS) {
  describe(`garbage collection racing clients on ${pair.name}`, () => {
    let bench: Bench;
    before(async () => {
      bench = await pair.open();
    });
    after(() => bench?.close());

    it('HEAD → manifest PUT while the collector deletes the link: the PUT waits and is refused, nothing dangles', async () => {
      const { registry } = bench;
      const repository = randomRepository('head-put');
      const config = await pushBlob(registry, repository, Buffer.from(`{"n":"${randomUUID()}"}`));
      const layer = await pushBlob(registry, repository, randomBytes(2000));
      await registry.blobs.stat(repository, parseDigest(layer.digest)); // the client's HEAD: there
      const gate = new Gate();
      const collection = settle(bench.collector({}, { hooks: pauseAt(isDecision('blob-links', layer.digest), gate) }).collect());
      await gate.arrived; // the link is locked and judged unreferenced; nothing written yet

      const { payload, digest } = imageManifest(config, [layer]);
      const push = settle(putManifest(registry, repository, 'v1', payload, OCI_MANIFEST));
      await sleep(LET_IT_BLOCK_MS);
      gate.open();
      const [collected, pushed] = await Promise.all([collection, push]);
      assert.ok(collected.ok, String(!collected.ok && collected.error));
      assert.ok(!pushed.ok, 'the push is refused');
      assert.ok(pushed.error instanceof RegistryError && pushed.error.code === 'MANIFEST_BLOB_UNKNOWN', String(pushed.error));
      await assert.rejects(registry.manifests.get(repository, digest), /MANIFEST_UNKNOWN|unknown/i, 'no manifest over a missing blob');
      assert.equal(await linked(bench, repository, layer.digest), false);
      await assert.rejects(registry.blobs.stat(repository, parseDigest(layer.digest)), /BLOB_UNKNOWN|unknown/i, 'a HEAD now says so: nothing remembers the blob');
      await assertConsistent(bench);
    });

    it('HEAD → manifest PUT that commits before the collector looks: the blobs stay', async () => {
      const { registry } = bench;
      const repository = randomRepository('put-first');
      const config = await pushBlob(registry, repository, Buffer.from(`{"n":"${randomUUID()}"}`));
      const layer = await pushBlob(registry, repository, randomBytes(2000));
      await registry.blobs.stat(repository, parseDigest(layer.digest));
      const gate = new Gate();
      // Paused between its steps, before it reviews links: the push lands then.
      const collection = settle(bench.collector({}, { hooks: pauseAt((point) => point.step === 'manifests' && point.at === 'done', gate) }).collect());
      await gate.arrived;
      const { payload, digest } = imageManifest(config, [layer]);
      await putManifest(registry, repository, 'v1', payload, OCI_MANIFEST);
      gate.open();
      const collected = await collection;
      assert.ok(collected.ok && collected.value.blobLinks.kept >= 2 && collected.value.blobLinks.deleted === 0);
      await pullImage(registry, repository, { descriptor: { mediaType: OCI_MANIFEST, digest, size: payload.length }, config: { ...config }, layers: [layer] });
      await assertConsistent(bench);
    });

    it('HEAD restarts a due review: the collector leaves the link to the push that follows', async () => {
      const { registry, db } = bench;
      const repository = randomRepository('head-grace');
      const config = await pushBlob(registry, repository, Buffer.from(`{"n":"${randomUUID()}"}`));
      const layer = await pushBlob(registry, repository, randomBytes(2000));
      await ageReviews(db, 2 * HOUR); // both due under a grace of an hour
      await registry.blobs.stat(repository, parseDigest(config.digest)); // the client's HEADs
      await registry.blobs.stat(repository, parseDigest(layer.digest));
      const report = await bench.collector({ graceMs: HOUR }).collect();
      assert.equal(report.blobLinks.reviewed, 0, 'nothing due any more');
      const { payload } = imageManifest(config, [layer]);
      await putManifest(registry, repository, 'v1', payload, OCI_MANIFEST);
      await pull(registry, repository, layer.digest);
    });

    if (pair.postgres) {
      it('a manifest PUT holding the blob row: the collector neither waits for it nor deletes, and defers the review', async () => {
        const { registry, db } = bench;
        const repository = randomRepository('held');
        const layer = await pushBlob(registry, repository, randomBytes(2000));
        const push = await db.transaction(); // what checkDependencies holds while a manifest is stored
        try {
          await push('blobs').where({ digest: layer.digest }).forKeyShare().first();
          const started = Date.now();
          const report = await bench.collector().collect();
          assert.ok(Date.now() - started < 3000, 'it did not wait for the push');
          assert.equal(report.blobLinks.deferred, 1);
          assert.equal(report.blobLinks.deleted, 0);
          assert.equal(await linked(bench, repository, layer.digest), true);
        } finally {
          await push.rollback(); // the push gave up: the link is unreferenced
        }
        const later = await bench.collector({}, { now: () => Date.now() + 5 * 60_000 }).collect();
        assert.equal(later.blobLinks.deleted, 1, 'looked at again once the retry delay is over');
        assert.equal(await linked(bench, repository, layer.digest), false);
      });
    }

    it('re-upload vs storage delete: the new generation survives the deletion of the old one', async () => {
      const { registry, db } = bench;
      const repository = randomRepository('reupload');
      const bytes = randomBytes(5000);
      const blob = await pushBlob(registry, repository, bytes);
      const oldKey = (await storageKeyOf(db, blob.digest))!;

      // 1. The row is gone and its key waits in the outbox when the same bytes arrive again.
      const claimed = new Gate();
      const first = settle(bench.collector({}, { hooks: pauseAt((point) => point.step === 'storage' && point.at === 'claimed' && point.keys.includes(oldKey), claimed) }).collect());
      await claimed.arrived;
      assert.equal(await storageKeyOf(db, blob.digest), undefined, 'the row went first');
      await pushBlob(registry, repository, bytes);
      const newKey = (await storageKeyOf(db, blob.digest))!;
      assert.notEqual(newKey, oldKey, 'a new generation');
      claimed.open();
      assert.ok((await first).ok);
      let stored = await bench.stored();
      assert.equal(stored.has(oldKey), false, 'the old generation is deleted');
      assert.equal(stored.get(newKey), bytes.length, 'the new one is whole');
      assert.ok((await pull(registry, repository, blob.digest)).equals(bytes));

      // 2. The collector is deleting the row (locked, decided) while the same bytes are committed.
      const decided = new Gate();
      const second = settle(bench.collector({}, { hooks: pauseAt(isDecision('blob-links', blob.digest), decided) }).collect());
      await decided.arrived;
      const again = settle(pushBlob(registry, repository, bytes));
      await sleep(LET_IT_BLOCK_MS);
      decided.open();
      const [collected, uploaded] = await Promise.all([second, again]);
      assert.ok(collected.ok && uploaded.ok, String((!collected.ok && collected.error) || (!uploaded.ok && uploaded.error)));
      const newest = (await storageKeyOf(db, blob.digest))!;
      stored = await bench.stored();
      assert.ok(newest !== newKey && stored.get(newest) === bytes.length, 'the upload recorded its own generation after the deletion');
      assert.equal(stored.has(newKey), false);
      assert.ok((await pull(registry, repository, blob.digest)).equals(bytes));
      await assertConsistent(bench);
    });

    it('tag create vs manifest review: a tag pushed onto a manifest being deleted stores it anew, whole', async () => {
      const { registry, db } = bench;
      const repository = randomRepository('retag');
      const settings = { graceMs: HOUR, untagged: { default: 'delete' as const, delete: [], keep: [] } };
      const image = await pushImage(registry, repository, undefined); // untagged
      await ageReviews(db, 2 * HOUR); // and untagged for longer than the grace
      const gate = new Gate();
      const racing = bench.collector(settings, { hooks: pauseAt(isDecision('manifests', image.descriptor.digest), gate) });
      const collection = settle(racing.collect());
      await gate.arrived;
      const tagging = settle(putManifest(registry, repository, 'v1', image.payload, OCI_MANIFEST));
      await sleep(LET_IT_BLOCK_MS);
      gate.open();
      const [collected, tagged] = await Promise.all([collection, tagging]);
      assert.ok(collected.ok && tagged.ok, String((!collected.ok && collected.error) || (!tagged.ok && tagged.error)));
      assert.equal(collected.value.manifests.deleted, 1, 'the collector did delete the untagged row');
      assert.equal((await registry.manifests.get(repository, 'v1')).digest, image.descriptor.digest, 'the tag stored it anew');
      // The blobs the deletion queued start a grace of their own, and are referenced again.
      await ageReviews(db, 2 * HOUR);
      await collectAll(bench.collector(settings));
      await pullImage(registry, repository, image);
      await assertConsistent(bench);
    });

    const CRASH_POINTS: { name: string; at: (point: GcPoint) => boolean }[] = [
      ...(['manifests', 'blob-links'] as const).flatMap((step) => [
        { name: `${step}: decided, inside the transaction`, at: (p: GcPoint) => p.step === step && p.at === 'decided' && p.decision.verdict === 'delete' },
        { name: `${step}: batch committed`, at: (p: GcPoint) => p.step === step && p.at === 'committed' },
        { name: `${step}: done`, at: (p: GcPoint) => p.step === step && p.at === 'done' },
      ]),
      { name: 'storage: keys claimed', at: (p) => p.step === 'storage' && p.at === 'claimed' },
      { name: 'storage: bytes deleted, key not yet forgotten', at: (p) => p.step === 'storage' && p.at === 'bytes-deleted' },
      { name: 'storage: done', at: (p) => p.step === 'storage' && p.at === 'done' },
      { name: 'orphans: unnamed bytes found', at: (p) => p.step === 'orphans' && p.at === 'unnamed' },
      { name: 'orphans: bytes deleted', at: (p) => p.step === 'orphans' && p.at === 'bytes-deleted' },
    ];

    /** Garbage of every kind in a new repository, and what must survive it. */
    async function garbageOfEveryKind() {
      const { registry, store } = bench;
      const repository = randomRepository('crash');
      const base = randomBytes(3000);
      const retagged = await pushImage(registry, repository, 'latest');
      await pushImage(registry, repository, 'latest'); // `retagged` loses its tag: an untagged manifest to delete
      const deleted = await pushImage(registry, repository, 'old', { layers: [base, randomBytes(100)] });
      const kept = await pushImage(registry, repository, 'stable', { layers: [base] });
      await registry.manifests.delete(repository, deleted.descriptor.digest);
      const orphanKeys: string[] = [];
      for (let i = 0; i < 2; i++) {
        // bytes committed by an upload that crashed before its link
        const generation = randomUUID();
        const key = `blobs/sha256/cd/${randomBytes(32).toString('hex')}/${generation}`;
        await store.createUpload(generation);
        await store.writePart(generation, 'p', Readable.from([randomBytes(99)]), () => undefined);
        await store.commitUpload(generation, [{ name: 'p', size: 99 }], key);
        orphanKeys.push(key);
      }
      await sleep(10);
      return { repository, retagged, deleted, kept, orphanKeys, garbage: [retagged.config, ...retagged.layers, deleted.config, deleted.layers[1]!] };
    }

    async function assertCollected(scenario: Awaited<ReturnType<typeof garbageOfEveryKind>>, why: string): Promise<void> {
      const { registry, db } = bench;
      const { repository, garbage } = scenario;
      for (const blob of garbage) {
        assert.equal(await linked(bench, repository, blob.digest), false, `${why}: ${blob.digest} unlinked`);
        assert.equal(await storageKeyOf(db, blob.digest), undefined, `${why}: its row gone`);
      }
      await assert.rejects(registry.manifests.get(repository, scenario.retagged.descriptor.digest), RegistryError, `${why}: the untagged manifest went`);
      await pullImage(registry, repository, scenario.kept);
      const stored = await bench.stored();
      for (const key of scenario.orphanKeys) assert.equal(stored.has(key), false, `${why}: the unnamed bytes went`);
      assert.deepEqual(await db('gc_storage_deletes').pluck('storage_key'), [], `${why}: every deleted row's bytes went`);
      const deletions = await gcDeletions(bench, repository);
      for (const [event, count] of deletions) assert.equal(count, 1, `${why}: ${event} once`);
      assert.equal(deletions.size, garbage.length + 1, `${why}: each deletion audited`);
      await assertConsistent(bench);
    }

    const untaggedGo = { untagged: { default: 'delete' as const, delete: [], keep: [] } };
    /** A collector that crashes at the first point `crash` accepts. */
    const crashingAt = (crash: (point: GcPoint) => boolean, clock: () => number) => {
      let crashed = false;
      const collector = bench.collector(untaggedGo, {
        orphanMinAgeMs: 0,
        batchSize: 2, // several batches: a crash between them leaves some done, some not
        now: clock,
        hooks: {
          at(point) {
            if (crashed || !crash(point)) return;
            crashed = true;
            throw new CollectorCrash('injected');
          },
        },
      });
      return { collector, crashed: () => crashed };
    };

    it('a crash at each point of a collection, one after another: the next collection finishes the work, nothing is deleted twice', async () => {
      const scenario = await garbageOfEveryKind();
      // Each collector starts from what the crashed one before it left. Their clocks run an hour
      // apart, so a lease a crashed one held on an outbox key is over for the next.
      let hours = 0;
      for (const crash of CRASH_POINTS) {
        const offset = ++hours * HOUR;
        const { collector, crashed } = crashingAt(crash.at, () => Date.now() + offset);
        await assert.rejects(collector.collect(), CollectorCrash, `crashed at ${crash.name}`);
        assert.ok(crashed(), crash.name);
      }
      const last = (hours + 1) * HOUR;
      await collectAll(bench.collector(untaggedGo, { orphanMinAgeMs: 0, now: () => Date.now() + last }));
      await assertCollected(scenario, 'after a crash at every point');
    });

    if (!pair.postgres) {
      // Each point alone too, from fresh garbage (cheap on the embedded default; the object store
      // makes every upload cost a few round trips).
      it('a crash at any one point: the next collection finishes the work', async () => {
        for (const crash of CRASH_POINTS) {
          const scenario = await garbageOfEveryKind();
          const { collector, crashed } = crashingAt(crash.at, Date.now);
          await assert.rejects(collector.collect(), CollectorCrash, `crashed at ${crash.name}`);
          assert.ok(crashed(), crash.name);
          await collectAll(bench.collector(untaggedGo, { orphanMinAgeMs: 0, now: () => Date.now() + HOUR }));
          await assertCollected(scenario, crash.name);
        }
      });
    }

    it('two collectors at once split the work: each deletion happens and is audited once, neither fails', async () => {
      const { registry } = bench;
      const repository = randomRepository('two');
      const garbage: string[] = [];
      for (let i = 0; i < 6; i++) {
        const image = await pushImage(registry, repository, `t${i}`, { layers: [randomBytes(100 + i), randomBytes(200 + i)] });
        await registry.manifests.delete(repository, image.descriptor.digest);
        garbage.push(image.config.digest, ...image.layers.map((layer) => layer.digest));
      }
      const collectors = [bench.collector({}, { batchSize: 2 }), bench.collector({}, { batchSize: 2 })];
      const reports = await Promise.all(collectors.map((collector) => collector.collect()));
      const deleted = reports.reduce((sum, report) => sum + report.blobLinks.deleted, 0);
      const objects = reports.reduce((sum, report) => sum + report.storage.objects, 0);
      assert.equal(deleted, garbage.length, 'every link deleted, by one or the other');
      assert.equal(objects, garbage.length, 'every stored object deleted once');
      const events = await gcDeletions(bench, repository);
      assert.equal(events.size, garbage.length);
      for (const [event, count] of events) assert.equal(count, 1, `${event} once`);
      for (const digest of garbage) assert.equal(await linked(bench, repository, digest), false);
      await assertConsistent(bench);
    });
  });
}
