// The garbage collector's queues as the registry's own transactions fill them (migrations/
// 20261130_010_gc.ts): a link or manifest that may have become garbage is queued for review, and a
// client relying on a blob restarts the grace of its pending reviews.
//
// Lock order (PostgreSQL): a transaction of the registry queues reviews last, just before its
// audit events, and in one order (blob reviews, then manifest reviews, each by digest), so two of
// them never wait on each other in a circle. Restarting a grace never waits at all: a review a
// collector holds is being decided under the blob's row lock, which the client's own transaction
// meets anyway.
import type { Knex } from 'knex';
import { retryWhileBusy } from './sqlite-direct.js';

export const BLOB_REVIEWS = 'gc_blob_reviews';
export const MANIFEST_REVIEWS = 'gc_manifest_reviews';
export const STORAGE_DELETES = 'gc_storage_deletes';

/** Rows per insert (SQLite allows 999 bound values; three per row). */
const INSERT_CHUNK = 200;

export const isPostgresDb = (db: Knex): boolean => db.client.config.client === 'pg';

/**
 * Queues reviews of (repository, digest), or restarts the grace of those already queued. Sorted,
 * so concurrent transactions take the rows in one order.
 */
async function enqueue(trx: Knex.Transaction, table: string, repositoryId: number, digests: Iterable<string>, now: number): Promise<void> {
  const sorted = [...new Set(digests)].sort();
  for (let i = 0; i < sorted.length; i += INSERT_CHUNK) {
    const rows = sorted.slice(i, i + INSERT_CHUNK).map((digest) => ({ repository_id: repositoryId, digest, touched_at: now }));
    await trx(table).insert(rows).onConflict(['repository_id', 'digest']).merge(['touched_at']);
  }
}

/** Queues links of a repository for review: nothing there may reference them any more. */
export const enqueueBlobReviews = (trx: Knex.Transaction, repositoryId: number, digests: Iterable<string>, now = Date.now()): Promise<void> =>
  enqueue(trx, BLOB_REVIEWS, repositoryId, digests, now);

/** Queues manifests of a repository for review: they may have lost their tag, index or subject. */
export const enqueueManifestReviews = (trx: Knex.Transaction, repositoryId: number, digests: Iterable<string>, now = Date.now()): Promise<void> =>
  enqueue(trx, MANIFEST_REVIEWS, repositoryId, digests, now);

/**
 * A grace restarted less than this long ago is not restarted again. A small image's manifest,
 * pushed milliseconds after its blobs were linked (which queued their reviews), then writes
 * nothing; a grace of minutes or hours is shortened by at most this much.
 */
export const GRACE_RESTART_SLACK_MS = 1000;

/**
 * Restarts the grace of the pending link reviews of `digests`, in every repository, on
 * PostgreSQL (SQLite's is in sqlite-hot-path.ts). Indexed on digest; writes nothing when no
 * review is pending (the common case: a HEAD of a referenced layer) or all were restarted just
 * now. A review row a collector holds is skipped rather than waited for.
 */
export async function touchBlobReviews(db: Knex, digests: readonly string[], now = Date.now()): Promise<void> {
  const unique = [...new Set(digests)].sort();
  for (let i = 0; i < unique.length; i += INSERT_CHUNK) {
    await db.raw(
      `update ${BLOB_REVIEWS} set touched_at = ? where (repository_id, digest) in (
         select repository_id, digest from ${BLOB_REVIEWS} where digest = any(?) and touched_at < ? for update skip locked)`,
      [now, unique.slice(i, i + INSERT_CHUNK), now - GRACE_RESTART_SLACK_MS],
    );
  }
}

/**
 * Runs a transaction that writes. On SQLite it takes the database's write lock with its first
 * statement (a delete that matches nothing and writes nothing), as BEGIN IMMEDIATE would: another
 * process (a `portcullis gc` beside the server) writing meanwhile is then waited for (busy_timeout)
 * instead of failing the transaction when it upgrades from reading to writing. Should SQLite still
 * refuse (busy for longer than its timeout), the whole transaction runs again. PostgreSQL
 * transactions run once.
 */
export async function transactionWithRetry<T>(db: Knex, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  if (isPostgresDb(db)) return db.transaction(work);
  return retryWhileBusy(() =>
    db.transaction(async (trx) => {
      await trx.raw('delete from gc_state where 0');
      return work(trx);
    }),
  );
}
