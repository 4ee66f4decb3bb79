// GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>
import getRawBody from 'raw-body';
import type { Author } from '../../../audit/events.js';
import type { ManifestRecord } from '../../../metadata/store.js';
import type { Registry } from '../../../registry/index.js';
import { reply, type AppContext } from '../../context.js';
import { acceptedTypes, authorOf, param, repositoryOf } from './request.js';

/** Told of every manifest pushed (the trust layer verifies the ones that are signatures). */
export type ManifestPushed = (manifest: {
  repository: string;
  tag?: string | undefined;
  digest: string;
  payload: Buffer;
  subjectDigest?: string | undefined;
  artifactType?: string | undefined;
  /** who pushed it */
  author: Author;
}) => Promise<void>;


/** Decides whether a manifest found may be served to this caller (the trust policy); throws DENIED if not. */
export type PullGate = (ctx: AppContext, repository: string, reference: string, manifest: ManifestRecord) => Promise<void>;

export function manifestRoutes(
  registry: Registry,
  manifestMaxBytes: number,
  pushed: ManifestPushed = async () => undefined,
  pullGate: PullGate = async () => undefined,
) {
  const { manifests } = registry;
  return {
    async get(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const reference = param(ctx, 'reference');
      const manifest = await manifests.get(repository, reference, acceptedTypes(ctx));
      await pullGate(ctx, repository, reference, manifest);
      const headers = {
        'Content-Type': manifest.mediaType,
        'Docker-Content-Digest': manifest.digest,
        'Content-Length': manifest.size,
        ETag: `"${manifest.digest}"`,
      };
      reply(ctx, 200, headers, ctx.method === 'HEAD' ? undefined : manifest.payload);
    },

    async put(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const length = ctx.get('Content-Length');
      const payload = await getRawBody(ctx.req, {
        limit: manifestMaxBytes,
        length: length === '' ? undefined : length,
      });
      ctx.state.bytesIn = payload.length;
      const author = authorOf(ctx);
      const stored = await manifests.put(repository, param(ctx, 'reference'), ctx.get('Content-Type') || undefined, payload, author);
      await pushed({ repository, tag: stored.tag, digest: stored.digest, payload, subjectDigest: stored.subject?.digest, artifactType: stored.artifactType, author });
      reply(ctx, 201, {
        Location: `/v2/${repository}/manifests/${stored.digest}`,
        'Docker-Content-Digest': stored.digest,
        ...(stored.subject ? { 'OCI-Subject': stored.subject.digest } : {}),
      });
    },

    async delete(ctx: AppContext): Promise<void> {
      await manifests.delete(repositoryOf(ctx), param(ctx, 'reference'), authorOf(ctx));
      reply(ctx, 202);
    },
  };
}
