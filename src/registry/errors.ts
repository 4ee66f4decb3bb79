// The one error hierarchy of Portcullis. Every failure a client can cause or observe is a
// RegistryError carrying the OCI distribution-spec error code; the HTTP status for each code is
// decided here and nowhere else (see `statusOf`).

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
  | 'INTERNAL';

const STATUS: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  PAGINATION_NUMBER_INVALID: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

export class RegistryError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    /** Overrides the code's usual status where the spec asks for another (e.g. 413, 416). */
    readonly status: number = STATUS[code],
    /** Extra response headers the spec asks for with this error (e.g. Range on 416). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** A backend (database, storage, directory) could not be reached: 503, nothing was changed. */
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
