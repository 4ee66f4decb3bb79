// The trust endpoints of the admin API, registered through admin.ts (its token check, and its
// one mapping from errors to RFC 9457 problems):
//   GET  /admin/v1/trust                 the policies, keys inline (JSON, or the YAML `trust apply` takes)
//   PUT  /admin/v1/trust[?dryRun=true]   replace them all, answering the difference; audited
//   GET  /admin/v1/trust/check?image=    what the policy says about an image (as `trust check`)
//   GET  /admin/v1/signatures?repository=&digest=   one manifest's signatures and their results
//   GET  /admin/v1/signatures/report     every tag → digest, its signature status and verdict (JSON or CSV)
// Changing the policies needs an administrator; reading them, and everything else here, an
// administrator or an auditor.
import { parse } from 'yaml';
import { isEmptyDiff } from '../../metadata/trust-policy-store.js';
import { RegistryError } from '../../registry/errors.js';
import { isValidName, parseDigest } from '../../registry/reference.js';
import { explainImage, explanationJson, parseImage, verificationJson, type ExplainSources } from '../../trust/explain.js';
import type { TrustPolicies } from '../../trust/policies.js';
import { formatTrustFile, parseTrustDocument } from '../../trust/policy-file.js';
import { CSV_HEADER, reportEntryCsv, reportEntryJson, type SignatureReport } from '../../trust/report.js';
import type { SignatureService } from '../../trust/signatures.js';
import { reply, replyJson, type AppContext } from '../context.js';

/** What the server gives the trust endpoints. */
export interface TrustAdministration {
  policies: TrustPolicies;
  /** the policies, manifests and stored results `trust/check` reads */
  explain: ExplainSources;
  report: SignatureReport;
  /**
   * Called once a change through the API has committed (not for a dry run, nor when nothing
   * changed): the server judges the stored signatures again there. Its count is answered as
   * `reverified`. It should return promptly: the request waits for it.
   */
  afterTrustChange?: () => Promise<{ reverified: number } | void>;
}

export interface TrustAdminRouteOptions extends TrustAdministration {
  signatures: SignatureService;
}

type Need = 'admin' | 'audit';

/** What admin.ts lends these routes: its registration (token, problems) and its request readers. */
export interface AdminRouteKit {
  on(method: 'get' | 'put', path: string, name: string, handler: (ctx: AppContext, actor: string) => Promise<void>, need?: Need): void;
  jsonBody(ctx: AppContext): Promise<Record<string, unknown>>;
  onlyKeys(body: Record<string, unknown>, known: readonly string[]): void;
  /** A query parameter given at most once; undefined when absent. */
  queryParameter(ctx: AppContext, name: string): string | undefined;
  /** The version If-Match names; undefined without one. */
  ifMatch(ctx: AppContext): string | undefined;
  /** An error admin.ts answers as a problem with this status and detail. */
  refuse(status: number, detail: string): Error;
}

const DEFAULT_REPORT_LIMIT = 100;

export function registerTrustAdminRoutes(kit: AdminRouteKit, options: TrustAdminRouteOptions): void {
  const { on, refuse, queryParameter } = kit;

  /** Refuses a query parameter the endpoint does not know: a misspelt filter must not widen the answer. */
  const onlyParameters = (ctx: AppContext, known: readonly string[]): void => {
    const unknown = Object.keys(ctx.query).find((name) => !known.includes(name));
    if (unknown !== undefined) throw refuse(400, `unknown query parameter ${JSON.stringify(unknown.slice(0, 40))}: use ${known.join(', ')}`);
  };

  const required = (ctx: AppContext, name: string, what: string): string => {
    const value = queryParameter(ctx, name);
    if (value === undefined || value === '') throw refuse(400, `the query parameter ${name} is required (${what})`);
    return value;
  };

  /** `?format=` when given, else the Accept header; the first of `formats` by default. */
  const chosenFormat = <F extends string>(ctx: AppContext, formats: Record<F, string[]>): F => {
    const names = Object.keys(formats) as F[];
    const asked = queryParameter(ctx, 'format');
    if (asked !== undefined) {
      if (!(names as string[]).includes(asked)) throw refuse(400, `format must be one of ${names.join(', ')}`);
      return asked as F;
    }
    const accepted = ctx.accepts(names.flatMap((name) => formats[name]));
    return names.find((name) => typeof accepted === 'string' && formats[name].includes(accepted)) ?? (names[0] as F);
  };

  on(
    'get',
    '/admin/v1/trust',
    'admin.trust.export',
    async (ctx) => {
      onlyParameters(ctx, ['format']);
      const format = chosenFormat(ctx, { json: ['application/json'], yaml: ['application/yaml', 'text/yaml'] });
      // The very document `portcullis trust export` writes: applying it back changes nothing.
      const { policies, version } = await options.policies.current();
      const text = formatTrustFile(policies);
      const etag = { ETag: `"${version}"` };
      if (format === 'yaml') reply(ctx, 200, { 'Content-Type': 'application/yaml; charset=utf-8', ...etag }, text);
      else replyJson(ctx, 200, parse(text) as unknown, etag);
    },
    'audit',
  );

  // Declarative, as `trust apply`: the body is the whole set; keys and trusted roots inline.
  on('put', '/admin/v1/trust', 'admin.trust.apply', async (ctx, actor) => {
    onlyParameters(ctx, ['dryRun']);
    const dryRunParameter = queryParameter(ctx, 'dryRun');
    if (dryRunParameter !== undefined && dryRunParameter !== 'true' && dryRunParameter !== 'false') throw refuse(400, 'dryRun must be true or false');
    const dryRun = dryRunParameter === 'true';
    const body = await kit.jsonBody(ctx);
    kit.onlyKeys(body, ['policies']);
    const wanted = parseTrustDocument(body, 'request body');
    const diff = await options.policies.apply(wanted, { dryRun, ifVersion: kit.ifMatch(ctx), author: { actor, clientIp: ctx.request.ip, source: 'admin API' } });
    const after = !dryRun && !isEmptyDiff(diff) && options.afterTrustChange ? await reverifyAfterChange(ctx, options.afterTrustChange) : {};
    replyJson(ctx, 200, { dryRun, ...diff, ...after });
  });

  on(
    'get',
    '/admin/v1/trust/check',
    'admin.trust.check',
    async (ctx) => {
      onlyParameters(ctx, ['image']);
      const image = required(ctx, 'image', 'repository:tag or repository@digest');
      const reference = parseImage(image);
      const explanation = await explainImage(options.explain, reference);
      if (!explanation) throw refuse(404, `no manifest ${image.slice(0, 300)} in ${reference.repository}`);
      replyJson(ctx, 200, explanationJson(explanation));
    },
    'audit',
  );

  on(
    'get',
    '/admin/v1/signatures',
    'admin.signatures.get',
    async (ctx) => {
      onlyParameters(ctx, ['repository', 'digest']);
      const repository = required(ctx, 'repository', 'a repository name');
      if (!isValidName(repository)) throw refuse(400, 'repository must be a valid repository name');
      let digest: string;
      try {
        digest = parseDigest(required(ctx, 'digest', 'sha256:…')).value;
      } catch (error) {
        if (error instanceof RegistryError) throw refuse(400, `digest: ${error.message}`);
        throw error;
      }
      const described = await options.signatures.describe(repository, digest);
      if (!described) throw refuse(404, `no manifest ${digest} in ${repository}`);
      replyJson(ctx, 200, {
        repository,
        digest,
        signatures: described.signatures.map((signature) => ({ ...signature, createdAt: new Date(signature.createdAt).toISOString() })),
        verifications: described.verifications.map(verificationJson),
      });
    },
    'audit',
  );

  on(
    'get',
    '/admin/v1/signatures/report',
    'admin.signatures.report',
    async (ctx) => {
      onlyParameters(ctx, ['repository', 'format', 'limit', 'cursor']);
      const format = chosenFormat(ctx, { json: ['application/json'], csv: ['text/csv'] });
      const repositories = queryParameter(ctx, 'repository');
      const limitText = queryParameter(ctx, 'limit');
      if (limitText !== undefined && !/^[0-9]{1,4}$/.test(limitText)) throw refuse(400, 'limit must be a whole number from 1 to 1000');
      const limit = limitText === undefined ? DEFAULT_REPORT_LIMIT : Number(limitText);
      if (limit < 1 || limit > 1000) throw refuse(400, 'limit must be a whole number from 1 to 1000');
      const page = await options.report.page({ repositories, cursor: queryParameter(ctx, 'cursor'), limit });
      const link: Record<string, string> = page.next === undefined ? {} : { Link: nextReportLink({ repository: repositories, format: queryParameter(ctx, 'format'), limit: limitText }, page.next) };
      if (format === 'csv') {
        reply(ctx, 200, { 'Content-Type': 'text/csv; charset=utf-8; header=present', ...link }, CSV_HEADER + page.entries.map(reportEntryCsv).join(''));
      } else {
        replyJson(ctx, 200, { entries: page.entries.map(reportEntryJson), ...(page.next === undefined ? {} : { next: page.next }) }, link);
      }
    },
    'audit',
  );
}

/** The hook's answer for the response; a failure is logged and said, the change stands. */
async function reverifyAfterChange(ctx: AppContext, hook: () => Promise<{ reverified: number } | void>): Promise<Record<string, unknown>> {
  try {
    const result = await hook();
    return result ? { reverified: result.reverified } : {};
  } catch (error) {
    ctx.state.log.error({ err: error }, 'stored signatures could not be verified again after a trust policy change');
    return { warnings: ['the change is made, but judging the stored signatures again failed: see the server log'] };
  }
}

function nextReportLink(filters: Record<string, string | undefined>, cursor: string): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) if (value !== undefined) query.set(name, value);
  query.set('cursor', cursor);
  return `</admin/v1/signatures/report?${query.toString()}>; rel="next"`;
}
