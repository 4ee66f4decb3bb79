// GET /v2/<name>/tags/list, GET /v2/_catalog and GET /v2/<name>/referrers/<digest>
import type { Registry } from '../../../registry/index.js';
import type { CatalogView, Page } from '../../../registry/listing.js';
import { badRequest } from '../../errors.js';
import { isMediaType, MediaType } from '../../../registry/media-types.js';
import { replyJson, type AppContext } from '../../context.js';
import { digestParam, queryValue, repositoryOf } from './request.js';

/** RFC 8288 Link header pointing at the next page, as the distribution spec describes. */
function nextLink(path: string, page: Page): Record<string, string> {
  if (!page.next) return {};
  const query = new URLSearchParams({ n: String(page.next.n), last: page.next.last });
  return { Link: `<${path}?${query.toString()}>; rel="next"` };
}

function pageQuery(ctx: AppContext) {
  return { n: queryValue(ctx, 'n'), last: queryValue(ctx, 'last') };
}

/** Builds, for one request, what of the catalog its caller may see. */
export type CatalogFilter = (ctx: AppContext) => Promise<CatalogView>;

export function listingRoutes(registry: Registry, catalogFilter: CatalogFilter) {
  return {
    async tags(ctx: AppContext): Promise<void> {
      const repository = repositoryOf(ctx);
      const page = await registry.listing.tags(repository, pageQuery(ctx));
      replyJson(ctx, 200, { name: repository, tags: page.items }, nextLink(`/v2/${repository}/tags/list`, page));
    },

    async catalog(ctx: AppContext): Promise<void> {
      const page = await registry.listing.repositories(pageQuery(ctx), await catalogFilter(ctx));
      replyJson(ctx, 200, { repositories: page.items }, nextLink('/v2/_catalog', page));
    },

    async referrers(ctx: AppContext): Promise<void> {
      const artifactType = queryValue(ctx, 'artifactType') || undefined;
      if (artifactType !== undefined && !isMediaType(artifactType)) {
        throw badRequest('artifactType is not a valid media type', { artifactType: artifactType.slice(0, 255) });
      }
      const repository = repositoryOf(ctx);
      const subject = digestParam(ctx);
      const { index, next } = await registry.manifests.referrers(repository, subject, { artifactType, cursor: queryValue(ctx, 'last') });
      const headers: Record<string, string> = artifactType ? { 'OCI-Filters-Applied': 'artifactType' } : {};
      if (next !== undefined) {
        const query = new URLSearchParams({ ...(artifactType ? { artifactType } : {}), last: next });
        headers.Link = `</v2/${repository}/referrers/${subject.value}?${query.toString()}>; rel="next"`;
      }
      replyJson(ctx, 200, index, headers, MediaType.OciIndex);
    },
  };
}
