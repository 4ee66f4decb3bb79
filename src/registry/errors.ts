// The one error hierarchy of Portcullis. Every failure a client can cause or observe is a
// RegistryError carrying the OCI distribution-spec error code (plus a few distribution uses). What
// a client then hears over HTTP, status and headers, is decided in one place: src/http/errors.ts.

export type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  // Not in the spec's table but used by distribution and understood by clients.
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  // A request value this registry cannot use where no spec code fits (a bad scope, a repeated
  // query parameter): UNSUPPORTED with 400 on the wire, as distribution answers.
  | 'REQUEST_INVALID';

/**
 * Facts an error carries for whoever answers the client; the HTTP layer turns them into the
 * headers the spec asks for (the domain itself knows nothing of HTTP).
 */
export interface ErrorContext {
  /** the upload session concerned, and how many bytes it holds (a chunk that does not start where the upload ends) */
  upload?: { repository: string; id: string; size: number };
  /** how long the client should wait before trying again */
  retryAfterSeconds?: number;
}

export class RegistryError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    readonly context: ErrorContext = {},
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** A backend (database, storage, directory) could not be reached or cannot take more; nothing was changed. */
export class BackendUnavailableError extends RegistryError {
  constructor(backend: string, cause: unknown, reason?: string) {
    super('UNAVAILABLE', reason ? `${backend} is unavailable (${reason}); try again later` : `${backend} is unavailable; try again later`);
    this.name = 'BackendUnavailableError';
    this.cause = cause;
  }
}

// Small constructors for the errors raised in many places, so messages stay consistent.
export const errors = {
  nameInvalid: (name: string, why = 'invalid repository name') =>
    new RegistryError('NAME_INVALID', why, { name }),
  nameUnknown: (name: string) => new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { name }),
  digestInvalid: (detail: unknown, message = 'provided digest did not match uploaded content') =>
    new RegistryError('DIGEST_INVALID', message, detail),
  blobUnknown: (digest: string) => new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest }),
  uploadUnknown: (id: string) => new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { id }),
  uploadInvalid: (message: string, detail?: unknown) => new RegistryError('BLOB_UPLOAD_INVALID', message, detail),
  manifestUnknown: (reference: string, message = 'manifest unknown') =>
    new RegistryError('MANIFEST_UNKNOWN', message, { reference }),
  manifestInvalid: (message: string, detail?: unknown) => new RegistryError('MANIFEST_INVALID', message, detail),
};
