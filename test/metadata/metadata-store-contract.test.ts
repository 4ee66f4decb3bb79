// The MetadataStore contract, run against SQLite and PostgreSQL alike: what the registry relies on
// the store for. Blobs are readable only where linked, the first record of a digest wins, the
// last unlink hands back the orphan; upload sessions are capped per owner, claimed by one writer
// at a time and advanced only under a live claim; a manifest is stored with its tag only when all
// it depends on is present, an immutable tag never moves, and the journal sees each change in its
// transaction; listings and referrers page as documented. For the garbage collector: the last
// unlink puts the blob's key in the storage-delete outbox with its row gone; every change that may
// leave garbage queues a review in its own transaction (a new link, a manifest pushed untagged, a
// tag moved away or deleted, a deleted manifest's blobs, children and referrers), and a client's
// touch restarts only the grace of reviews already pending.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import type { AuditRecord } from '../../src/metadata/auth-stores.js';
import { UploadSessionLostError } from '../../src/metadata/errors.js';
import { KnexMetadataStore } from '../../src/metadata/knex-store.js';
import type { ManifestRecord, RegistryChange, UploadRecord } from '../../src/metadata/store.js';
import { METADATA_BACKENDS } from '../support/metadata-backends.js';

const digest = (seed = randomUUID()) => `sha256:${Buffer.from(seed).toString('hex').padEnd(64, '0').slice(0, 64)}`;
const OCI = 'application/vnd.oci.image.manifest.v1+json';

function manifest(extra: Partial<ManifestRecord> = {}): ManifestRecord {
  const payload = randomBytes(64);
  return { digest: digest(), mediaType: OCI, size: payload.length, payload, ...extra };
}

function session(repository: string, owner = 'alice'): UploadRecord {
  const now = Date.now();
  return { id: randomUUID(), repository, size: 0, parts: [], owner, createdAt: now, updatedAt: now };
}

/** A journal that remembers every change handed to it, and records nothing. */
function recordingJournal(): { seen: RegistryChange[]; journal: (changes: readonly RegistryChange[]) => readonly AuditRecord[] } {
  const seen: RegistryChange[] = [];
  return {
    seen,
    journal: (changes) => {
      seen.push(...changes);
      return [];
    },
  };
}

for (const backend of METADATA_BACKENDS) {
  describe(`MetadataStore contract on ${backend.name}`, () => {
    let db: Knex;
    let close: () => Promise<void>;
    let store: KnexMetadataStore;
    const repo = () => `contract/${randomUUID().slice(0, 8)}`;

    before(async () => {
      ({ db, close } = await backend.open());
      store = new KnexMetadataStore(db);
    });
    after(() => close?.());

    it('blobs: readable only where linked; the first record of a digest wins; the last unlink returns the orphan', async () => {
      const [a, b] = [repo(), repo()];
      const blob = { digest: digest(), size: 10, storageKey: `blobs/k/${randomUUID()}` };
      assert.equal(await store.findRepositoryBlob(a, blob.digest), undefined);
      const stored = await store.commitBlob(a, blob);
      assert.equal(stored.storageKey, blob.storageKey);
      assert.equal(stored.sealed, true);
      assert.deepEqual(await store.findRepositoryBlob(a, blob.digest), { ...stored });
      assert.equal(await store.findRepositoryBlob(b, blob.digest), undefined, 'no global lookup by digest');
      const second = await store.commitBlob(b, { ...blob, storageKey: 'blobs/k/other' });
      assert.equal(second.storageKey, blob.storageKey, 'the existing record wins');
      assert.equal((await store.mountBlob(repo(), a, digest()))?.digest, undefined, 'mounting what the source lacks links nothing');
      const target = repo();
      assert.equal((await store.mountBlob(target, a, blob.digest))?.storageKey, blob.storageKey);
      assert.ok(await store.findRepositoryBlob(target, blob.digest));

      const { journal, seen } = recordingJournal();
      assert.deepEqual(await store.unlinkBlob(a, blob.digest, journal), { unlinked: true });
      assert.deepEqual(await store.unlinkBlob(a, blob.digest), { unlinked: false });
      assert.deepEqual(await store.unlinkBlob(b, blob.digest), { unlinked: true });
      const last = await store.unlinkBlob(target, blob.digest);
      assert.equal(last.orphan?.storageKey, blob.storageKey, 'the last unlink hands back the bytes to delete');
      assert.deepEqual(seen, [{ type: 'blob.deleted', repository: a, digest: blob.digest }]);
      assert.equal(await db('blobs').where({ digest: blob.digest }).first(), undefined, 'the row went first');
      assert.ok(await db('gc_storage_deletes').where({ storage_key: blob.storageKey }).first(), 'its key waits in the outbox');
      assert.equal(await db('gc_blob_reviews').where({ digest: blob.digest }).first(), undefined, 'no review of a link that is gone');
      await store.finishStorageDelete(blob.storageKey);
      assert.equal(await db('gc_storage_deletes').where({ storage_key: blob.storageKey }).first(), undefined);
    });

    /** The digests queued for review in a repository, per queue. */
    async function queued(repository: string): Promise<{ blobs: string[]; manifests: string[] }> {
      const id = ((await db('repositories').where({ name: repository }).first('id')) as { id: number }).id;
      const digests = async (table: string) => ((await db(table).where({ repository_id: id }).orderBy('digest').pluck('digest')) as string[]);
      return { blobs: await digests('gc_blob_reviews'), manifests: await digests('gc_manifest_reviews') };
    }
    const clearQueues = async () => {
      await db('gc_blob_reviews').delete();
      await db('gc_manifest_reviews').delete();
    };

    it('gc queues: a new link is queued for review, a link made again is not; a touch restarts only pending reviews', async () => {
      const [r, other] = [repo(), repo()];
      const blob = { digest: digest(), size: 5, storageKey: `blobs/k/${randomUUID()}` };
      await store.commitBlob(r, blob);
      assert.deepEqual((await queued(r)).blobs, [blob.digest], 'nothing references a new link yet');
      await db('gc_blob_reviews').where({ digest: blob.digest }).update({ touched_at: 1 });
      await store.commitBlob(r, { ...blob, storageKey: 'blobs/k/again' });
      const touched = (await db('gc_blob_reviews').where({ digest: blob.digest }).first('touched_at')) as { touched_at: number | string };
      assert.ok(Number(touched.touched_at) > 1, 'the upload restarted its grace');
      await store.mountBlob(other, r, blob.digest);
      assert.deepEqual((await queued(other)).blobs, [blob.digest], 'a mount makes a new link');

      await db('gc_blob_reviews').where({ digest: blob.digest }).update({ touched_at: 1 });
      assert.ok(await store.findRepositoryBlob(r, blob.digest), 'a plain lookup');
      assert.deepEqual(((await db('gc_blob_reviews').where({ digest: blob.digest }).pluck('touched_at')) as unknown[]).map(Number), [1, 1], 'restarts nothing');
      assert.ok(await store.findRepositoryBlob(r, blob.digest, { touch: true }), 'a probe');
      const restarted = ((await db('gc_blob_reviews').where({ digest: blob.digest }).pluck('touched_at')) as unknown[]).map(Number);
      assert.ok(restarted.every((at) => at > 1), 'restarts every pending review of the digest');
      await db('gc_blob_reviews').where({ digest: blob.digest, repository_id: db('repositories').where({ name: r }).select('id') }).update({ touched_at: Date.now() - 500 });
      const justNow = ((await db('gc_blob_reviews').where({ digest: blob.digest }).orderBy('repository_id').pluck('touched_at')) as unknown[]).map(Number);
      await store.touchBlobReviews([blob.digest]);
      assert.deepEqual(
        ((await db('gc_blob_reviews').where({ digest: blob.digest }).orderBy('repository_id').pluck('touched_at')) as unknown[]).map(Number),
        justNow,
        'a grace restarted less than a second ago is not restarted again',
      );
      await db('gc_blob_reviews').where({ digest: blob.digest }).update({ touched_at: Date.now() - 1500 });
      await store.touchBlobReviews([blob.digest]);
      assert.ok(
        ((await db('gc_blob_reviews').where({ digest: blob.digest }).pluck('touched_at')) as unknown[]).every((at) => Number(at) > Date.now() - 1000),
        'one restarted longer ago is',
      );
      const unqueued = { digest: digest(), size: 1, storageKey: `blobs/k/${randomUUID()}` };
      await store.commitBlob(r, unqueued);
      await db('gc_blob_reviews').where({ digest: unqueued.digest }).delete();
      assert.ok(await store.findRepositoryBlob(r, unqueued.digest, { touch: true }));
      await store.touchBlobReviews([unqueued.digest, digest()]);
      assert.equal(await db('gc_blob_reviews').where({ digest: unqueued.digest }).first(), undefined, 'no review is made up');
    });

    it('gc queues: untagged pushes, tags moved away or deleted, and deleted manifests queue what may now be garbage', async () => {
      const r = repo();
      const layer = { digest: digest(), size: 7, storageKey: `blobs/k/${randomUUID()}` };
      await store.commitBlob(r, layer);
      const [image, child, other] = [manifest(), manifest(), manifest()];
      const index = manifest({ mediaType: 'application/vnd.oci.image.index.v1+json' });
      await clearQueues();
      await store.putManifest(r, image, [{ digest: layer.digest, kind: 'blob', size: 7 }], 'v1');
      await store.putManifest(r, child, []);
      await store.putManifest(r, index, [{ digest: child.digest, kind: 'manifest', size: child.size }], 'multi');
      const referrer = manifest({ subjectDigest: image.digest });
      await store.putManifest(r, referrer, []);
      assert.deepEqual((await queued(r)).manifests, [child.digest, referrer.digest].sort(), 'pushed untagged');
      await clearQueues();
      await store.putManifest(r, other, [], 'v1');
      assert.deepEqual((await queued(r)).manifests, [image.digest], 'the tag moved away from it');
      await store.putManifest(r, image, [{ digest: layer.digest, kind: 'blob', size: 7 }], 'v1');
      await clearQueues();
      assert.equal(await store.deleteTag(r, 'multi'), true);
      assert.deepEqual((await queued(r)).manifests, [index.digest], 'its tag was deleted');
      await clearQueues();
      await store.deleteManifest(r, index.digest);
      assert.deepEqual((await queued(r)).manifests, [child.digest], "an index's children");
      await clearQueues();
      await store.deleteManifest(r, image.digest);
      assert.deepEqual(await queued(r), { blobs: [layer.digest], manifests: [referrer.digest] }, 'its blobs and its referrers');
    });

    it('blobs: a copy is replaced only if the record still points at the damaged one', async () => {
      const r = repo();
      const blob = { digest: digest(), size: 3, storageKey: 'blobs/k/one' };
      await store.commitBlob(r, blob);
      assert.equal(await store.replaceBlobCopy(blob.digest, 'blobs/k/elsewhere', 'blobs/k/two'), false);
      assert.equal(await store.replaceBlobCopy(blob.digest, 'blobs/k/one', 'blobs/k/two'), true);
      assert.equal((await store.findRepositoryBlob(r, blob.digest))?.storageKey, 'blobs/k/two');
    });

    it('uploads: capped per owner, claimed by one writer, advanced only under a live claim', async () => {
      const r = repo();
      const owner = `owner-${randomUUID()}`;
      const first = session(r, owner);
      assert.equal(await store.createUpload(first, 2), true);
      assert.equal(await store.createUpload(session(r, owner), 2), true);
      assert.equal(await store.createUpload(session(r, owner), 2), false, 'the third session is over the cap');
      assert.equal(await store.createUpload(session(r, 'someone-else'), 2), true);
      assert.equal((await store.getUpload(repo(), first.id)), undefined, 'a session belongs to its repository');

      const until = Date.now() + 60_000;
      assert.equal(await store.claimUpload(first.id, 0, 'w1', until), true);
      assert.equal(await store.claimUpload(first.id, 0, 'w2', until), false, 'one writer at a time');
      assert.equal(await store.advanceUpload(first.id, 'w2', 0, { name: 'p-w2', size: 5 }), false, 'not without the claim');
      assert.equal(await store.advanceUpload(first.id, 'w1', 0, { name: 'p-w1', size: 5 }), true);
      assert.equal(await store.claimUpload(first.id, 0, 'w2', until), false, 'a claim at a stale size fails');
      assert.equal(await store.claimUpload(first.id, 5, 'w2', until), true, 'advancing released the claim');
      await store.renewUploadClaim(first.id, 'w2', until + 1000);
      await store.releaseUploadClaim(first.id, 'w2');
      const read = await store.getUpload(r, first.id);
      assert.equal(read?.size, 5);
      assert.deepEqual(read?.parts, [{ name: 'p-w1', size: 5 }]);

      const idle = await store.listUploadsIdleSince(Date.now() + 1000, 1000);
      assert.ok(idle.some((upload) => upload.id === first.id));
      assert.equal(await store.claimUpload(first.id, 5, 'sweeper', until), true);
      assert.ok(!(await store.listUploadsIdleSince(Date.now() + 1000, 1000)).some((upload) => upload.id === first.id), 'a claimed session is not idle');
      assert.equal(await store.uploadExists(first.id), true);
      assert.equal(await store.deleteUpload(first.id), true);
      assert.equal(await store.uploadExists(first.id), false);
      assert.equal(await store.deleteUpload(first.id), false);
    });

    it('a blob commit ends its upload session in the same transaction', async () => {
      const r = repo();
      const upload = session(r);
      await store.createUpload(upload, 10);
      assert.equal(await store.claimUpload(upload.id, 0, 'committer', Date.now() + 60_000), true);
      await store.commitBlob(r, { digest: digest(), size: 1, storageKey: `blobs/k/${upload.id}` }, { id: upload.id, writer: 'committer', size: 0 });
      assert.equal(await store.uploadExists(upload.id), false);
    });

    it('a blob commit whose session is no longer its own commits nothing and leaves the session', async () => {
      const r = repo();
      const upload = session(r);
      await store.createUpload(upload, 10);
      const blob = { digest: digest(), size: 1, storageKey: `blobs/k/${upload.id}` };
      // Its claim lapsed (a stalled request) and another request took the session.
      assert.equal(await store.claimUpload(upload.id, 0, 'stalled', Date.now() - 1), true);
      assert.equal(await store.claimUpload(upload.id, 0, 'newer', Date.now() + 60_000), true);
      await assert.rejects(store.commitBlob(r, blob, { id: upload.id, writer: 'stalled', size: 0 }), UploadSessionLostError);
      assert.equal(await store.findRepositoryBlob(r, blob.digest), undefined, 'nothing linked');
      assert.equal(await store.uploadExists(upload.id), true, 'the session goes on for its new holder');
      // The newer request moved it on: a commit that saw it at its old size is refused too.
      assert.equal(await store.advanceUpload(upload.id, 'newer', 0, { name: 'p', size: 5 }, true), true);
      await assert.rejects(store.commitBlob(r, blob, { id: upload.id, writer: 'newer', size: 0 }), UploadSessionLostError);
      await store.commitBlob(r, { ...blob, size: 5 }, { id: upload.id, writer: 'newer', size: 5 });
      assert.equal(await store.uploadExists(upload.id), false);
    });

    it('manifests: stored with their tag only when every dependency is present at its size', async () => {
      const r = repo();
      const layer = { digest: digest(), size: 7, storageKey: `blobs/k/${randomUUID()}` };
      await store.commitBlob(r, layer);
      const missing = { digest: digest(), kind: 'blob' as const, size: 1 };
      const image = manifest();
      const refused = await store.putManifest(r, image, [{ digest: layer.digest, kind: 'blob', size: 7 }, missing], 'v1');
      assert.deepEqual(refused.problems.map((problem) => problem.problem), ['missing']);
      assert.equal(await store.getManifest(r, { digest: image.digest }), undefined, 'nothing stored');
      const wrongSize = await store.putManifest(r, image, [{ digest: layer.digest, kind: 'blob', size: 8 }], 'v1');
      assert.deepEqual(wrongSize.problems, [{ dependency: { digest: layer.digest, kind: 'blob', size: 8 }, problem: 'size-mismatch', actualSize: 7 }]);

      const { journal, seen } = recordingJournal();
      assert.deepEqual(await store.putManifest(r, image, [{ digest: layer.digest, kind: 'blob', size: 7 }], 'v1', { journal }), { problems: [] });
      const read = await store.getManifest(r, { tag: 'v1' });
      assert.equal(read?.digest, image.digest);
      assert.ok(read?.payload.equals(image.payload));
      assert.deepEqual(seen, [
        { type: 'manifest.pushed', repository: r, digest: image.digest, tag: 'v1' },
        { type: 'tag.created', repository: r, tag: 'v1', digest: image.digest },
      ]);
    });

    it('tags: moved with the old digest in the journal; an immutable tag never moves', async () => {
      const r = repo();
      const [one, two] = [manifest(), manifest()];
      await store.putManifest(r, one, [], 'latest');
      const { journal, seen } = recordingJournal();
      await store.putManifest(r, two, [], 'latest', { journal });
      assert.deepEqual(seen.at(-1), { type: 'tag.moved', repository: r, tag: 'latest', from: one.digest, to: two.digest });
      await store.putManifest(r, one, [], 'v1', { immutableTag: true });
      const refused = await store.putManifest(r, two, [], 'v1', { immutableTag: true });
      assert.equal(refused.tagPointsElsewhere, one.digest);
      assert.equal((await store.getManifest(r, { tag: 'v1' }))?.digest, one.digest);
      assert.deepEqual(await store.putManifest(r, one, [], 'v1', { immutableTag: true }), { problems: [] }, 'the identical push again succeeds');
    });

    it('deletes: a protected tag keeps its manifest; a deletion takes its tags along, in the journal', async () => {
      const r = repo();
      const image = manifest();
      await store.putManifest(r, image, [], 'v1');
      await store.putManifest(r, image, [], 'stable');
      assert.deepEqual(await store.deleteManifest(r, image.digest, { protectedTag: (tag) => tag === 'stable' }), { deleted: false, protectedBy: 'stable' });
      const { journal, seen } = recordingJournal();
      assert.equal(await store.deleteTag(r, 'v1', journal), true);
      assert.equal(await store.deleteTag(r, 'v1'), false);
      assert.deepEqual(await store.deleteManifest(r, image.digest, { journal }), { deleted: true });
      assert.deepEqual(seen, [
        { type: 'tag.deleted', repository: r, tag: 'v1', digest: image.digest },
        { type: 'tag.deleted', repository: r, tag: 'stable', digest: image.digest },
        { type: 'manifest.deleted', repository: r, digest: image.digest, tags: ['stable'] },
      ]);
      assert.equal(await store.getManifest(r, { tag: 'stable' }), undefined);
      assert.deepEqual(await store.deleteManifest(r, image.digest), { deleted: false });
    });

    it('a journal that fails rolls its change back', async () => {
      const r = repo();
      const [one, two] = [manifest(), manifest()];
      await store.putManifest(r, one, [], 'v1');
      const failing = () => {
        throw new Error('the audit log refused');
      };
      await assert.rejects(store.putManifest(r, two, [], 'v1', { journal: failing }), /refused/);
      assert.equal((await store.getManifest(r, { tag: 'v1' }))?.digest, one.digest);
      assert.equal(await store.getManifest(r, { digest: two.digest }), undefined);
      await assert.rejects(store.deleteTag(r, 'v1', failing), /refused/);
      assert.equal((await store.getManifest(r, { tag: 'v1' }))?.digest, one.digest);
    });

    it('listings: tags and repositories in lexical order, page by page, within namespaces', async () => {
      const base = repo();
      const image = manifest();
      for (const tag of ['b', 'a', 'c', 'a-1']) await store.putManifest(base, image, [], tag);
      assert.deepEqual(await store.listTags(base, { limit: 2 }), ['a', 'a-1']);
      assert.deepEqual(await store.listTags(base, { limit: 10, last: 'a-1' }), ['b', 'c']);
      assert.equal(await store.listTags(repo(), { limit: 10 }), undefined, 'an unknown repository');
      const team = `ns-${randomUUID().slice(0, 8)}`;
      for (const name of [`${team}/x`, `${team}/y/z`, `${team}x/w`]) await store.putManifest(name, manifest(), []);
      assert.deepEqual(await store.listRepositories({ limit: 10, namespaces: [team] }), [`${team}/x`, `${team}/y/z`]);
      assert.deepEqual(await store.listRepositories({ limit: 1, last: `${team}/x`, namespaces: [team] }), [`${team}/y/z`]);
      assert.equal(await store.repositoryExists(`${team}/x`), true);
      assert.equal(await store.repositoryExists(`${team}/nope`), false);
    });

    it('referrers: newest first, filtered by artifact type, paged by entries and by bytes', async () => {
      const r = repo();
      const subject = manifest();
      await store.putManifest(r, subject, []);
      const made: string[] = [];
      for (let i = 0; i < 5; i++) {
        const referrer = manifest({ subjectDigest: subject.digest, artifactType: i % 2 === 0 ? 'application/x-sig' : 'application/x-sbom', annotations: { n: String(i) } });
        await store.putManifest(r, referrer, [{ digest: subject.digest, kind: 'manifest', size: subject.size }]);
        made.push(referrer.digest);
      }
      const all = await store.listReferrers(r, subject.digest, { maxEntries: 10, maxBytes: 1 << 20 });
      assert.deepEqual(all.referrers.map((referrer) => referrer.digest), [...made].reverse());
      assert.equal(all.next, undefined);
      const sigs = await store.listReferrers(r, subject.digest, { artifactType: 'application/x-sig', maxEntries: 10, maxBytes: 1 << 20 });
      assert.equal(sigs.referrers.length, 3);
      const page = await store.listReferrers(r, subject.digest, { maxEntries: 2, maxBytes: 1 << 20 });
      assert.equal(page.referrers.length, 2);
      const rest = await store.listReferrers(r, subject.digest, { maxEntries: 10, maxBytes: 1 << 20, before: page.next });
      assert.deepEqual([...page.referrers, ...rest.referrers].map((referrer) => referrer.digest), [...made].reverse());
      const tight = await store.listReferrers(r, subject.digest, { maxEntries: 10, maxBytes: 1 });
      assert.equal(tight.referrers.length, 1, 'at least one per page, whatever the budget');
    });

    it('is healthy while the database answers', async () => {
      await store.checkHealth();
    });
  });
}
