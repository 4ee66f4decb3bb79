// Reading the parts of a distribution API request: path parameters, query, headers.
import type { Author } from '../../../audit/events.js';
import { errors, RegistryError } from '../../../registry/errors.js';
import { badRequest } from '../../errors.js';
import { parseDigest, parseName, type Digest } from '../../../registry/reference.js';
import type { ChunkRange, IncomingBytes } from '../../../registry/uploads.js';
import type { AppContext } from '../../context.js';

export function param(ctx: AppContext, key: string): string {
  const value = ctx.state.params[key];
  if (value === undefined) throw new Error(`route has no parameter ${key}`);
  return value;
}

/** Who a request acts for, as the audit log records it: the token's subject and the client address. */
export const authorOf = (ctx: AppContext): Author => ({ actor: ctx.state.auth?.subject, clientIp: ctx.request.ip });

export function repositoryOf(ctx: AppContext): string {
  return ctx.state.repository ?? parseName(param(ctx, 'name'));
}

export function digestParam(ctx: AppContext, key = 'digest'): Digest {
  return parseDigest(param(ctx, key));
}

/** A single-valued query parameter; repeated parameters are ambiguous and refused. */
export function queryValue(ctx: AppContext, key: string): string | undefined {
  const value = ctx.query[key];
  if (Array.isArray(value)) throw badRequest(`query parameter ${key} given more than once`);
  return value;
}

export function requiredDigestQuery(ctx: AppContext): Digest {
  const digest = queryValue(ctx, 'digest');
  if (!digest) throw errors.digestInvalid({ digest: null }, 'digest query parameter is required');
  return parseDigest(digest);
}

export function hasBody(ctx: AppContext): boolean {
  const length = ctx.get('Content-Length');
  if (length !== '') return length !== '0';
  return ctx.get('Transfer-Encoding') !== '';
}

/** Content-Range of an upload chunk: `<start>-<end>` (distribution also sends a `bytes ` prefix). */
export function chunkRange(ctx: AppContext): ChunkRange | undefined {
  const header = ctx.get('Content-Range');
  if (header === '') return undefined;
  const match = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?$/.exec(header.trim());
  const start = Number(match?.[1]);
  const end = Number(match?.[2]);
  if (!match || end < start) {
    throw new RegistryError('RANGE_INVALID', 'invalid Content-Range', { contentRange: header });
  }
  const length = ctx.get('Content-Length');
  if (length !== '' && Number(length) !== end - start + 1) {
    throw errors.uploadInvalid('Content-Length does not match Content-Range', { contentRange: header, contentLength: length });
  }
  return { start, end };
}

/** Media types from every Accept header, without parameters. */
export function acceptedTypes(ctx: AppContext): string[] {
  const header = ctx.req.headers.accept;
  if (header === undefined) return [];
  // A type given with q=0 is explicitly not acceptable.
  return header
    .split(',')
    .filter((part) => !/;\s*q=0(?:\.0*)?\s*(?:;|$)/i.test(part))
    .map((part) => part.split(';')[0]?.trim().toLowerCase() ?? '')
    .filter((type) => type.length > 0);
}

/** The blob bytes of a PATCH, PUT or POST: the body, its Content-Range, and its Content-Length if declared. */
export function incomingBytes(ctx: AppContext): IncomingBytes {
  const declared = ctx.get('Content-Length');
  // With Transfer-Encoding the body is framed by chunks, and a Content-Length means nothing.
  const length = ctx.get('Transfer-Encoding') === '' && /^\d{1,15}$/.test(declared) ? Number(declared) : undefined;
  return { body: ctx.req, range: chunkRange(ctx), length };
}
