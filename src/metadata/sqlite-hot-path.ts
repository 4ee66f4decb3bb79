// The store methods on every blob upload's path, for SQLite, as plain statements run through
// SqliteDirect (see there for why). Each does what its knex version in knex-store.ts does, which
// PostgreSQL runs; the metadata store contract suite runs both. SQLite has one writer at a time,
// so the row locks the knex versions take on PostgreSQL have no counterpart here.
import { UploadSessionLostError } from './errors.js';
import { BLOB_REVIEWS, GRACE_RESTART_SLACK_MS } from './gc-queue.js';
import type { BlobRow, UploadRow } from './rows.js';
import type { DirectSql } from './sqlite-direct.js';
import type { BlobRecord, FinishedUpload, UploadRecord } from './store.js';

/** Rows per statement when restarting graces (SQLite allows 999 bound values). */
const TOUCH_CHUNK = 200;

export function getUpload(sql: DirectSql, repository: string, id: string): UploadRow | undefined {
  return sql.get<UploadRow>('select * from uploads where id = ? and repository = ? limit 1', id, repository);
}

export function createUpload(sql: DirectSql, upload: UploadRecord, maxOpen: number): boolean {
  const open = sql.get<{ open: number }>('select count(*) as open from uploads where owner = ?', upload.owner);
  if ((open?.open ?? 0) >= maxOpen) return false;
  sql.run(
    'insert into uploads (id, repository, size, parts, owner, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?)',
    upload.id,
    upload.repository,
    upload.size,
    JSON.stringify(upload.parts),
    upload.owner,
    upload.createdAt,
    upload.updatedAt,
  );
  return true;
}

export function claimUpload(sql: DirectSql, id: string, size: number, writer: string, until: number): boolean {
  const claimed = sql.run(
    'update uploads set writer = ?, writer_until = ? where id = ? and size = ? and (writer is null or writer_until < ?)',
    writer,
    until,
    id,
    size,
    Date.now(),
  );
  return claimed === 1;
}

/** Records and links a verified blob, ending its upload session if it came from one. */
export function commitBlob(sql: DirectSql, repository: string, blob: BlobRecord, finished?: FinishedUpload): BlobRow {
  if (finished) {
    const ended = sql.run('delete from uploads where id = ? and writer = ? and size = ?', finished.id, finished.writer, finished.size);
    if (ended !== 1) throw new UploadSessionLostError(finished.id);
  }
  const repositoryId = ensureRepository(sql, repository);
  let row = sql.get<BlobRow>('select * from blobs where digest = ?', blob.digest);
  if (!row) {
    sql.run(
      'insert into blobs (digest, size, storage_key, sealed, created_at) values (?, ?, ?, 1, ?) on conflict (digest) do nothing',
      blob.digest,
      blob.size,
      blob.storageKey,
      Date.now(),
    );
    row = sql.get<BlobRow>('select * from blobs where digest = ?', blob.digest);
    if (!row) throw new Error(`blob ${blob.digest} could not be recorded`);
  }
  // A new link is queued for review: nothing references it yet.
  const now = Date.now();
  const linked = sql.run(
    'insert into repository_blobs (repository_id, digest, created_at) values (?, ?, ?) on conflict (repository_id, digest) do nothing',
    repositoryId,
    blob.digest,
    now,
  );
  if (linked > 0) {
    sql.run(
      `insert into ${BLOB_REVIEWS} (repository_id, digest, touched_at) values (?, ?, ?) on conflict (repository_id, digest) do update set touched_at = excluded.touched_at`,
      repositoryId,
      blob.digest,
      now,
    );
  }
  return row;
}

function ensureRepository(sql: DirectSql, name: string): number {
  const existing = sql.get<{ id: number }>('select id from repositories where name = ?', name);
  if (existing) return existing.id;
  sql.run('insert into repositories (name, created_at) values (?, ?) on conflict (name) do nothing', name, Date.now());
  const created = sql.get<{ id: number }>('select id from repositories where name = ?', name);
  if (!created) throw new Error(`repository ${name} vanished inside its own transaction`);
  return created.id;
}

/** Restarts the grace of the pending link reviews of `digests`, in every repository (see gc-queue.ts). */
export function touchBlobReviews(sql: DirectSql, digests: readonly string[], now = Date.now()): void {
  const unique = [...new Set(digests)].sort();
  for (let i = 0; i < unique.length; i += TOUCH_CHUNK) {
    const chunk = unique.slice(i, i + TOUCH_CHUNK);
    const placeholders = chunk.map(() => '?').join(', ');
    sql.run(`update ${BLOB_REVIEWS} set touched_at = ? where digest in (${placeholders}) and touched_at < ?`, now, ...chunk, now - GRACE_RESTART_SLACK_MS);
  }
}

/** A blob linked to a repository, and whether a review of it is pending (findRepositoryBlob). */
export function findRepositoryBlob(sql: DirectSql, repository: string, digest: string, withReview: boolean): (BlobRow & { review_pending?: number }) | undefined {
  const review = withReview ? `, exists (select 1 from ${BLOB_REVIEWS} gr where gr.digest = b.digest) as review_pending` : '';
  return sql.get(
    `select b.digest, b.size, b.storage_key, b.sealed${review} from blobs as b
       inner join repository_blobs as rb on rb.digest = b.digest
       inner join repositories as r on r.id = rb.repository_id
     where r.name = ? and b.digest = ? limit 1`,
    repository,
    digest,
  );
}
