// MetadataStore on knex: the same code serves SQLite (embedded) and PostgreSQL.
import type { Knex } from 'knex';
import { CompiledQuery } from './compiled-query.js';
import { UploadSessionLostError, withDatabase } from './errors.js';
import { BLOB_REVIEWS, enqueueBlobReviews, enqueueManifestReviews, MANIFEST_REVIEWS, STORAGE_DELETES, touchBlobReviews, transactionWithRetry } from './gc-queue.js';
import { appendAuditEvents } from './knex-auth-stores.js';
import { type BlobRow, toBlob, toUpload, type UploadRow } from './rows.js';
import { SqliteDirect } from './sqlite-direct.js';
import * as hot from './sqlite-hot-path.js';
import type { UploadPart } from '../storage/blob-store.js';
import type {
  BlobRecord,
  ChangeJournal,
  FinishedUpload,
  DependencyProblem,
  ManifestDependency,
  ManifestLookup,
  ManifestRecord,
  MetadataStore,
  PageRequest,
  Referrer,
  ReferrersPage,
  RegistryChange,
  UploadRecord,
} from './store.js';

interface ManifestRow {
  id: number;
  digest: string;
  media_type: string;
  artifact_type: string | null;
  subject_digest: string | null;
  annotations: string | null;
  size: number;
  payload: Buffer;
}

const parseAnnotations = (text: string | null): Record<string, string> | undefined =>
  text ? (JSON.parse(text) as Record<string, string>) : undefined;

/** The columns toManifest reads. */
const MANIFEST_COLUMNS = ['digest', 'media_type', 'artifact_type', 'subject_digest', 'annotations', 'size', 'payload'] as const;
type ManifestLookupRow = Omit<ManifestRow, 'id'>;

const toManifest = (row: Omit<ManifestRow, 'id'>): ManifestRecord => ({
  digest: row.digest,
  mediaType: row.media_type,
  artifactType: row.artifact_type ?? undefined,
  subjectDigest: row.subject_digest ?? undefined,
  annotations: parseAnnotations(row.annotations),
  size: row.size,
  payload: row.payload,
});

/** JSON of a referrer descriptor besides its variable-length fields, for the page byte budget. */
const DESCRIPTOR_OVERHEAD = 128;
/**
 * How long a key an API delete put in the storage-delete outbox is left to the request that
 * deletes its bytes at once, before the garbage collector takes it over.
 */
const EAGER_DELETE_LEASE_MS = 5 * 60_000;

/** Thrown inside a transaction to roll a push back: its immutable tag points at another manifest. */
class TagRefused extends Error {
  constructor(readonly current: string) {
    super('the tag is immutable and points at another manifest');
  }
}

/** Thrown inside a transaction to roll it back and report why. */
class RolledBack extends Error {
  constructor(readonly problems: DependencyProblem[]) {
    super('manifest dependencies are not satisfied');
  }
}

/**
 * Deletes a manifest row. Its tags and references go with it (ON DELETE CASCADE), and so do the
 * results of verifying it as a signature (a cosign `.sig` manifest's layers are `<digest>#<n>`, a
 * bundle referrer is its digest): a deleted signature no longer vouches for the image it signed.
 * For the registry's deletes and the garbage collector's alike.
 */
export async function removeManifest(trx: Knex.Transaction, repositoryId: number, manifest: { id: number; digest: string }): Promise<void> {
  const { digest } = manifest;
  await trx('manifests').where({ id: manifest.id }).delete();
  await trx('signature_verifications')
    .whereIn('manifest_id', trx('manifests').where({ repository_id: repositoryId }).select('id'))
    .whereIn('format', ['cosign', 'sigstore-bundle'])
    .where((query) => void query.where('signature_ref', digest).orWhere('signature_ref', 'like', `${digest}#%`))
    .delete();
}

export class KnexMetadataStore implements MetadataStore {
  private readonly isPostgres: boolean;
  /** SQLite's path around knex for the methods on every upload's way (sqlite-direct.ts). */
  private readonly direct: SqliteDirect | undefined;
  private readonly manifestByTag: CompiledQuery<'repository' | 'tag', ManifestLookupRow>;
  private readonly manifestByDigest: CompiledQuery<'repository' | 'digest', ManifestLookupRow>;

  constructor(private readonly db: Knex) {
    this.isPostgres = db.client.config.client === 'pg';
    this.direct = SqliteDirect.of(db);
    // Written from the tag's side so SQLite walks unique indexes (repository name → tag →
    // manifest). The columns are named, so a column a later migration adds cannot change the
    // result type of the plan a running server holds on PostgreSQL.
    const columns = MANIFEST_COLUMNS.map((column) => `m.${column}`);
    this.manifestByTag = new CompiledQuery(db, 'portcullis-manifest-by-tag', ['repository', 'tag'], (query, slot) =>
      query('tags as t')
        .join('repositories as r', 'r.id', 't.repository_id')
        .join('manifests as m', 'm.id', 't.manifest_id')
        .where({ 'r.name': slot('repository'), 't.name': slot('tag') })
        .first(...columns),
    );
    this.manifestByDigest = new CompiledQuery(db, 'portcullis-manifest-by-digest', ['repository', 'digest'], (query, slot) =>
      query('manifests as m')
        .join('repositories as r', 'r.id', 'm.repository_id')
        .where({ 'r.name': slot('repository'), 'm.digest': slot('digest') })
        .first(...columns),
    );
  }

  /** Runs a unit of work, reporting failures as the metadata errors (unavailable, unstorable value). */
  private run<T>(work: (db: Knex) => Promise<T>): Promise<T> {
    return withDatabase(() => work(this.db));
  }

  /** Runs `work` on SQLite's direct path; undefined on PostgreSQL, where the knex version runs. */
  private directly<T>(work: (direct: SqliteDirect) => Promise<T>): Promise<T> | undefined {
    const direct = this.direct;
    return direct && withDatabase(() => work(direct));
  }

  private transaction<T>(work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return this.run((db) => transactionWithRetry(db, work));
  }

  /** Row locks where the database has them; SQLite serialises writers by itself. */
  private locked<Q extends Knex.QueryBuilder>(query: Q): Q {
    return this.isPostgres ? (query.forUpdate() as Q) : query;
  }

  /**
   * The lock of a transaction that relies on a row staying (a blob a manifest references, a link
   * being made, a manifest a tag points at): it keeps the row from being deleted (an unlink, the
   * garbage collector's FOR UPDATE) until the transaction ends, without making every push that
   * shares a base layer wait for the others, nor conflicting with updates of other columns.
   */
  private keyShared<Q extends Knex.QueryBuilder>(query: Q): Q {
    return this.isPostgres ? (query.forKeyShare() as Q) : query;
  }

  /** Appends the journal's records of `changes` to the audit log, last in the transaction. */
  private async journal(trx: Knex.Transaction, journal: ChangeJournal | undefined, changes: readonly RegistryChange[]): Promise<void> {
    if (journal && changes.length > 0) await appendAuditEvents(trx, journal(changes));
  }

  private async repositoryId(db: Knex, name: string): Promise<number | undefined> {
    const row = (await db('repositories').where({ name }).first('id')) as { id: number } | undefined;
    return row?.id;
  }

  private async ensureRepository(trx: Knex.Transaction, name: string): Promise<number> {
    await trx('repositories').insert({ name, created_at: Date.now() }).onConflict('name').ignore();
    const id = await this.repositoryId(trx, name);
    if (id === undefined) throw new Error(`repository ${name} vanished inside its own transaction`);
    return id;
  }

  repositoryExists(repository: string): Promise<boolean> {
    return this.run(async (db) => (await this.repositoryId(db, repository)) !== undefined);
  }

  findRepositoryBlob(repository: string, digest: string, options: { touch?: boolean } = {}): Promise<BlobRecord | undefined> {
    const direct = this.directly(async (sqlite) => {
      const row = await sqlite.run((sql) => hot.findRepositoryBlob(sql, repository, digest, options.touch === true));
      if (row && options.touch && Number(row.review_pending) === 1) await sqlite.run((sql) => hot.touchBlobReviews(sql, [digest]));
      return row && toBlob(row);
    });
    return direct ?? this.run(async (db) => {
      const query = db('blobs as b')
        .join('repository_blobs as rb', 'rb.digest', 'b.digest')
        .join('repositories as r', 'r.id', 'rb.repository_id')
        .where({ 'r.name': repository, 'b.digest': digest });
      // One query on the hot path: whether a review is pending comes along, and only then is written.
      if (options.touch) query.select(db.raw(`exists (select 1 from ${BLOB_REVIEWS} gr where gr.digest = b.digest) as review_pending`));
      const row = (await query.first('b.digest', 'b.size', 'b.storage_key', 'b.sealed')) as (BlobRow & { review_pending?: unknown }) | undefined;
      if (row && options.touch && (row.review_pending === true || Number(row.review_pending) === 1)) await touchBlobReviews(db, [digest]);
      return row && toBlob(row);
    });
  }

  touchBlobReviews(digests: readonly string[]): Promise<void> {
    return this.directly((sqlite) => sqlite.run((sql) => hot.touchBlobReviews(sql, digests))) ?? this.run((db) => touchBlobReviews(db, digests));
  }

  /**
   * Restarts graces around a change that stands on its own: the change must not fail because the
   * restart could not be written (the collector re-checks references under lock anyway).
   */
  private async touchQuietly(digests: readonly string[]): Promise<void> {
    if (digests.length > 0) await this.touchBlobReviews(digests).catch(() => undefined);
  }

  commitBlob(repository: string, blob: BlobRecord, finished?: FinishedUpload): Promise<BlobRecord> {
    const committed = this.directly(async (sqlite) => toBlob(await sqlite.transaction((sql) => hot.commitBlob(sql, repository, blob, finished))));
    return (committed ?? this.transaction(async (trx) => {
      if (finished) {
        const ended = await trx('uploads').where({ id: finished.id, writer: finished.writer, size: finished.size }).delete();
        if (ended !== 1) throw new UploadSessionLostError(finished.id);
      }
      const repositoryId = await this.ensureRepository(trx, repository);
      // Hold the digest's row (or create it): a concurrent unlink or collection that removes it
      // either ran before (we insert anew, under our own generation's key) or waits for us (and
      // then sees our link).
      let row: BlobRow | undefined;
      for (let attempt = 0; !row && attempt < 3; attempt++) {
        row = (await this.keyShared(trx('blobs').where({ digest: blob.digest }).first())) as BlobRow | undefined;
        if (!row) {
          await trx('blobs')
            .insert({ digest: blob.digest, size: blob.size, storage_key: blob.storageKey, sealed: true, created_at: Date.now() })
            .onConflict('digest')
            .ignore();
        }
      }
      if (!row) throw new Error(`blob ${blob.digest} could not be recorded`);
      await this.link(trx, repositoryId, blob.digest);
      return toBlob(row);
    })).then(async (stored) => {
      await this.touchQuietly([blob.digest]);
      return stored;
    });
  }

  /** Links a blob into a repository; a new link is queued for review (nothing references it yet). */
  private async link(trx: Knex.Transaction, repositoryId: number, digest: string): Promise<void> {
    const inserted = (await trx('repository_blobs')
      .insert({ repository_id: repositoryId, digest, created_at: Date.now() })
      .onConflict(['repository_id', 'digest'])
      .ignore()
      .returning('digest')) as unknown[];
    if (inserted.length > 0) await enqueueBlobReviews(trx, repositoryId, [digest]);
  }

  replaceBlobCopy(digest: string, from: string, to: string): Promise<boolean> {
    return this.run(async (db) => {
      const updated = await db('blobs').where({ digest, storage_key: from }).update({ storage_key: to, sealed: true });
      return updated === 1;
    });
  }

  markBlobSealed(digest: string, storageKey: string): Promise<void> {
    return this.run(async (db) => {
      await db('blobs').where({ digest, storage_key: storageKey }).update({ sealed: true });
    });
  }

  mountBlob(repository: string, from: string, digest: string): Promise<BlobRecord | undefined> {
    return this.transaction(async (trx) => {
      const row = (await this.keyShared(
        trx('blobs as b')
          .join('repository_blobs as rb', 'rb.digest', 'b.digest')
          .join('repositories as r', 'r.id', 'rb.repository_id')
          .where({ 'r.name': from, 'b.digest': digest })
          .first('b.digest', 'b.size', 'b.storage_key', 'b.sealed'),
      )) as BlobRow | undefined;
      if (!row) return undefined;
      const repositoryId = await this.ensureRepository(trx, repository);
      await this.link(trx, repositoryId, digest);
      return toBlob(row);
    }).then(async (mounted) => {
      if (mounted) await this.touchQuietly([digest]);
      return mounted;
    });
  }

  unlinkBlob(repository: string, digest: string, journal?: ChangeJournal): Promise<{ unlinked: boolean; orphan?: BlobRecord }> {
    return this.transaction(async (trx) => {
      const repositoryId = await this.repositoryId(trx, repository);
      if (repositoryId === undefined) return { unlinked: false };
      const blob = (await this.locked(trx('blobs').where({ digest }).first())) as BlobRow | undefined;
      if (!blob) return { unlinked: false };
      const removed = await trx('repository_blobs').where({ repository_id: repositoryId, digest }).delete();
      if (removed === 0) return { unlinked: false };
      await trx(BLOB_REVIEWS).where({ repository_id: repositoryId, digest }).delete();
      const stillLinked = await trx('repository_blobs').where({ digest }).first('digest');
      if (!stillLinked) {
        // The row goes first and its key into the outbox, in one transaction: a crash before the
        // bytes are deleted leaks them to the collector, never leaves a row pointing at nothing.
        await trx('blobs').where({ digest }).delete();
        const now = Date.now();
        await trx(STORAGE_DELETES)
          .insert({ storage_key: blob.storage_key, digest, size: blob.size, enqueued_at: now, not_before: now + EAGER_DELETE_LEASE_MS, attempts: 0 })
          .onConflict('storage_key')
          .ignore();
      }
      await this.journal(trx, journal, [{ type: 'blob.deleted', repository, digest }]);
      return stillLinked ? { unlinked: true } : { unlinked: true, orphan: toBlob(blob) };
    });
  }

  finishStorageDelete(storageKey: string): Promise<void> {
    return this.run(async (db) => {
      await db(STORAGE_DELETES).where({ storage_key: storageKey }).delete();
    });
  }

  createUpload(upload: UploadRecord, maxOpen: number): Promise<boolean> {
    const direct = this.directly((sqlite) => sqlite.transaction((sql) => hot.createUpload(sql, upload, maxOpen)));
    return direct ?? this.transaction(async (trx) => {
      // Serialise session starts per owner across replicas; SQLite has one writer anyway.
      if (this.isPostgres) await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`uploads:${upload.owner}`]);
      const row = (await trx('uploads').where({ owner: upload.owner }).count({ open: '*' }).first()) as { open: number | string } | undefined;
      if (Number(row?.open ?? 0) >= maxOpen) return false;
      await trx('uploads').insert({
        id: upload.id,
        repository: upload.repository,
        size: upload.size,
        parts: JSON.stringify(upload.parts),
        owner: upload.owner,
        created_at: upload.createdAt,
        updated_at: upload.updatedAt,
      });
      return true;
    });
  }

  getUpload(repository: string, id: string): Promise<UploadRecord | undefined> {
    const direct = this.directly(async (sqlite) => {
      const row = await sqlite.run((sql) => hot.getUpload(sql, repository, id));
      return row && toUpload(row);
    });
    return direct ?? this.run(async (db) => {
      const row = (await db('uploads').where({ id, repository }).first()) as UploadRow | undefined;
      return row && toUpload(row);
    });
  }

  claimUpload(id: string, size: number, writer: string, until: number): Promise<boolean> {
    const direct = this.directly((sqlite) => sqlite.run((sql) => hot.claimUpload(sql, id, size, writer, until)));
    return direct ?? this.run(async (db) => {
      const claimed = await db('uploads')
        .where({ id, size })
        .andWhere((free) => free.whereNull('writer').orWhere('writer_until', '<', Date.now()))
        .update({ writer, writer_until: until });
      return claimed === 1;
    });
  }

  renewUploadClaim(id: string, writer: string, until: number): Promise<void> {
    return this.run(async (db) => {
      await db('uploads').where({ id, writer }).update({ writer_until: until });
    });
  }

  advanceUpload(id: string, writer: string, from: number, part: UploadPart, keepClaim = false): Promise<boolean> {
    return this.transaction(async (trx) => {
      const row = (await this.locked(trx('uploads').where({ id, writer, size: from }).first('parts'))) as
        | Pick<UploadRow, 'parts'>
        | undefined;
      if (!row) return false;
      const parts = [...(row.parts ? (JSON.parse(row.parts) as UploadPart[]) : []), part];
      const release = keepClaim ? {} : { writer: null, writer_until: null };
      const updated = await trx('uploads')
        .where({ id, writer, size: from })
        .update({ size: from + part.size, parts: JSON.stringify(parts), updated_at: Date.now(), ...release });
      return updated === 1;
    });
  }

  releaseUploadClaim(id: string, writer: string): Promise<void> {
    return this.run(async (db) => {
      await db('uploads').where({ id, writer }).update({ writer: null, writer_until: null });
    });
  }

  deleteUpload(id: string): Promise<boolean> {
    return this.run(async (db) => (await db('uploads').where({ id }).delete()) > 0);
  }

  listUploadsIdleSince(before: number, limit: number): Promise<UploadRecord[]> {
    return this.run(async (db) => {
      const rows = (await db('uploads')
        .where('updated_at', '<', before)
        .andWhere((idle) => idle.whereNull('writer').orWhere('writer_until', '<', Date.now()))
        .orderBy('updated_at')
        .limit(limit)) as UploadRow[];
      return rows.map(toUpload);
    });
  }

  uploadExists(id: string): Promise<boolean> {
    return this.run(async (db) => (await db('uploads').where({ id }).first('id')) !== undefined);
  }

  getManifest(repository: string, lookup: ManifestLookup): Promise<ManifestRecord | undefined> {
    return this.run(async () => {
      // The hottest query of a registry: every pull starts with it.
      const row =
        'tag' in lookup
          ? await this.manifestByTag.first({ repository, tag: lookup.tag })
          : await this.manifestByDigest.first({ repository, digest: lookup.digest });
      return row && toManifest(row);
    });
  }

  putManifest(
    repository: string,
    manifest: ManifestRecord,
    dependencies: ManifestDependency[],
    tag?: string,
    options: { immutableTag?: boolean; journal?: ChangeJournal; taggedBy?: string | undefined } = {},
  ): Promise<{ problems: DependencyProblem[]; tagPointsElsewhere?: string }> {
    // Before the transaction, so it holds no review row while it waits for anything: a collector
    // about to look at these links finds them fresh and leaves them to this push.
    const restart = this.touchQuietly(dependencies.filter((d) => d.kind === 'blob').map((d) => d.digest));
    return restart.then(() => this.transaction(async (trx) => {
      const repositoryId = await this.ensureRepository(trx, repository);
      const problems = await this.checkDependencies(trx, repositoryId, dependencies);
      if (problems.length > 0) throw new RolledBack(problems);
      const id = await this.storeManifest(trx, repositoryId, manifest);
      const unique = new Map(dependencies.map((d) => [d.digest, d]));
      if (unique.size > 0) {
        const rows = [...unique.values()].map((d) => ({ manifest_id: id, digest: d.digest, kind: d.kind }));
        for (let i = 0; i < rows.length; i += 200) {
          await trx('manifest_references').insert(rows.slice(i, i + 200)).onConflict(['manifest_id', 'digest']).ignore();
        }
      }
      const changes: RegistryChange[] = [{ type: 'manifest.pushed', repository, digest: manifest.digest, tag }];
      if (tag !== undefined) {
        const moved = await this.pointTag(trx, repositoryId, tag, { id, digest: manifest.digest }, options.immutableTag === true, options.taggedBy);
        if (moved === 'created') changes.push({ type: 'tag.created', repository, tag, digest: manifest.digest });
        else if (moved !== 'unchanged') {
          changes.push({ type: 'tag.moved', repository, tag, from: moved.from, to: manifest.digest });
          await enqueueManifestReviews(trx, repositoryId, [moved.from]); // it may have lost its last tag
        }
      } else {
        await enqueueManifestReviews(trx, repositoryId, [manifest.digest]); // pushed untagged
      }
      await this.journal(trx, options.journal, changes);
      return { problems: [] };
    })).catch((error: unknown) => {
      if (error instanceof RolledBack) return { problems: error.problems };
      if (error instanceof TagRefused) return { problems: [], tagPointsElsewhere: error.current };
      throw error;
    });
  }

  /**
   * Stores a manifest (or finds it stored) and holds its row for the rest of the transaction, so
   * that the references and tag written next find it. A garbage collector that is deleting the
   * same manifest at this moment finishes first; the manifest is then stored anew.
   */
  private async storeManifest(trx: Knex.Transaction, repositoryId: number, manifest: ManifestRecord): Promise<number> {
    for (let attempt = 0; attempt < 3; attempt++) {
      await trx('manifests')
        .insert({
          repository_id: repositoryId,
          digest: manifest.digest,
          media_type: manifest.mediaType,
          artifact_type: manifest.artifactType ?? null,
          subject_digest: manifest.subjectDigest ?? null,
          annotations: manifest.annotations ? JSON.stringify(manifest.annotations) : null,
          size: manifest.size,
          payload: manifest.payload,
          created_at: Date.now(),
        })
        .onConflict(['repository_id', 'digest'])
        .ignore();
      const row = (await this.keyShared(trx('manifests').where({ repository_id: repositoryId, digest: manifest.digest }).first('id'))) as
        | { id: number }
        | undefined;
      if (row) return row.id;
    }
    throw new Error(`manifest ${manifest.digest} could not be stored`);
  }

  /**
   * Locks a tag's row and reads the digest it points at. The row is locked alone: PostgreSQL
   * re-checks a locked row that a concurrent move changed, but not a joined row, so a join would
   * lose a tag just moved to a manifest pushed meanwhile. The manifest is read after the lock.
   */
  private async lockedTagTarget(trx: Knex.Transaction, repositoryId: number, tag: string): Promise<{ digest: string } | undefined> {
    const row = (await this.locked(trx('tags').where({ repository_id: repositoryId, name: tag }).first('manifest_id'))) as { manifest_id: number } | undefined;
    if (!row) return undefined;
    return (await trx('manifests').where({ id: row.manifest_id }).first('digest')) as { digest: string } | undefined;
  }

  /**
   * Points a tag at a manifest: creates it, or moves it (an immutable one never moves: TagRefused
   * rolls the push back). Creation is an insert that does nothing when the row exists; otherwise
   * the row is locked and read, so of two pushes at once the second waits for the first and sees
   * where the first left the tag.
   */
  private async pointTag(
    trx: Knex.Transaction,
    repositoryId: number,
    tag: string,
    manifest: { id: number; digest: string },
    immutable: boolean,
    taggedBy: string | undefined,
  ): Promise<'created' | 'unchanged' | { from: string }> {
    const updatedBy = taggedBy ? taggedBy.slice(0, 255) : null; // nobody named (anonymous): none
    const inserted = (await trx('tags')
      .insert({ repository_id: repositoryId, name: tag, manifest_id: manifest.id, updated_at: Date.now(), updated_by: updatedBy })
      .onConflict(['repository_id', 'name'])
      .ignore()
      .returning('manifest_id')) as unknown[];
    if (inserted.length > 0) return 'created';
    const current = await this.lockedTagTarget(trx, repositoryId, tag);
    if (!current) throw new Error(`tag ${tag} vanished inside its own transaction`);
    if (current.digest === manifest.digest) return 'unchanged';
    if (immutable) throw new TagRefused(current.digest);
    await trx('tags').where({ repository_id: repositoryId, name: tag }).update({ manifest_id: manifest.id, updated_at: Date.now(), updated_by: updatedBy });
    return { from: current.digest };
  }

  private async checkDependencies(
    trx: Knex.Transaction,
    repositoryId: number,
    dependencies: ManifestDependency[],
  ): Promise<DependencyProblem[]> {
    const blobs = dependencies.filter((d) => d.kind === 'blob');
    const manifests = dependencies.filter((d) => d.kind === 'manifest');
    const sizes = new Map<string, number>();
    // Held (FOR KEY SHARE) until the manifest and its references are stored: the garbage
    // collector's FOR UPDATE on a blob row or link then waits for this push, or this push waits for
    // the collector and finds the link gone. Locked in digest order, like every locker of blobs.
    for (let i = 0; i < blobs.length; i += 500) {
      const rows = (await this.keyShared(
        trx('blobs as b')
          .join('repository_blobs as rb', 'rb.digest', 'b.digest')
          .where('rb.repository_id', repositoryId)
          .whereIn(
            'b.digest',
            blobs.slice(i, i + 500).map((d) => d.digest),
          )
          .orderBy('b.digest')
          .select('b.digest', 'b.size'),
      )) as { digest: string; size: number | string }[];
      for (const row of rows) sizes.set(row.digest, Number(row.size));
    }
    for (let i = 0; i < manifests.length; i += 500) {
      const rows = (await this.keyShared(
        trx('manifests')
          .where('repository_id', repositoryId)
          .whereIn(
            'digest',
            manifests.slice(i, i + 500).map((d) => d.digest),
          )
          .orderBy('digest')
          .select('digest', 'size'),
      )) as { digest: string; size: number }[];
      for (const row of rows) sizes.set(row.digest, Number(row.size));
    }
    const problems: DependencyProblem[] = [];
    for (const dependency of dependencies) {
      const actual = sizes.get(dependency.digest);
      if (actual === undefined) problems.push({ dependency, problem: 'missing' });
      else if (actual !== dependency.size) problems.push({ dependency, problem: 'size-mismatch', actualSize: actual });
    }
    return problems;
  }

  deleteManifest(
    repository: string,
    digest: string,
    options: { protectedTag?: ((tag: string) => boolean) | undefined; journal?: ChangeJournal } = {},
  ): Promise<{ deleted: boolean; protectedBy?: string }> {
    return this.transaction(async (trx) => {
      const repositoryId = await this.repositoryId(trx, repository);
      if (repositoryId === undefined) return { deleted: false };
      const manifest = (await this.locked(trx('manifests').where({ repository_id: repositoryId, digest }).first('id'))) as { id: number } | undefined;
      if (!manifest) return { deleted: false };
      const tags = ((await this.locked(trx('tags').where({ manifest_id: manifest.id }).orderBy('name').select('name'))) as { name: string }[]).map((row) => row.name);
      const protectedBy = options.protectedTag && tags.find(options.protectedTag);
      if (protectedBy !== undefined) return { deleted: false, protectedBy };
      // What it leaves behind may now be garbage: read before the cascade removes the references.
      const references = (await trx('manifest_references').where({ manifest_id: manifest.id }).select('digest', 'kind')) as { digest: string; kind: string }[];
      const referrers = (await trx('manifests').where({ repository_id: repositoryId, subject_digest: digest }).pluck('digest')) as string[];
      await removeManifest(trx, repositoryId, { id: manifest.id, digest });
      // Queues last, in the one order every transaction takes them (src/metadata/gc-queue.ts).
      await enqueueBlobReviews(trx, repositoryId, references.filter((r) => r.kind === 'blob').map((r) => r.digest));
      await trx(MANIFEST_REVIEWS).where({ repository_id: repositoryId, digest }).delete();
      await enqueueManifestReviews(trx, repositoryId, [...references.filter((r) => r.kind === 'manifest').map((r) => r.digest), ...referrers]);
      await this.journal(trx, options.journal, [
        ...tags.map((tag): RegistryChange => ({ type: 'tag.deleted', repository, tag, digest })),
        { type: 'manifest.deleted', repository, digest, tags },
      ]);
      return { deleted: true };
    });
  }

  deleteTag(repository: string, tag: string, journal?: ChangeJournal): Promise<boolean> {
    return this.transaction(async (trx) => {
      const repositoryId = await this.repositoryId(trx, repository);
      if (repositoryId === undefined) return false;
      const current = await this.lockedTagTarget(trx, repositoryId, tag);
      if (!current) return false;
      await trx('tags').where({ repository_id: repositoryId, name: tag }).delete();
      await enqueueManifestReviews(trx, repositoryId, [current.digest]); // it may have lost its last tag
      await this.journal(trx, journal, [{ type: 'tag.deleted', repository, tag, digest: current.digest }]);
      return true;
    });
  }

  listTags(repository: string, page: PageRequest): Promise<string[] | undefined> {
    return this.run(async (db) => {
      const repositoryId = await this.repositoryId(db, repository);
      if (repositoryId === undefined) return undefined;
      const query = db('tags').where({ repository_id: repositoryId }).orderBy('name').limit(page.limit).pluck('name');
      if (page.last !== undefined) query.where('name', '>', page.last);
      return (await query) as string[];
    });
  }

  listRepositories(page: PageRequest & { namespaces?: readonly string[] | undefined }): Promise<string[]> {
    return this.run(async (db) => {
      const query = db('repositories').orderBy('name').limit(page.limit).pluck('name');
      if (page.last !== undefined) query.where('name', '>', page.last);
      const { namespaces } = page;
      if (namespaces !== undefined) {
        // `ns` itself, and `ns/…` as a byte range ('/' + 1 is '0'), so the name index is used.
        query.where((within) => {
          for (const namespace of namespaces) {
            within.orWhere('name', namespace).orWhere((below) => below.where('name', '>=', `${namespace}/`).andWhere('name', '<', `${namespace}0`));
          }
        });
      }
      return (await query) as string[];
    });
  }

  listReferrers(repository: string, subject: string, page: ReferrersPage): Promise<{ referrers: Referrer[]; next?: number }> {
    return this.run(async (db) => {
      // First the candidates' sizes only, so a page of huge annotations is never loaded to be cut.
      const query = db('manifests as m')
        .join('repositories as r', 'r.id', 'm.repository_id')
        .where({ 'r.name': repository, 'm.subject_digest': subject })
        .orderBy('m.id', 'desc')
        .limit(page.maxEntries + 1)
        .select('m.id', 'm.digest', 'm.media_type', 'm.artifact_type', db.raw('coalesce(length(m.annotations), 0) as annotations_length'));
      if (page.artifactType !== undefined) query.where('m.artifact_type', page.artifactType);
      if (page.before !== undefined) query.where('m.id', '<', page.before);
      const candidates = (await query) as { id: number; digest: string; media_type: string; artifact_type: string | null; annotations_length: number | string }[];
      let bytes = 0;
      let taken = 0;
      for (const candidate of candidates.slice(0, page.maxEntries)) {
        const cost = DESCRIPTOR_OVERHEAD + candidate.digest.length + candidate.media_type.length + (candidate.artifact_type?.length ?? 0) + Number(candidate.annotations_length);
        if (taken > 0 && bytes + cost > page.maxBytes) break;
        bytes += cost;
        taken++;
      }
      const chosen = candidates.slice(0, taken);
      const rows = (await db('manifests')
        .whereIn('id', chosen.map((c) => c.id))
        .orderBy('id', 'desc')
        .select('id', 'digest', 'media_type', 'artifact_type', 'size', 'annotations')) as Pick<
        ManifestRow,
        'id' | 'digest' | 'media_type' | 'artifact_type' | 'size' | 'annotations'
      >[];
      const referrers = rows.map((row) => ({
        digest: row.digest,
        mediaType: row.media_type,
        artifactType: row.artifact_type ?? undefined,
        size: row.size,
        annotations: parseAnnotations(row.annotations),
      }));
      const more = candidates.length > taken;
      const last = rows[rows.length - 1];
      return more && last ? { referrers, next: last.id } : { referrers };
    });
  }

  checkHealth(): Promise<void> {
    return this.run(async (db) => {
      await db.raw('select 1');
    });
  }

  close(): Promise<void> {
    return this.db.destroy();
  }
}
