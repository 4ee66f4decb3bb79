// GcStore on knex (SQLite and PostgreSQL): the queries of the garbage collector's steps.
import type { Knex } from 'knex';
import { withDatabase } from './errors.js';
import { BLOB_REVIEWS, enqueueBlobReviews, enqueueManifestReviews, isPostgresDb, MANIFEST_REVIEWS, STORAGE_DELETES, transactionWithRetry } from './gc-queue.js';
import type {
  GcQueueFigures,
  GcStore,
  ManifestReviewOptions,
  ReviewBatch,
  ReviewDecision,
  ReviewOptions,
  StorageDelete,
} from './gc-store.js';
import { appendAuditEvents } from './knex-auth-stores.js';
import { removeManifest } from './knex-store.js';
import type { RegistryChange } from './store.js';

interface QueueRow {
  repository_id: number;
  digest: string;
  touched_at: number | string;
  name: string;
}

interface OutboxRow {
  storage_key: string;
  digest: string;
  size: number | string;
  attempts: number | string;
}

/**
 * How long the collector waits for a lock a client holds before it gives up the batch (to be
 * tried again): far below PostgreSQL's deadlock_timeout, so in the rare circle of waits between a
 * collector and a push it is the collector that steps back.
 */
const COLLECTOR_LOCK_TIMEOUT = '500ms';
const CONTENTION_ATTEMPTS = 3;
const ORPHAN_SWEEP = 'orphan_sweep_at';

/** PostgreSQL gave up waiting for a lock (lock_timeout) or broke a deadlock: nothing was changed. */
function isContention(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '55P03' || code === '40P01';
}
/** Keys per IN list (SQLite allows 999 bound values). */
const KEY_CHUNK = 500;

/** Rolls a dry run's transaction back, carrying what it found. */
class DryRun extends Error {
  constructor(readonly batch: ReviewBatch) {
    super('dry run');
  }
}

const toOutbox = (row: OutboxRow): StorageDelete => ({ storageKey: row.storage_key, digest: row.digest, size: Number(row.size), attempts: Number(row.attempts) });

function emptyBatch(): ReviewBatch {
  return { reviewed: 0, deleted: 0, kept: 0, deferred: 0, blobsDeleted: 0, bytesQueued: 0, decisions: [] };
}

/** What the reviews of one transaction queue in turn, written last and in key order. */
class Enqueued {
  private readonly blobs = new Map<number, Set<string>>();
  private readonly manifests = new Map<number, Set<string>>();

  blob(repositoryId: number, digests: Iterable<string>): void {
    add(this.blobs, repositoryId, digests);
  }

  manifest(repositoryId: number, digests: Iterable<string>): void {
    add(this.manifests, repositoryId, digests);
  }

  async write(trx: Knex.Transaction, now: number): Promise<void> {
    for (const [repositoryId, digests] of [...this.blobs].sort(([a], [b]) => a - b)) await enqueueBlobReviews(trx, repositoryId, digests, now);
    for (const [repositoryId, digests] of [...this.manifests].sort(([a], [b]) => a - b)) await enqueueManifestReviews(trx, repositoryId, digests, now);
  }
}

function add(map: Map<number, Set<string>>, key: number, values: Iterable<string>): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  for (const value of values) set.add(value);
}

export class KnexGcStore implements GcStore {
  private readonly isPostgres: boolean;

  constructor(private readonly db: Knex) {
    this.isPostgres = isPostgresDb(db);
  }

  private run<T>(work: (db: Knex) => Promise<T>): Promise<T> {
    return withDatabase(() => work(this.db));
  }

  /**
   * A collector's transaction: it never waits long for a client's lock (PostgreSQL), and steps
   * back when it would (or when it meets a deadlock), to try the batch again a moment later.
   */
  private async collecting<T>(work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.run((db) =>
          transactionWithRetry(db, async (trx) => {
            if (this.isPostgres) await trx.raw(`set local lock_timeout = '${COLLECTOR_LOCK_TIMEOUT}'`);
            return work(trx);
          }),
        );
      } catch (error) {
        if (!isContention(error) || attempt >= CONTENTION_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt + Math.random() * 100));
      }
    }
  }

  /** Locks a row for deletion, or reports why not: it is gone, or a client holds it (PostgreSQL: SKIP LOCKED). */
  private async lockForDelete<R>(query: () => Knex.QueryBuilder): Promise<{ row: R } | 'gone' | 'held'> {
    if (!this.isPostgres) {
      const row = (await query().first()) as R | undefined;
      return row ? { row } : 'gone';
    }
    const row = (await query().forUpdate().skipLocked().first()) as R | undefined;
    if (row) return { row };
    return (await query().first()) ? 'held' : 'gone';
  }

  /** Due rows of a queue, oldest grace first, claimed so that another collector skips them. */
  private async claim(trx: Knex.Transaction, table: string, options: ReviewOptions): Promise<QueueRow[]> {
    const query = trx(`${table} as q`)
      .join('repositories as r', 'r.id', 'q.repository_id')
      .where('q.touched_at', '<=', options.dueBefore)
      .orderBy([{ column: 'q.touched_at' }, { column: 'q.repository_id' }, { column: 'q.digest' }])
      .limit(options.limit)
      .select('q.repository_id', 'q.digest', 'q.touched_at', 'r.name');
    const { after } = options;
    if (after) query.whereRaw('(q.touched_at, q.repository_id, q.digest) > (?, ?, ?)', [after.touchedAt, after.repositoryId, after.digest]);
    if (this.isPostgres) query.forUpdate('q').skipLocked();
    return (await query) as QueueRow[];
  }

  /** Runs one batch of reviews: decides, writes (unless a dry run), and reports. */
  private batch(
    table: string,
    options: ReviewOptions,
    review: (trx: Knex.Transaction, rows: QueueRow[], batch: ReviewBatch, changes: RegistryChange[], enqueued: Enqueued) => Promise<void>,
  ): Promise<ReviewBatch> {
    return this.collecting(async (trx) => {
      const batch = emptyBatch();
      const changes: RegistryChange[] = [];
      const enqueued = new Enqueued();
      const rows = await this.claim(trx, table, options);
      batch.reviewed = rows.length;
      const last = rows[rows.length - 1];
      if (last) batch.last = { touchedAt: Number(last.touched_at), repositoryId: last.repository_id, digest: last.digest };
      await review(trx, rows, batch, changes, enqueued);
      if (options.dryRun) throw new DryRun(batch);
      await enqueued.write(trx, options.now);
      if (options.journal && changes.length > 0) await appendAuditEvents(trx, options.journal(changes));
      return batch;
    }).catch((error: unknown) => {
      if (error instanceof DryRun) return error.batch;
      throw error;
    });
  }

  /** Records a verdict and lets the hook see it (before anything of the batch is written). */
  private async decide(decision: ReviewDecision, batch: ReviewBatch, options: ReviewOptions): Promise<ReviewDecision> {
    batch.decisions.push(decision);
    if (decision.verdict === 'defer') batch.deferred++;
    else if (decision.verdict === 'keep') batch.kept++;
    else if (decision.verdict === 'delete') batch.deleted++;
    await options.onDecision?.(decision);
    return decision;
  }

  /** Settles reviews that are not deletions: kept or gone rows leave the queue, held ones come back later. */
  private async settle(trx: Knex.Transaction, table: string, settled: { row: QueueRow; decision: ReviewDecision }[], options: ReviewOptions): Promise<void> {
    const keys = (verdicts: ReviewDecision['verdict'][]) =>
      settled.filter(({ decision }) => verdicts.includes(decision.verdict)).map(({ row }) => [row.repository_id, row.digest]);
    const dropped = keys(['keep', 'gone', 'delete']);
    const deferred = keys(['defer']);
    for (let i = 0; i < dropped.length; i += KEY_CHUNK / 2) await trx(table).whereIn(['repository_id', 'digest'], dropped.slice(i, i + KEY_CHUNK / 2)).delete();
    for (let i = 0; i < deferred.length; i += KEY_CHUNK / 2) {
      await trx(table).whereIn(['repository_id', 'digest'], deferred.slice(i, i + KEY_CHUNK / 2)).update({ touched_at: options.dueBefore + options.retryAfterMs });
    }
  }

  reviewBlobLinks(options: ReviewOptions): Promise<ReviewBatch> {
    return this.batch(BLOB_REVIEWS, options, async (trx, rows, batch, changes) => {
      if (rows.length === 0) return;
      const digests = [...new Set(rows.map((row) => row.digest))].sort();
      const links = rows.map((row) => [row.repository_id, row.digest]);
      // The blob rows first: every transaction that relies on one holds it (FOR KEY SHARE) or
      // deletes it (FOR UPDATE), so holding it here decides who goes first. Locked in digest order;
      // one a client holds is skipped, never waited for.
      const blobs = await this.lockAll<{ digest: string; storage_key: string; size: number | string }>(
        () => trx('blobs').whereIn('digest', digests).orderBy('digest').select('digest', 'storage_key', 'size'),
        (row) => row.digest,
      );
      const linked = await this.lockAll<{ repository_id: number; digest: string }>(
        () => trx('repository_blobs').whereIn(['repository_id', 'digest'], links).orderBy(['digest', 'repository_id']).select('repository_id', 'digest'),
        (row) => `${row.repository_id} ${row.digest}`,
      );
      const referenced = new Set(
        ((await trx('manifest_references as mr')
          .join('manifests as m', 'm.id', 'mr.manifest_id')
          .whereIn(['m.repository_id', 'mr.digest'], links)
          .distinct('m.repository_id', 'mr.digest')) as { repository_id: number; digest: string }[]).map((row) => `${row.repository_id} ${row.digest}`),
      );

      const settled: { row: QueueRow; decision: ReviewDecision }[] = [];
      for (const row of rows) {
        const link = `${row.repository_id} ${row.digest}`;
        const blob = blobs.get(row.digest) ?? 'gone';
        const held = blob === 'held' ? 'blob' : linked.get(link) === 'held' ? 'link' : undefined;
        const [verdict, reason]: [ReviewDecision['verdict'], string] =
          blob === 'gone' ? ['gone', 'no such blob']
          : held ? ['defer', `a client holds the ${held}`]
          : linked.get(link) === undefined || linked.get(link) === 'gone' ? ['gone', 'not linked']
          : referenced.has(link) ? ['keep', 'referenced']
          : ['delete', 'unreferenced'];
        settled.push({ row, decision: await this.decide({ queue: 'blob-links', repository: row.name, digest: row.digest, verdict, reason }, batch, options) });
      }
      if (options.dryRun) {
        // What a run would free: blobs whose every link goes in this batch and none is left elsewhere.
        await this.countFreed(trx, settled, blobs, batch);
        return;
      }
      await this.settle(trx, BLOB_REVIEWS, settled, options);
      const doomed = settled.filter(({ decision }) => decision.verdict === 'delete').map(({ row }) => row);
      for (let i = 0; i < doomed.length; i += KEY_CHUNK / 2) {
        await trx('repository_blobs').whereIn(['repository_id', 'digest'], doomed.slice(i, i + KEY_CHUNK / 2).map((row) => [row.repository_id, row.digest])).delete();
      }
      for (const row of doomed) changes.push({ type: 'blob.deleted', repository: row.name, digest: row.digest, reason: 'unreferenced' });
      await this.freeUnlinked(trx, doomed, blobs, batch, options.now, options.storageDelayMs ?? 0);
    });
  }

  /**
   * Locks the rows `query` selects FOR UPDATE, skipping those a client holds (PostgreSQL), and
   * says of each asked-for key whether it is locked (its row), held by someone else, or gone.
   */
  private async lockAll<R>(query: () => Knex.QueryBuilder, keyOf: (row: R) => string): Promise<Map<string, { row: R } | 'held' | 'gone'>> {
    const found = new Map<string, { row: R } | 'held' | 'gone'>();
    const locked = (await (this.isPostgres ? query().forUpdate().skipLocked() : query())) as R[];
    for (const row of locked) found.set(keyOf(row), { row });
    if (this.isPostgres) {
      for (const row of (await query()) as R[]) if (!found.has(keyOf(row))) found.set(keyOf(row), 'held');
    }
    return found;
  }

  /**
   * Deletes the blob rows of `doomed` links that no repository links any more (no new link can
   * appear while the blob row is ours: linking holds it first), their keys into the outbox.
   */
  private async freeUnlinked(
    trx: Knex.Transaction,
    doomed: QueueRow[],
    blobs: Map<string, { row: { storage_key: string; size: number | string } } | 'held' | 'gone'>,
    batch: ReviewBatch,
    now: number,
    storageDelayMs: number,
  ): Promise<void> {
    const candidates = [...new Set(doomed.map((row) => row.digest))].sort();
    const stillLinked = new Set<string>();
    for (let i = 0; i < candidates.length; i += KEY_CHUNK) {
      for (const digest of (await trx('repository_blobs').whereIn('digest', candidates.slice(i, i + KEY_CHUNK)).distinct().pluck('digest')) as string[]) stillLinked.add(digest);
    }
    const freed = candidates.filter((digest) => !stillLinked.has(digest));
    if (freed.length === 0) return;
    for (let i = 0; i < freed.length; i += KEY_CHUNK) await trx('blobs').whereIn('digest', freed.slice(i, i + KEY_CHUNK)).delete();
    const outbox = freed.map((digest) => {
      const blob = blobs.get(digest) as { row: { storage_key: string; size: number | string } };
      batch.blobsDeleted++;
      batch.bytesQueued += Number(blob.row.size);
      return { storage_key: blob.row.storage_key, digest, size: blob.row.size, enqueued_at: now, not_before: now + storageDelayMs, attempts: 0 };
    });
    for (let i = 0; i < outbox.length; i += 100) await trx(STORAGE_DELETES).insert(outbox.slice(i, i + 100)).onConflict('storage_key').ignore();
  }

  /** A dry run's count of what the deletions it decided would free. */
  private async countFreed(
    trx: Knex.Transaction,
    settled: { row: QueueRow; decision: ReviewDecision }[],
    blobs: Map<string, { row: { storage_key: string; size: number | string } } | 'held' | 'gone'>,
    batch: ReviewBatch,
  ): Promise<void> {
    const doomed = settled.filter(({ decision }) => decision.verdict === 'delete').map(({ row }) => row);
    const going = new Map<string, number>();
    for (const row of doomed) going.set(row.digest, (going.get(row.digest) ?? 0) + 1);
    for (const [digest, count] of going) {
      const links = Number(((await trx('repository_blobs').where({ digest }).count({ n: '*' }).first()) as { n: number | string }).n);
      const blob = blobs.get(digest);
      if (links === count && blob && typeof blob === 'object') {
        batch.blobsDeleted++;
        batch.bytesQueued += Number(blob.row.size);
      }
    }
  }

  reviewManifests(options: ManifestReviewOptions): Promise<ReviewBatch> {
    return this.batch(MANIFEST_REVIEWS, options, async (trx, rows, batch, changes, enqueued) => {
      for (const row of rows) await this.reviewManifest(trx, row, batch, changes, enqueued, options);
    });
  }

  private async reviewManifest(trx: Knex.Transaction, row: QueueRow, batch: ReviewBatch, changes: RegistryChange[], enqueued: Enqueued, options: ManifestReviewOptions): Promise<void> {
    const settle = async (verdict: ReviewDecision['verdict'], reason: string) => {
      const decision = await this.decide({ queue: 'manifests', repository: row.name, digest: row.digest, verdict, reason }, batch, options);
      if (!options.dryRun) await this.settle(trx, MANIFEST_REVIEWS, [{ row, decision }], options);
    };
    const found = await this.lockForDelete<{ id: number; subject_digest: string | null }>(() =>
      trx('manifests').where({ repository_id: row.repository_id, digest: row.digest }).select('id', 'subject_digest'),
    );
    if (found === 'gone') return settle('gone', 'no such manifest');
    if (found === 'held') return settle('defer', 'a client holds the manifest');
    const manifest = found.row;
    // With the manifest row ours, no tag or reference to it can be added (their foreign keys and
    // pushes hold it first); one being removed right now still counts, and queues a review of its own.
    if (await trx('tags').where({ manifest_id: manifest.id }).first('name')) return settle('keep', 'tagged');
    const inIndex = await trx('manifest_references as mr')
      .join('manifests as parent', 'parent.id', 'mr.manifest_id')
      .where({ 'mr.digest': row.digest, 'parent.repository_id': row.repository_id })
      .first('mr.manifest_id');
    if (inIndex) return settle('keep', 'in an index');
    let reason: string;
    if (manifest.subject_digest !== null) {
      const subject = await trx('manifests').where({ repository_id: row.repository_id, digest: manifest.subject_digest }).first('id');
      if (subject) return settle('keep', 'referrer of a present subject');
      reason = 'orphaned referrer';
    } else {
      if (options.untagged(row.name) === 'keep') return settle('keep', 'untagged, kept by gc.untagged');
      reason = 'untagged';
    }

    await this.decide({ queue: 'manifests', repository: row.name, digest: row.digest, verdict: 'delete', reason }, batch, options);
    if (options.dryRun) return;
    const references = (await trx('manifest_references').where({ manifest_id: manifest.id }).select('digest', 'kind')) as { digest: string; kind: string }[];
    const referrers = (await trx('manifests').where({ repository_id: row.repository_id, subject_digest: row.digest }).pluck('digest')) as string[];
    await removeManifest(trx, row.repository_id, { id: manifest.id, digest: row.digest });
    await trx(MANIFEST_REVIEWS).where({ repository_id: row.repository_id, digest: row.digest }).delete();
    enqueued.blob(row.repository_id, references.filter((r) => r.kind === 'blob').map((r) => r.digest));
    enqueued.manifest(row.repository_id, [...references.filter((r) => r.kind === 'manifest').map((r) => r.digest), ...referrers]);
    changes.push({ type: 'manifest.deleted', repository: row.name, digest: row.digest, tags: [], reason });
  }

  claimStorageDeletes(now: number, limit: number, leaseMs: number): Promise<StorageDelete[]> {
    if (this.isPostgres) {
      return this.run(async (db) => {
        const result = (await db.raw(
          `update ${STORAGE_DELETES} set not_before = ?, attempts = attempts + 1
           where storage_key in (select storage_key from ${STORAGE_DELETES} where not_before <= ? order by not_before limit ? for update skip locked)
           returning storage_key, digest, size, attempts`,
          [now + leaseMs, now, limit],
        )) as { rows: OutboxRow[] };
        return result.rows.map(toOutbox);
      });
    }
    return this.run((db) =>
      transactionWithRetry(db, async (trx) => {
        const rows = (await trx(STORAGE_DELETES).where('not_before', '<=', now).orderBy('not_before').limit(limit).select('storage_key', 'digest', 'size', 'attempts')) as OutboxRow[];
        if (rows.length === 0) return [];
        await trx(STORAGE_DELETES)
          .whereIn('storage_key', rows.map((row) => row.storage_key))
          .update({ not_before: now + leaseMs, attempts: trx.raw('attempts + 1') });
        return rows.map((row) => toOutbox({ ...row, attempts: Number(row.attempts) + 1 }));
      }),
    );
  }

  listStorageDeletes(now: number, limit: number, after?: string): Promise<StorageDelete[]> {
    return this.run(async (db) => {
      const query = db(STORAGE_DELETES).where('not_before', '<=', now).orderBy('storage_key').limit(limit).select('storage_key', 'digest', 'size', 'attempts');
      if (after !== undefined) query.where('storage_key', '>', after);
      return ((await query) as OutboxRow[]).map(toOutbox);
    });
  }

  storageKeysInUse(storageKeys: readonly string[]): Promise<Set<string>> {
    return this.run(async (db) => {
      const inUse = new Set<string>();
      for (let i = 0; i < storageKeys.length; i += KEY_CHUNK) {
        for (const key of (await db('blobs').whereIn('storage_key', storageKeys.slice(i, i + KEY_CHUNK)).pluck('storage_key')) as string[]) inUse.add(key);
      }
      return inUse;
    });
  }

  finishStorageDeletes(storageKeys: readonly string[]): Promise<void> {
    if (storageKeys.length === 0) return Promise.resolve();
    return this.run((db) =>
      transactionWithRetry(db, async (trx) => {
        for (let i = 0; i < storageKeys.length; i += KEY_CHUNK) await trx(STORAGE_DELETES).whereIn('storage_key', storageKeys.slice(i, i + KEY_CHUNK)).delete();
      }),
    );
  }

  unnamedKeys(keys: readonly string[]): Promise<string[]> {
    return this.run(async (db) => {
      const named = new Set<string>();
      for (let i = 0; i < keys.length; i += KEY_CHUNK) {
        const chunk = keys.slice(i, i + KEY_CHUNK);
        for (const key of (await db('blobs').whereIn('storage_key', chunk).pluck('storage_key')) as string[]) named.add(key);
        for (const key of (await db(STORAGE_DELETES).whereIn('storage_key', chunk).pluck('storage_key')) as string[]) named.add(key);
        // The generation of a key is the upload that wrote it: while that session exists, its
        // commit has not linked the bytes yet (the session ends in the linking transaction).
        const generations = new Map(chunk.map((key) => [key.slice(key.lastIndexOf('/') + 1), key]));
        const open = (await db('uploads').whereIn('id', [...generations.keys()]).pluck('id')) as string[];
        for (const id of open) named.add(generations.get(id) as string);
      }
      return keys.filter((key) => !named.has(key));
    });
  }

  claimOrphanSweep(now: number, minIntervalMs: number): Promise<boolean> {
    return this.run(async (db) => {
      const turn = db('gc_state').where({ name: ORPHAN_SWEEP });
      // 0: this collector sweeps now whatever the others did (`portcullis gc`); it still says so.
      if (minIntervalMs > 0) turn.andWhere('value', '<=', now - minIntervalMs);
      return (await turn.update({ value: now })) === 1;
    });
  }

  queueUntaggedManifests(now: number): Promise<number> {
    return this.run((db) =>
      transactionWithRetry(db, async (trx) => {
        const untagged = trx('manifests as m')
          .whereNotExists(trx('tags as t').whereRaw('t.manifest_id = m.id').select(trx.raw('1')))
          .select('m.repository_id', 'm.digest', trx.raw('? as touched_at', [now]));
        await trx.raw(`insert into ${MANIFEST_REVIEWS} (repository_id, digest, touched_at) ${untagged.toQuery()} on conflict (repository_id, digest) do update set touched_at = excluded.touched_at`);
        const counted = trx('manifests as m').whereNotExists(trx('tags as t').whereRaw('t.manifest_id = m.id').select(trx.raw('1')));
        return Number(((await counted.count({ n: '*' }).first()) as { n: number | string }).n);
      }),
    );
  }

  figures(dueBefore: number): Promise<GcQueueFigures> {
    return this.run(async (db) => {
      const count = async (table: string, due: boolean) => {
        const query = db(table).count({ n: '*' }).min({ oldest: 'touched_at' });
        if (due) query.where('touched_at', '<=', dueBefore);
        const row = (await query.first()) as { n: number | string; oldest: number | string | null } | undefined;
        return { n: Number(row?.n ?? 0), oldest: row?.oldest === null || row?.oldest === undefined ? undefined : Number(row.oldest) };
      };
      const [blobReviews, manifestReviews, dueBlobs, dueManifests] = await Promise.all([
        count(BLOB_REVIEWS, false),
        count(MANIFEST_REVIEWS, false),
        count(BLOB_REVIEWS, true),
        count(MANIFEST_REVIEWS, true),
      ]);
      const outbox = (await db(STORAGE_DELETES).count({ n: '*' }).first()) as { n: number | string } | undefined;
      const oldest = [dueBlobs.oldest, dueManifests.oldest].filter((at): at is number => at !== undefined);
      return {
        blobReviews: blobReviews.n,
        manifestReviews: manifestReviews.n,
        storageDeletes: Number(outbox?.n ?? 0),
        dueBlobReviews: dueBlobs.n,
        dueManifestReviews: dueManifests.n,
        ...(oldest.length > 0 ? { oldestDueTouchedAt: Math.min(...oldest) } : {}),
      };
    });
  }
}

