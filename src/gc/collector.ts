// Online garbage collection: one collection is four steps, each idempotent, so a crash anywhere
// leaves work the next run finishes.
//
//   1. manifests   due manifest reviews: an untagged manifest goes where gc.untagged says so,
//                  a referrer whose subject is gone goes; its blobs, children and referrers are
//                  queued for review in turn
//   2. blob-links  due link reviews: a link no manifest of its repository references goes; a
//                  blob row whose last link went goes with it, its key into the outbox
//   3. storage     outbox keys: the bytes are deleted, then the key is forgotten (an hour after
//                  their row at the most, so a backup taken database first finds them)
//   4. orphans     bytes no row names (a crash between a commit and its link), older than the
//                  grace and never younger than an hour; replicas take turns
//
// Reviews are due once their grace is over; a client touching a blob (upload, mount, HEAD,
// manifest PUT) restarts it. The decisions are taken under row locks inside the metadata store
// (src/metadata/knex-gc-store.ts). Hooks let tests pause between and inside steps or crash there;
// production passes none.
import type { Logger } from 'pino';
import type { GcQueueFigures, GcStore, ReviewBatch, ReviewCursor, ReviewDecision, StorageDelete } from '../metadata/gc-store.js';
import type { ChangeJournal } from '../metadata/store.js';
import type { BlobStore, StoredObject } from '../storage/blob-store.js';
import { untaggedPolicy, type GcSettings } from './settings.js';

export type GcStep = 'manifests' | 'blob-links' | 'storage' | 'orphans';

/** Where a collection is, as its hooks see it. */
export type GcPoint =
  /** inside a review transaction: the item's rows are locked and its verdict taken, nothing written yet */
  | { step: 'manifests' | 'blob-links'; at: 'decided'; decision: ReviewDecision }
  /** a batch of reviews committed */
  | { step: 'manifests' | 'blob-links'; at: 'committed'; batch: ReviewBatch }
  /** outbox keys claimed, their bytes not yet deleted */
  | { step: 'storage'; at: 'claimed'; keys: string[] }
  /** one outbox key's bytes deleted, the key not yet forgotten */
  | { step: 'storage'; at: 'bytes-deleted'; key: string }
  /** listed bytes found unnamed and old enough, not yet deleted */
  | { step: 'orphans'; at: 'unnamed'; keys: string[] }
  | { step: 'orphans'; at: 'bytes-deleted'; key: string }
  /** a step finished */
  | { step: GcStep; at: 'done' };

export interface GcHooks {
  /** Awaited at every point: a test pauses here, or throws to crash the collection. */
  at(point: GcPoint): Promise<void> | void;
}

export interface CollectorOptions {
  gc: GcStore;
  store: BlobStore;
  settings: GcSettings;
  log: Logger;
  /** where deletions are recorded, in their transactions (the audit log; see gcJournal) */
  journal?: ChangeJournal;
  hooks?: GcHooks;
  /** the collector's clock (epoch ms) */
  now?: () => number;
  /** rows per review transaction */
  batchSize?: number;
  /** the orphan sweep never deletes bytes younger than this, whatever the grace (a commit links its bytes within it) */
  orphanMinAgeMs?: number;
  /** how long a claimed outbox key is left to its collector before another may take it */
  storageLeaseMs?: number;
  /** a review a client held is due again this much later */
  retryAfterMs?: number;
  /**
   * how long after a blob's row is deleted its bytes may go (default the grace, at most an hour): a
   * backup that copies the database first and the blobs within that time finds every row's bytes
   */
  storageDelayMs?: number;
  /**
   * pause after each batch for this multiple of the batch's duration (0: none), leaving the
   * database to requests: 9 keeps a collection to at most a tenth of the database's time
   */
  pace?: number;
}

export interface CollectOptions {
  /** decide and count, change nothing */
  dryRun?: boolean;
  /**
   * first queue every untagged manifest for review (its grace starting now): after gc.untagged
   * changed to delete where it kept, for manifests whose reviews already settled as kept
   */
  queueUntagged?: boolean;
  /**
   * sweep storage for unnamed bytes only when no collector did for this long (replicas take
   * turns); 0: sweep now whatever the others did
   */
  orphanSweepEveryMs?: number;
  /** stops between batches (a server shutting down) */
  signal?: AbortSignal;
}

export interface StepFigures {
  reviewed: number;
  deleted: number;
  kept: number;
  deferred: number;
}

/** What one collection did (or, dry, would do). */
export interface GcReport {
  dryRun: boolean;
  startedAt: string;
  durationMs: number;
  /** untagged manifests queued for review first (collect's queueUntagged) */
  queuedUntagged: number;
  manifests: StepFigures;
  blobLinks: StepFigures;
  /** blob rows whose last link went: their keys went to the outbox */
  blobs: { deleted: number; bytes: number };
  /** outbox keys whose bytes were deleted */
  storage: { objects: number; bytes: number; failed: number };
  /** bytes no row named, deleted by the sweep; `swept` false when another collector's turn */
  orphans: { swept: boolean; listed: number; objects: number; bytes: number };
  /** storage objects and bytes given back: the outbox's and the sweep's */
  reclaimed: { objects: number; bytes: number };
  /** the queues after the collection */
  queue: GcQueueFigures & { reviewLagSeconds: number };
}

/** The longest the bytes of a deleted blob row wait in the outbox by default: a backup's window. */
const MAX_STORAGE_DELAY_MS = 60 * 60_000;

const DEFAULTS = {
  // Short transactions: a push waiting for the database (on SQLite, the one writer) waits little.
  batchSize: 10,
  orphanMinAgeMs: 60 * 60_000,
  storageLeaseMs: 10 * 60_000,
  retryAfterMs: 30_000,
  pace: 0,
};
/** Storage deletes and listed-key checks in flight at once. */
const STORAGE_CONCURRENCY = 8;
/** Listed keys checked against the database per query. */
const SWEEP_CHUNK = 500;

const noFigures = (): StepFigures => ({ reviewed: 0, deleted: 0, kept: 0, deferred: 0 });

export class Collector {
  private readonly now: () => number;
  private readonly batchSize: number;
  private readonly orphanMinAgeMs: number;
  private readonly storageLeaseMs: number;
  private readonly retryAfterMs: number;
  private readonly pace: number;
  private readonly storageDelayMs: number;
  private readonly untagged: (repository: string) => 'keep' | 'delete';

  constructor(private readonly options: CollectorOptions) {
    this.now = options.now ?? Date.now;
    this.batchSize = options.batchSize ?? DEFAULTS.batchSize;
    this.orphanMinAgeMs = options.orphanMinAgeMs ?? DEFAULTS.orphanMinAgeMs;
    this.storageLeaseMs = options.storageLeaseMs ?? DEFAULTS.storageLeaseMs;
    this.retryAfterMs = options.retryAfterMs ?? DEFAULTS.retryAfterMs;
    this.pace = options.pace ?? DEFAULTS.pace;
    this.storageDelayMs = options.storageDelayMs ?? Math.min(options.settings.graceMs, MAX_STORAGE_DELAY_MS);
    this.untagged = untaggedPolicy(options.settings.untagged);
  }

  private get graceMs(): number {
    return this.options.settings.graceMs;
  }

  /** A hook threw CollectorCrash: nothing more is written, as after a real crash. */
  private crashed = false;

  private async hook(point: GcPoint): Promise<void> {
    try {
      await this.options.hooks?.at(point);
    } catch (error) {
      if (error instanceof CollectorCrash) this.crashed = true;
      throw error;
    }
  }

  /** One whole collection: the four steps in order, then the queues' figures. */
  async collect(options: CollectOptions = {}): Promise<GcReport> {
    const started = this.now();
    const dryRun = options.dryRun ?? false;
    const queuedUntagged = options.queueUntagged && !dryRun ? await this.options.gc.queueUntaggedManifests(started) : 0;
    const manifests = await this.reviewManifests(dryRun, options.signal);
    const blobLinks = await this.reviewBlobLinks(dryRun, options.signal);
    const storage = await this.deleteStoredObjects(dryRun, options.signal);
    const orphans = await this.sweepOrphans({ dryRun, everyMs: options.orphanSweepEveryMs ?? 0, signal: options.signal });
    const queue = await this.figures();
    return {
      dryRun,
      startedAt: new Date(started).toISOString(),
      durationMs: this.now() - started,
      queuedUntagged,
      manifests: manifests.figures,
      blobLinks: blobLinks.figures,
      blobs: { deleted: blobLinks.blobsDeleted, bytes: blobLinks.bytesQueued },
      storage,
      orphans,
      reclaimed: { objects: storage.objects + orphans.objects, bytes: storage.bytes + orphans.bytes },
      queue,
    };
  }

  /** Step 1: due manifest reviews, batch after batch until none is due. */
  reviewManifests(dryRun = false, signal?: AbortSignal): Promise<ReviewTotals> {
    return this.reviewQueue('manifests', dryRun, signal, (common) => this.options.gc.reviewManifests({ ...common, untagged: this.untagged }));
  }

  /** Step 2: due link reviews, batch after batch until none is due. */
  reviewBlobLinks(dryRun = false, signal?: AbortSignal): Promise<ReviewTotals> {
    return this.reviewQueue('blob-links', dryRun, signal, (common) => this.options.gc.reviewBlobLinks(common));
  }

  private async reviewQueue(
    step: 'manifests' | 'blob-links',
    dryRun: boolean,
    signal: AbortSignal | undefined,
    review: (options: Parameters<GcStore['reviewBlobLinks']>[0]) => Promise<ReviewBatch>,
  ): Promise<ReviewTotals> {
    const totals: ReviewTotals = { figures: noFigures(), blobsDeleted: 0, bytesQueued: 0 };
    // Due is judged once, at the start of the step: what the step itself queues waits for the next run.
    const dueBefore = this.now() - this.graceMs;
    let after: ReviewCursor | undefined;
    for (;;) {
      if (signal?.aborted) break;
      const began = Date.now();
      const batch = await review({
        dueBefore,
        limit: this.batchSize,
        now: this.now(),
        retryAfterMs: this.retryAfterMs,
        storageDelayMs: this.storageDelayMs,
        dryRun,
        after,
        journal: this.options.journal,
        onDecision: (decision) => this.hook({ step, at: 'decided', decision }),
      });
      totals.figures.reviewed += batch.reviewed;
      totals.figures.deleted += batch.deleted;
      totals.figures.kept += batch.kept;
      totals.figures.deferred += batch.deferred;
      totals.blobsDeleted += batch.blobsDeleted;
      totals.bytesQueued += batch.bytesQueued;
      if (batch.reviewed > 0) await this.hook({ step, at: 'committed', batch });
      // A full batch may have company; anything less was all there was. Reviewed rows leave the
      // due set (settled, deleted or deferred), so a real run needs no cursor; a dry run does.
      if (batch.reviewed < this.batchSize) break;
      if (dryRun) after = batch.last;
      await this.breathe(began);
    }
    await this.hook({ step, at: 'done' });
    return totals;
  }

  /** Leaves the database to requests for a while after a batch, in proportion to what it took. */
  private async breathe(began: number): Promise<void> {
    if (this.pace <= 0) return;
    const took = Date.now() - began;
    await new Promise((resolve) => setTimeout(resolve, Math.min(took * this.pace, 5_000)));
  }

  /** Step 3: the outbox: bytes deleted first, then the key forgotten. */
  async deleteStoredObjects(dryRun = false, signal?: AbortSignal): Promise<GcReport['storage']> {
    const { gc, store, log } = this.options;
    const result = { objects: 0, bytes: 0, failed: 0 };
    if (dryRun) {
      let after: string | undefined;
      for (;;) {
        const page = await gc.listStorageDeletes(this.now(), 1000, after);
        for (const entry of page) {
          result.objects++;
          result.bytes += entry.size;
        }
        if (page.length < 1000) break;
        after = page[page.length - 1]?.storageKey;
      }
      await this.hook({ step: 'storage', at: 'done' });
      return result;
    }
    for (;;) {
      if (signal?.aborted) break;
      const began = Date.now();
      const claimed = await gc.claimStorageDeletes(this.now(), this.batchSize, this.storageLeaseMs);
      if (claimed.length === 0) break;
      await this.hook({ step: 'storage', at: 'claimed', keys: claimed.map((entry) => entry.storageKey) });
      // Keys carry their upload's generation, so no live row can name an outbox key; were one to
      // (a bug, a hand-edited database), its bytes stay and the key is dropped.
      const inUse = await gc.storageKeysInUse(claimed.map((entry) => entry.storageKey));
      const done: string[] = [];
      try {
        await inParallel(claimed, STORAGE_CONCURRENCY, async (entry: StorageDelete) => {
          if (inUse.has(entry.storageKey)) {
            log.error({ key: entry.storageKey, digest: entry.digest }, 'garbage collection: a blob row still names a key in the storage-delete outbox; its bytes are kept');
            done.push(entry.storageKey);
            return;
          }
          try {
            await store.delete(entry.storageKey);
          } catch (error) {
            result.failed++;
            log.warn({ err: error, key: entry.storageKey, attempts: entry.attempts }, 'garbage collection: could not delete stored bytes; tried again later');
            return;
          }
          result.objects++;
          result.bytes += entry.size;
          await this.hook({ step: 'storage', at: 'bytes-deleted', key: entry.storageKey });
          done.push(entry.storageKey);
        });
      } finally {
        // One write for the batch; a key whose bytes went but is not forgotten (a crash right
        // here) is deleted again, harmlessly, once its lease is over.
        if (!this.crashed) await gc.finishStorageDeletes(done);
      }
      if (claimed.length < this.batchSize) break;
      await this.breathe(began);
    }
    await this.hook({ step: 'storage', at: 'done' });
    return result;
  }

  /**
   * Step 4: bytes no row names. Only objects older than the grace (and never younger than
   * orphanMinAgeMs) are candidates: a commit writes its bytes a moment before the transaction
   * that names them.
   */
  async sweepOrphans(options: { dryRun?: boolean; everyMs?: number; signal?: AbortSignal | undefined } = {}): Promise<GcReport['orphans']> {
    const { gc, store, log } = this.options;
    const result = { swept: false, listed: 0, objects: 0, bytes: 0 };
    const now = this.now();
    const everyMs = options.everyMs ?? 0;
    const dryRun = options.dryRun ?? false;
    if (!dryRun && !(await gc.claimOrphanSweep(now, everyMs))) {
      await this.hook({ step: 'orphans', at: 'done' });
      return result;
    }
    result.swept = true;
    const cutoff = now - Math.max(this.graceMs, this.orphanMinAgeMs);
    let candidates: StoredObject[] = [];
    const check = async () => {
      const chunk = candidates;
      candidates = [];
      const unnamed = new Set(await gc.unnamedKeys(chunk.map((object) => object.key)));
      const doomed = chunk.filter((object) => unnamed.has(object.key));
      if (doomed.length === 0) return;
      await this.hook({ step: 'orphans', at: 'unnamed', keys: doomed.map((object) => object.key) });
      await inParallel(doomed, STORAGE_CONCURRENCY, async (object) => {
        if (!dryRun) {
          try {
            await store.delete(object.key);
          } catch (error) {
            log.warn({ err: error, key: object.key }, 'garbage collection: could not delete unnamed bytes; tried again at the next sweep');
            return;
          }
          await this.hook({ step: 'orphans', at: 'bytes-deleted', key: object.key });
        }
        result.objects++;
        result.bytes += object.size;
      });
    };
    for await (const object of store.listCommitted()) {
      if (options.signal?.aborted) break;
      result.listed++;
      if (object.lastModified.getTime() >= cutoff) continue;
      candidates.push(object);
      if (candidates.length >= SWEEP_CHUNK) await check();
    }
    if (candidates.length > 0) await check();
    if (result.objects > 0) log.warn({ objects: result.objects, bytes: result.bytes, dryRun }, 'garbage collection: bytes no row named (left by a crash between a commit and its link)');
    await this.hook({ step: 'orphans', at: 'done' });
    return result;
  }

  /** Queue depths, and how long the oldest due review has waited past its grace. */
  async figures(): Promise<GcReport['queue']> {
    const dueBefore = this.now() - this.graceMs;
    const figures = await this.options.gc.figures(dueBefore);
    const lag = figures.oldestDueTouchedAt === undefined ? 0 : Math.max(0, dueBefore - figures.oldestDueTouchedAt) / 1000;
    return { ...figures, reviewLagSeconds: lag };
  }
}

export interface ReviewTotals {
  figures: StepFigures;
  blobsDeleted: number;
  bytesQueued: number;
}

/** A test's hook that throws to simulate a crash: it must end the collection, not be logged and skipped. */
export class CollectorCrash extends Error {
  constructor(where: string) {
    super(`collector crashed (injected) at ${where}`);
    this.name = 'CollectorCrash';
  }
}

/** Runs `work` over `items`, at most `limit` at once; the first failure ends it. */
async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure;
}
