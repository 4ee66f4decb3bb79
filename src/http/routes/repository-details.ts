// Portcullis's own read-only extensions for a repository, with the same access as its tags list
// (pull on that repository): what the web console shows beside each tag, for anyone who may pull.
//   GET /extensions/v2/<name>/tags?n=&last=        tags with digest, size, platforms, who set
//                                                 them and when, immutability, signature status
//                                                 and the trust policy's verdict (paged; Link)
//   GET /extensions/v2/<name>/trust/<reference>    one image's signatures, each verification's
//                                                 outcome and reason, and the verdict
// The admin API's report and `trust/check` answer the same for auditors across repositories.
import { RegistryError } from '../../registry/errors.js';
import type { ListingService } from '../../registry/listing.js';
import { parseManifestReference } from '../../registry/reference.js';
import { explainImage, explanationJson } from '../../trust/explain.js';
import { reportEntryJson, ReportQueryError, type TagDetail } from '../../trust/report.js';
import { replyJson } from '../context.js';
import type { TrustAdministration } from './trust-admin.js';
import type { Route } from './v2/index.js';
import { param, queryValue, repositoryOf } from './v2/request.js';

export const repositoryDetailPatterns = {
  tags: /^\/extensions\/v2\/(?<name>.+)\/tags$/,
  trust: /^\/extensions\/v2\/(?<name>.+)\/trust\/(?<reference>[^/]+)$/,
};

const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;

function pageSize(text: string | undefined): number {
  if (text === undefined || text === '') return DEFAULT_PAGE;
  if (!/^[0-9]{1,4}$/.test(text) || Number(text) < 1 || Number(text) > MAX_PAGE) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be a whole number from 1 to ${MAX_PAGE}`, { n: text.slice(0, 20) });
  }
  return Number(text);
}

const tagJson = (detail: TagDetail) => ({ ...reportEntryJson(detail), taggedAt: new Date(detail.taggedAt).toISOString() });

export function repositoryDetailRoutes(trust: Pick<TrustAdministration, 'report' | 'explain'>, listing: Pick<ListingService, 'tags'>): Route[] {
  return [
    {
      name: 'details.tags',
      method: 'GET',
      pattern: repositoryDetailPatterns.tags,
      access: { kind: 'repository', action: 'pull' },
      async handler(ctx) {
        const repository = repositoryOf(ctx);
        const limit = pageSize(queryValue(ctx, 'n'));
        const cursor = queryValue(ctx, 'last') || undefined;
        let page: Awaited<ReturnType<typeof trust.report.tagDetails>>;
        try {
          page = await trust.report.tagDetails(repository, { cursor, limit });
        } catch (error) {
          if (error instanceof ReportQueryError) throw new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid last parameter');
          throw error;
        }
        // As GET /v2/<name>/tags/list: a repository that does not exist is NAME_UNKNOWN, not an empty list.
        if (page.tags.length === 0 && cursor === undefined) await listing.tags(repository, { n: '0' });
        const headers: Record<string, string> = { 'Cache-Control': 'no-store' };
        if (page.next !== undefined) headers.Link = `</extensions/v2/${repository}/tags?${new URLSearchParams({ n: String(limit), last: page.next }).toString()}>; rel="next"`;
        replyJson(ctx, 200, { name: repository, tags: page.tags.map(tagJson), ...(page.next !== undefined ? { next: page.next } : {}) }, headers);
      },
    },
    {
      name: 'details.trust',
      method: 'GET',
      pattern: repositoryDetailPatterns.trust,
      access: { kind: 'repository', action: 'pull' },
      async handler(ctx) {
        const repository = repositoryOf(ctx);
        const reference = parseManifestReference(param(ctx, 'reference'));
        const lookup = reference.kind === 'tag' ? { tag: reference.tag } : { digest: reference.digest.value };
        const explanation = await explainImage(trust.explain, { repository, lookup });
        if (!explanation) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { reference: param(ctx, 'reference') });
        replyJson(ctx, 200, explanationJson(explanation), { 'Cache-Control': 'no-store' });
      },
    },
  ];
}
