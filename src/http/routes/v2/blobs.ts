// GET/HEAD/DELETE /v2/<name>/blobs/<digest>
import rangeParser from 'range-parser';
import type { Registry } from '../../../registry/index.js';
import { HttpError } from '../../errors.js';
import type { ByteRange } from '../../../storage/blob-store.js';
import { reply, type AppContext } from '../../context.js';
import { sendFromReader } from '../../blob-body.js';
import { readableDigest } from '../../../registry/blobs.js';
import { authorOf, param, repositoryOf } from './request.js';

/** The single satisfiable range asked for, undefined for the whole blob. Multiple ranges: whole blob. */
function requestedRange(ctx: AppContext, size: number): ByteRange | undefined {
  const header = ctx.get('Range');
  if (header === '') return undefined;
  const ranges = rangeParser(size, header, { combine: true });
  if (ranges === -1) {
    throw new HttpError('RANGE_INVALID', 'requested range not satisfiable', 416, { 'Content-Range': `bytes */${size}` }, { range: header, size });
  }
  if (ranges === -2 || ranges.type !== 'bytes' || ranges.length !== 1) return undefined; // malformed: ignore, per RFC 9110
  const [range] = ranges;
  return range && { start: range.start, end: range.end };
}

export function blobRoutes(registry: Registry) {
  return {
    async get(ctx: AppContext): Promise<void> {
      const digest = readableDigest(param(ctx, 'digest'));
      const blob = await registry.blobs.stat(repositoryOf(ctx), digest);
      const headers = {
        'Docker-Content-Digest': blob.digest,
        'Content-Type': 'application/octet-stream',
        'Accept-Ranges': 'bytes',
        ETag: `"${blob.digest}"`,
        'Cache-Control': 'max-age=31536000',
      };
      if (ctx.method === 'HEAD') {
        reply(ctx, 200, { ...headers, 'Content-Length': blob.size });
        return;
      }
      // The store may serve the bytes itself (a presigned URL); the client's Range goes along.
      const redirect = await registry.blobs.readUrl(blob);
      if (redirect !== undefined) {
        reply(ctx, 307, { Location: redirect, 'Docker-Content-Digest': blob.digest, 'Cache-Control': 'no-store', 'Content-Length': 0 });
        return;
      }
      const range = requestedRange(ctx, blob.size);
      const status = range ? 206 : 200;
      const length = range ? range.end - range.start + 1 : blob.size;
      const sent = range
        ? { ...headers, 'Content-Range': `bytes ${range.start}-${range.end}/${blob.size}`, 'Content-Length': length }
        : { ...headers, 'Content-Length': length };
      const reader = await registry.blobs.openReader(blob, range);
      if (reader) {
        await sendFromReader(ctx, status, sent, reader, length);
        return;
      }
      reply(ctx, status, sent, await registry.blobs.open(blob, range));
    },

    async delete(ctx: AppContext): Promise<void> {
      await registry.blobs.delete(repositoryOf(ctx), readableDigest(param(ctx, 'digest')), authorOf(ctx));
      reply(ctx, 202);
    },
  };
}
