// What can go wrong in the metadata store, in its own words: the layers above decide what a
// client hears (the HTTP layer maps these to 503 and 400).
import { isDatabaseUnavailable } from './database.js';

/** The database cannot serve right now (unreachable, busy, full); nothing was changed. */
export class DatabaseUnavailableError extends Error {
  constructor(cause: unknown) {
    super('the metadata database is unavailable; try again later');
    this.name = 'DatabaseUnavailableError';
    this.cause = cause;
  }
}

/** The database refused a value as data (too long, an invalid byte such as NUL): the caller's input. */
export class UnstorableValueError extends Error {
  constructor(cause: unknown) {
    super('a request value cannot be stored');
    this.name = 'UnstorableValueError';
    this.cause = cause;
  }
}

/** A blob commit's session is no longer the committer's (another request claimed or ended it): nothing was committed. */
export class UploadSessionLostError extends Error {
  constructor(readonly uploadId: string) {
    super(`upload session ${uploadId} is no longer held by this request`);
    this.name = 'UploadSessionLostError';
  }
}

/** The error a store reports for a failed query: one of the above, or the original (a bug). */
export function databaseError(error: unknown): unknown {
  if (error instanceof DatabaseUnavailableError || error instanceof UnstorableValueError) return error;
  if (isDatabaseUnavailable(error)) return new DatabaseUnavailableError(error);
  // PostgreSQL data exceptions (class 22: too long, invalid byte sequence) come from values the
  // grammar checks let through.
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && /^22/.test(code)) return new UnstorableValueError(error);
  return error;
}

/** Runs a unit of work against the database, reporting failures as the errors above. */
export async function withDatabase<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw databaseError(error);
  }
}

/**
 * A whole-set replacement (the access rules, the trust policies) asked to apply only to the
 * version it was read at, and the set has changed since: nothing was written. HTTP: 412.
 */
export class VersionConflictError extends Error {
  constructor(
    readonly what: string,
    readonly current: string,
  ) {
    super(`the ${what} changed since they were read (now at version ${current}): read them again and re-apply`);
    this.name = 'VersionConflictError';
  }
}
