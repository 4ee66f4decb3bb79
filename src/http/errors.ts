// The one place where failures become what a client hears: the HTTP status and headers of every
// error code, the headers an error's context asks for, and the errors of the layers below
// (metadata store, libraries) translated into the spec's codes.
import { DatabaseUnavailableError, UnstorableValueError } from '../metadata/errors.js';
import { RegistryError, type ErrorCode, type ErrorContext } from '../registry/errors.js';

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
  REQUEST_INVALID: 400,
};

/** Codes of ours that clients know under a spec code. */
const ON_THE_WIRE: Partial<Record<ErrorCode, ErrorCode>> = { REQUEST_INVALID: 'UNSUPPORTED' };

/**
 * An error the HTTP layer raises itself, where the protocol asks for a particular status or
 * headers (a token challenge, Allow on 405, 413 for a body too large, 400 for a malformed query).
 */
export class HttpError extends RegistryError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly status: number,
    readonly headers: Record<string, string> = {},
    detail?: unknown,
  ) {
    super(code, message, detail);
    this.name = 'HttpError';
  }
}

/** A request the spec has no better code for: 400 with UNSUPPORTED, as distribution answers. */
export const badRequest = (message: string, detail?: unknown): HttpError => new HttpError('REQUEST_INVALID', message, 400, {}, detail);

export interface ErrorResponse {
  code: ErrorCode;
  message: string;
  detail: unknown;
  status: number;
  headers: Record<string, string>;
}

/** Location and Range describing an upload's progress, as the spec defines them. */
export function uploadProgressHeaders(upload: { repository: string; id: string; size: number }): Record<string, string> {
  return {
    Location: `/v2/${upload.repository}/blobs/uploads/${upload.id}`,
    Range: `0-${Math.max(upload.size - 1, 0)}`,
    'Docker-Upload-UUID': upload.id,
  };
}

function contextHeaders(context: ErrorContext): Record<string, string> {
  return {
    ...(context.upload ? uploadProgressHeaders(context.upload) : {}),
    ...(context.retryAfterSeconds !== undefined ? { 'Retry-After': String(Math.max(1, Math.ceil(context.retryAfterSeconds))) } : {}),
  };
}

/** Errors thrown by libraries we use (raw-body, Koa) carry an HTTP status and a type. */
interface LibraryHttpError extends Error {
  status?: number;
  type?: string;
}

/** What the client hears for an error; undefined for a bug (the caller answers 500). */
export function responseOf(error: unknown): ErrorResponse | undefined {
  const answer = (code: ErrorCode, message: string, status = STATUS[code], headers: Record<string, string> = {}, detail: unknown = null) => ({
    code: ON_THE_WIRE[code] ?? code,
    message,
    status,
    headers,
    detail,
  });
  if (error instanceof HttpError) return answer(error.code, error.message, error.status, error.headers, error.detail ?? null);
  if (error instanceof RegistryError) return answer(error.code, error.message, STATUS[error.code], contextHeaders(error.context), error.detail ?? null);
  if (error instanceof DatabaseUnavailableError) return answer('UNAVAILABLE', error.message);
  if (error instanceof UnstorableValueError) return answer('UNSUPPORTED', error.message, 400);
  if (!(error instanceof Error)) return undefined;
  const { status, type } = error as LibraryHttpError;
  switch (type) {
    case 'entity.too.large':
      return answer('SIZE_INVALID', 'request body is too large', 413);
    case 'request.aborted':
    case 'request.size.invalid':
      return answer('SIZE_INVALID', 'request body does not match its Content-Length');
    case 'encoding.unsupported':
      return answer('UNSUPPORTED', 'unsupported Content-Encoding', 415);
  }
  if (status === 400) return answer('UNSUPPORTED', error.message, 400);
  return undefined;
}
