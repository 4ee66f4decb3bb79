// /v2/<name>/blobs/uploads/ — starting, continuing, finishing and cancelling blob uploads,
// and cross-repository mounts.
import { isValidName, parseDigest } from '../../../registry/reference.js';
import type { Registry } from '../../../registry/index.js';
import type { BlobRecord } from '../../../metadata/store.js';
import { uploadProgressHeaders } from '../../errors.js';
import { reply, type AppContext } from '../../context.js';
import { tokenAllows } from '../../middleware/authorize.js';
import { hasBody, incomingBytes, param, queryValue, repositoryOf, requiredDigestQuery } from './request.js';

function created(ctx: AppContext, repository: string, blob: BlobRecord): void {
  reply(ctx, 201, {
    Location: `/v2/${repository}/blobs/${blob.digest}`,
    'Docker-Content-Digest': blob.digest,
  });
}

/** Whose session this is, for the per-principal cap: the token's subject, or the address of an anonymous pusher. */
function uploadOwner(ctx: AppContext): string {
  const subject = ctx.state.auth?.subject;
  return subject ? `user:${subject}` : `anonymous@${ctx.request.ip}`;
}

export function uploadRoutes(registry: Registry) {
  const { uploads, blobs } = registry;
  return {
    /** POST: mount (?mount=&from=), monolithic upload (?digest=), or a new session. */
    async start(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const mount = queryValue(ctx, 'mount');
      const from = queryValue(ctx, 'from');
      // Mounting reads from `from`: only a valid name the caller may pull from, else an
      // ordinary upload starts (as distribution does).
      if (mount !== undefined && from !== undefined && isValidName(from) && tokenAllows(ctx, from, 'pull')) {
        const mounted = await blobs.mount(repository, from, parseDigest(mount));
        if (mounted) return created(ctx, repository, mounted);
        // Not in `from` (or not visible there): fall back to a normal upload, as the spec says.
      }
      if (queryValue(ctx, 'digest') !== undefined && mount === undefined) {
        const blob = await uploads.monolithic(repository, requiredDigestQuery(ctx), incomingBytes(ctx));
        ctx.state.bytesIn = blob.size;
        return created(ctx, repository, blob);
      }
      const upload = await uploads.start(repository, uploadOwner(ctx));
      reply(ctx, 202, uploadProgressHeaders(upload));
    },

    async status(ctx: AppContext): Promise<void> {
      const upload = await uploads.status(repositoryOf(ctx), param(ctx, 'uuid'));
      reply(ctx, 204, uploadProgressHeaders(upload));
    },

    /** PATCH: a chunk (with Content-Range) or a stream (without). */
    async append(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const id = param(ctx, 'uuid');
      const { upload, written } = await uploads.append(repository, id, incomingBytes(ctx));
      ctx.state.bytesIn = written;
      reply(ctx, 202, uploadProgressHeaders(upload));
    },

    /** PUT ?digest=: the last chunk, if any, and the commit. */
    async finish(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const digest = requiredDigestQuery(ctx);
      const { blob, written } = await uploads.complete(repository, param(ctx, 'uuid'), digest, hasBody(ctx) ? incomingBytes(ctx) : undefined);
      ctx.state.bytesIn = written;
      created(ctx, repository, blob);
    },

    async cancel(ctx: AppContext): Promise<void> {
      await uploads.cancel(repositoryOf(ctx), param(ctx, 'uuid'));
      reply(ctx, 204);
    },
  };
}
