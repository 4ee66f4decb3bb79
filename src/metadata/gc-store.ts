// The garbage collector's seam to the metadata store (src/gc is its only user). Every method is
// one short transaction of its own; a collector never holds one open across a storage call.
//
// Reviews are decided under the row locks every push takes too (PostgreSQL): the collector locks
// the blob row (or manifest row) FOR UPDATE, a manifest PUT holds the rows it references FOR KEY
// SHARE, so one of them goes first and the other sees what it did. The collector never waits for
// a row a client holds (SKIP LOCKED: the review is looked at again a little later), so a push is
// never held up behind it for longer than one short transaction. SQLite has one writer at a time.
import type { ChangeJournal } from './store.js';

/** Where a dry run's paging through a queue stands (rows stay queued, so they are paged past). */
export interface ReviewCursor {
  touchedAt: number;
  repositoryId: number;
  digest: string;
}

/** What the collector decided about one queued link or manifest. */
export interface ReviewDecision {
  queue: 'blob-links' | 'manifests';
  repository: string;
  digest: string;
  /**
   * delete: garbage; keep: still needed (the review is dropped); defer: a client holds it right
   * now (looked at again later); gone: nothing left to review.
   */
  verdict: 'delete' | 'keep' | 'defer' | 'gone';
  /** why, in words: `unreferenced`, `tagged`, `in an index`, `orphaned referrer`, … */
  reason: string;
}

export type UntaggedPolicy = 'keep' | 'delete';

export interface ReviewOptions {
  /** reviews whose grace (re)started at or before this time (epoch ms) are due */
  dueBefore: number;
  /** rows per transaction */
  limit: number;
  /** the time written into the reviews this batch queues (a deletion's blobs, children, referrers) */
  now: number;
  /** a review a client holds is due again this much later */
  retryAfterMs: number;
  /** the bytes of a blob whose row goes may be deleted this much later (a backup's window) */
  storageDelayMs?: number;
  /** decide and count, change nothing: the transaction is rolled back */
  dryRun?: boolean;
  /** continue after this row (dry runs: the rows they looked at stay queued) */
  after?: ReviewCursor;
  /** records the deletions in the transaction that makes them (the audit log) */
  journal?: ChangeJournal;
  /**
   * Called inside the transaction once an item's rows are locked and its verdict is taken, before
   * anything is written: tests pause here (interleavings) or throw (a crash, rolling back the batch).
   */
  onDecision?: (decision: ReviewDecision) => Promise<void> | void;
}

export interface ManifestReviewOptions extends ReviewOptions {
  /** whether untagged manifests of a repository go once their grace is over */
  untagged(repository: string): UntaggedPolicy;
}

export interface ReviewBatch {
  /** rows looked at */
  reviewed: number;
  /** links or manifests deleted */
  deleted: number;
  kept: number;
  deferred: number;
  /** blob rows whose last link went (their keys are in the storage-delete outbox now) */
  blobsDeleted: number;
  /** the size of those blobs */
  bytesQueued: number;
  /** the last row looked at, for a dry run's next batch */
  last?: ReviewCursor;
  decisions: ReviewDecision[];
}

/** A storage key whose row is gone, waiting for its bytes to be deleted. */
export interface StorageDelete {
  storageKey: string;
  digest: string;
  size: number;
  /** how many times a collector has claimed it (more than one: an earlier one failed or crashed) */
  attempts: number;
}

export interface GcQueueFigures {
  blobReviews: number;
  manifestReviews: number;
  storageDeletes: number;
  dueBlobReviews: number;
  dueManifestReviews: number;
  /** the grace start of the oldest due review (epoch ms), when one is due */
  oldestDueTouchedAt?: number;
}

export interface GcStore {
  /** One batch of due link reviews: a link no manifest of its repository references goes. */
  reviewBlobLinks(options: ReviewOptions): Promise<ReviewBatch>;
  /**
   * One batch of due manifest reviews: an untagged manifest goes where the repository's policy
   * says so, unless an index in its repository references it or its subject is still there; a
   * referrer whose subject is gone goes whatever the policy. A tagged one always stays.
   */
  reviewManifests(options: ManifestReviewOptions): Promise<ReviewBatch>;
  /** Claims due outbox keys for `leaseMs` (another collector skips them meanwhile). */
  claimStorageDeletes(now: number, limit: number, leaseMs: number): Promise<StorageDelete[]>;
  /** Outbox keys a run would take, without claiming them (dry runs). */
  listStorageDeletes(now: number, limit: number, after?: string): Promise<StorageDelete[]>;
  /** Of these keys, those a blob row names (their bytes must stay, whatever the outbox says). */
  storageKeysInUse(storageKeys: readonly string[]): Promise<Set<string>>;
  /** The bytes of these outbox keys are gone: forget the keys (one transaction). */
  finishStorageDeletes(storageKeys: readonly string[]): Promise<void>;
  /**
   * Of these committed keys, those nothing names: no blob row, no outbox row, and no upload
   * session of the generation in the key (a commit still linking its bytes).
   */
  unnamedKeys(keys: readonly string[]): Promise<string[]>;
  /**
   * Takes the turn to sweep storage for unnamed bytes, unless a collector did less than
   * `minIntervalMs` ago (0: takes it whatever the others did).
   */
  claimOrphanSweep(now: number, minIntervalMs: number): Promise<boolean>;
  /** Queue depths and how late the oldest due review is. */
  figures(dueBefore: number): Promise<GcQueueFigures>;
  /**
   * Queues every untagged manifest for review, its grace starting `now` (after gc.untagged changed
   * to delete where it kept: reviews it already settled as kept are gone). Returns how many.
   */
  queueUntaggedManifests(now: number): Promise<number>;
}
