// The admin REST API under /admin/v1: access rules, robot accounts, refresh tokens, access
// explanations, the audit log, and the trust policies and signature reports (./trust-admin.ts,
// registered through `on` here). Every call needs a token granting `registry:admin:*`, which the
// token endpoint gives only to administrators; the read-only audit and trust endpoints also accept
// `registry:audit:*`, which it gives to auditors. Nothing here trusts an id from the client
// beyond looking it up. Mistakes are answered as RFC 9457 problem documents
// (application/problem+json), mapped from errors in one place: `problemFor`.
import { STATUS_CODES } from 'node:http';
import type Router from '@koa/router';
import type { AuditLog, ChangeTransaction } from '../../audit/events.js';
import type { Authenticator } from '../../auth/authenticator.js';
import type { AccessPolicy } from '../../auth/policy/access-policy.js';
import { collectRule, parseRulesDocument, rulesError } from '../../auth/policy/file.js';
import {
  formatSubject,
  hasControlCharacter,
  MAX_SUBJECT_LENGTH,
  personalNamespaceWarnings,
  RuleError,
  type AccessRule,
  type FieldProblem,
  type Principal,
} from '../../auth/policy/rules.js';
import { rulesVersion, type AccessRuleStore, type RuleDiff } from '../../auth/policy/store.js';
import { VersionConflictError } from '../../metadata/errors.js';
import type { RefreshTokens } from '../../auth/refresh-tokens.js';
import { RobotError, type RobotAccounts } from '../../auth/robots.js';
import { isValidName } from '../../registry/reference.js';
import { TrustPolicyError } from '../../trust/policy-file.js';
import { ReportQueryError } from '../../trust/report.js';
import type { SignatureService } from '../../trust/signatures.js';
import { reply, replyJson, type AppContext, type Handler, type RequestState } from '../context.js';
import type { Authorizer } from '../middleware/authorize.js';
import { responseOf } from '../errors.js';
import { readJsonObject } from '../json-body.js';
import { AuditQueryError, nextPageLink, parseAuditQuery, type ParsedAuditQuery } from './audit-query.js';
import { registerTrustAdminRoutes, type TrustAdministration } from './trust-admin.js';

export interface AdminRouteOptions {
  /** The bearer-token check the registry routes use too. */
  bearer: Authorizer;
  rules: AccessRuleStore;
  policy: AccessPolicy;
  robots: RobotAccounts;
  refreshTokens: RefreshTokens;
  authenticator: Authenticator;
  audit: AuditLog;
  /** stored signatures and their verification results */
  signatures: SignatureService;
  /** the trust policies, their explanations and the signature report */
  trust: TrustAdministration;
}

const BODY_LIMIT = 1024 * 1024;

/** An RFC 9457 problem document; `errors` lists per-field problems with JSON Pointers into the body. */
interface Problem {
  type: 'about:blank';
  title: string;
  status: number;
  detail: string;
  errors?: readonly FieldProblem[];
  requestId?: string;
}

/** A client mistake noticed by the routes themselves (the domain's errors are mapped below). */
class AdminRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: readonly FieldProblem[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'AdminRequestError';
  }
}

/** Titles as RFC 9110 names the statuses (Node's table still says "Payload Too Large" for 413). */
const TITLES: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

const badRequest = (detail: string, pointer?: string) => new AdminRequestError(400, detail, pointer === undefined ? [] : [{ pointer, detail }]);

/** raw-body's errors name what went wrong with the body in `type`. */
function bodyErrorStatus(error: unknown): number | undefined {
  const type = error instanceof Error ? (error as Error & { type?: unknown }).type : undefined;
  if (type === 'entity.too.large') return 413;
  if (type === 'request.aborted' || type === 'request.size.invalid') return 400;
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return 415;
  return undefined;
}

/**
 * The one place where a failure inside an admin call becomes an answer (the 401 with its token
 * challenge comes before, from the OCI error middleware). A bug becomes a 500 problem carrying
 * the request id; its details go to the log only.
 */
function problemFor(error: unknown, requestId: string): { problem: Problem; headers: Record<string, string> } {
  const problem = (status: number, detail: string, errors: readonly FieldProblem[] = [], headers: Record<string, string> = {}) => ({
    problem: { type: 'about:blank' as const, title: TITLES[status] ?? STATUS_CODES[status] ?? 'Error', status, detail, ...(errors.length > 0 ? { errors } : {}) },
    headers,
  });
  if (error instanceof AdminRequestError) return problem(error.status, error.message, error.errors, error.headers);
  if (error instanceof RuleError) return problem(400, error.message, error.problems);
  if (error instanceof RobotError) return problem(error.kind === 'missing' ? 404 : error.kind === 'exists' ? 409 : 400, error.message);
  if (error instanceof TrustPolicyError) return problem(400, error.message, error.problems.map((field) => ({ pointer: pointerOf(field.key), detail: field.detail })));
  if (error instanceof ReportQueryError) return problem(400, error.message);
  if (error instanceof VersionConflictError) return problem(412, error.message, [], { ETag: `"${error.current}"` });
  const bodyStatus = bodyErrorStatus(error);
  if (bodyStatus === 413) return problem(413, `request body is larger than ${BODY_LIMIT} bytes`);
  if (bodyStatus !== undefined) return problem(bodyStatus, (error as Error).message);
  // Everything else as the registry routes would answer it (one mapping: ../errors.ts).
  const response = responseOf(error);
  if (response && (response.status < 500 || response.status === 503)) return problem(response.status, response.message);
  const internal = problem(500, 'internal server error');
  return { ...internal, problem: { ...internal.problem, requestId } };
}

/** A trust document's key (`policies[0].signatures.mode`) as a JSON Pointer (`/policies/0/signatures/mode`). */
function pointerOf(key: string): string {
  return `/${key
    .replace(/\[(\d+)\]/g, '.$1')
    .split('.')
    .map((part) => part.replace(/~/g, '~0').replace(/\//g, '~1'))
    .join('/')}`;
}

const jsonBody = (ctx: AppContext): Promise<Record<string, unknown>> => readJsonObject(ctx, BODY_LIMIT);

/** Refuses keys a call does not know: a misspelt `expiresAt` must not make a robot that never expires. */
function onlyKeys(body: Record<string, unknown>, known: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !known.includes(key));
  if (unknown.length > 0) {
    const errors = unknown.slice(0, 20).map((key) => ({ pointer: `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`, detail: `unknown key ${key.slice(0, 40)}` }));
    throw new AdminRequestError(400, `unknown key ${unknown[0]?.slice(0, 40) ?? ''}: use ${known.join(', ')}`, errors);
  }
}

/**
 * The version an If-Match names (a whole-set replacement applies only to it); undefined without
 * one, or for `*`. An entity tag is a quoted string; a weak one never matches (RFC 9110 §13.1.1).
 */
function ifMatch(ctx: AppContext): string | undefined {
  const header = ctx.get('If-Match').trim();
  if (header === '' || header === '*') return undefined;
  const match = /^"([A-Za-z0-9_-]{1,64})"$/.exec(header);
  if (!match) throw new AdminRequestError(412, 'If-Match must be one entity tag as given in ETag (a quoted version), or *');
  return match[1];
}

/** A query parameter given at most once; undefined when absent. */
function queryParameter(ctx: AppContext, name: string): string | undefined {
  const value = ctx.query[name];
  if (Array.isArray(value)) throw badRequest(`give the query parameter ${name} at most once`);
  return value;
}

/** A name from the query or path, bounded and free of control characters before any lookup. */
function checkedName(value: string, what: string, maxLength: number): string {
  if (value.length === 0) throw badRequest(`${what} is empty`);
  if (value.length > maxLength) throw badRequest(`${what} is longer than ${maxLength} characters`);
  if (hasControlCharacter(value)) throw badRequest(`${what} contains a control character`);
  return value;
}

const showRule = (rule: AccessRule & { id?: number }) => ({
  ...(rule.id !== undefined ? { id: rule.id } : {}),
  subject: formatSubject(rule.subject),
  repositories: rule.repositories,
  actions: rule.actions,
});

const showDiff = (diff: RuleDiff) => ({
  added: diff.added.map(showRule),
  removed: diff.removed.map(showRule),
  changed: diff.changed.map(({ before, after }) => ({ before: showRule(before), after: showRule(after) })),
});

/** `POST /admin/v1/rules`: one rule, with every invalid field reported. */
function parseOneRule(body: Record<string, unknown>): AccessRule {
  const problems: FieldProblem[] = [];
  const rule = collectRule(body, '', problems);
  if (!rule) throw rulesError('request body', problems);
  return rule;
}

interface RobotRequest {
  name: string;
  description?: string;
  expiresAt?: number;
  rules: AccessRule[];
}

/** `POST /admin/v1/robots`: everything checked before anything is stored. */
function parseRobotRequest(body: Record<string, unknown>): RobotRequest {
  onlyKeys(body, ['name', 'description', 'expiresAt', 'rules']);
  const { name, description, expiresAt, rules } = body;
  if (typeof name !== 'string') throw badRequest('name is required (a string)', '/name');
  if (description !== undefined && typeof description !== 'string') throw badRequest('description must be a string', '/description');
  let expiry: number | undefined;
  if (expiresAt !== undefined) {
    expiry = typeof expiresAt === 'string' ? Date.parse(expiresAt) : Number.NaN;
    if (Number.isNaN(expiry)) throw badRequest('expiresAt must be an ISO 8601 date', '/expiresAt');
  }
  if (rules !== undefined && !Array.isArray(rules)) throw badRequest('rules must be a list of {repositories, actions}', '/rules');
  const problems: FieldProblem[] = [];
  const robotRules = (rules ?? []).map((entry: unknown, index) => {
    const pointer = `/rules/${index}`;
    if (typeof entry === 'object' && entry !== null && 'subject' in entry) {
      problems.push({ pointer: `${pointer}/subject`, detail: "a robot's rules are for the robot: leave out subject" });
      return undefined;
    }
    const own = typeof entry === 'object' && entry !== null && !Array.isArray(entry) ? { ...entry, subject: `robot:${name}` } : entry;
    return collectRule(own, pointer, problems);
  });
  if (problems.length > 0) throw rulesError('request body', problems);
  return {
    name,
    ...(description !== undefined ? { description } : {}),
    ...(expiry !== undefined ? { expiresAt: expiry } : {}),
    rules: robotRules.filter((rule): rule is AccessRule => rule !== undefined),
  };
}

/** Paths and methods of the API, for the 405 answers of the catch-all route. */
interface Endpoint {
  method: string;
  path: RegExp;
}

export function registerAdminRoutes(router: Router<RequestState>, options: AdminRouteOptions): void {
  const { bearer, rules, policy, robots, refreshTokens, authenticator, audit } = options;
  const endpoints: Endpoint[] = [];

  /**
   * Admin calls: a valid bearer token with registry:admin:* (the audit endpoints: registry:audit:*
   * does too, the auditors' scope), then the handler; failures become problems.
   */
  const admin = (name: string, handler: (ctx: AppContext, actor: string) => Promise<void>, need: 'admin' | 'audit' = 'admin'): Handler => {
    return async (ctx) => {
      ctx.state.route = name;
      // The challenge of a 401 names the scope to ask for: registry:audit:* where auditors may read.
      const claims = await bearer.authenticate(ctx, { kind: need });
      // Rules, robots and the audit log are nobody's to keep in a browser's or proxy's cache.
      ctx.set('Cache-Control', 'no-store');
      try {
        if (!bearer.grants(claims, ctx, { kind: need })) throw new AdminRequestError(403, need === 'audit' ? 'administrator or auditor rights required' : 'administrator rights required');
        await handler(ctx, claims.subject);
      } catch (error) {
        const { problem, headers } = problemFor(error, ctx.state.requestId);
        if (problem.status >= 500) ctx.state.log.error({ err: error }, problem.status === 503 ? problem.detail : 'unexpected error');
        // A body left half-read (too large, refused unread) would be taken for the next request
        // on this connection: close it after answering.
        const close: Record<string, string> = ctx.req.complete ? {} : { Connection: 'close' };
        replyJson(ctx, problem.status, problem, { ...headers, ...close }, 'application/problem+json');
      }
    };
  };

  type Method = 'get' | 'put' | 'post' | 'delete';
  const on = (method: Method, path: string, name: string, handler: (ctx: AppContext, actor: string) => Promise<void>, need: 'admin' | 'audit' = 'admin') => {
    router[method](path, admin(name, handler, need));
    endpoints.push({ method: method.toUpperCase(), path: new RegExp(`^${path.replace(/:[a-z]+/gi, '[^/]+')}/?$`, 'i') });
  };

  // Every change below commits together with its audit event or not at all; the policy re-reads
  // the rules only once the change has committed.
  const changed = (actor: string, ctx: AppContext, details: Record<string, unknown>, tx: ChangeTransaction) =>
    audit.record({ type: 'rules.changed', actor, clientIp: ctx.request.ip, details }, tx);

  // Reading the rules, the robots and an access explanation: auditors too (the console's read-only view).
  on(
    'get',
    '/admin/v1/rules',
    'admin.rules.list',
    async (ctx) => {
      const list = await rules.list();
      const version = rulesVersion(list);
      replyJson(ctx, 200, { rules: list.map(showRule), version }, { ETag: `"${version}"` });
    },
    'audit',
  );

  // Declarative: the body is the whole rule set (as in `policy apply`); ?dryRun=true only diffs.
  on('put', '/admin/v1/rules', 'admin.rules.apply', async (ctx, actor) => {
    const dryRunParameter = queryParameter(ctx, 'dryRun');
    if (dryRunParameter !== undefined && dryRunParameter !== 'true' && dryRunParameter !== 'false') throw badRequest('dryRun must be true or false');
    const dryRun = dryRunParameter === 'true';
    const body = await jsonBody(ctx);
    onlyKeys(body, ['rules']);
    const wanted = parseRulesDocument(body, 'request body');
    const ifVersion = ifMatch(ctx);
    const diff = await audit.transaction(async (tx) => {
      const applied = await rules.replaceAll(wanted, { dryRun, ifVersion }, tx);
      if (!dryRun) await changed(actor, ctx, { applied: showDiff(applied) }, tx);
      return applied;
    });
    if (!dryRun) policy.invalidate();
    replyJson(ctx, 200, { dryRun, ...showDiff(diff), basedOn: diff.basedOn, warnings: personalNamespaceWarnings(wanted) });
  });

  on('post', '/admin/v1/rules', 'admin.rules.add', async (ctx, actor) => {
    const rule = parseOneRule(await jsonBody(ctx));
    const stored = await audit.transaction(async (tx) => {
      const added = await rules.add(rule, tx);
      await changed(actor, ctx, { added: showRule(added) }, tx);
      return added;
    });
    policy.invalidate();
    replyJson(ctx, 201, { ...showRule(stored), warnings: personalNamespaceWarnings([rule]) });
  });

  on('delete', '/admin/v1/rules/:id', 'admin.rules.remove', async (ctx, actor) => {
    const text = String(ctx.params.id);
    const id = /^[0-9]{1,10}$/.test(text) ? Number(text) : Number.NaN;
    const removed = await audit.transaction(async (tx) => {
      if (!(await rules.remove(id, tx))) return false;
      await changed(actor, ctx, { removed: id }, tx);
      return true;
    });
    if (!removed) throw new AdminRequestError(404, `no rule with id ${JSON.stringify(text.slice(0, 40))}`);
    policy.invalidate();
    reply(ctx, 204);
  });

  on(
    'get',
    '/admin/v1/robots',
    'admin.robots.list',
    async (ctx) => {
      replyJson(ctx, 200, { robots: await robots.list() });
    },
    'audit',
  );

  // Creates a robot with its own rules; the secret is in this response and nowhere else.
  on('post', '/admin/v1/robots', 'admin.robots.create', async (ctx, actor) => {
    const request = parseRobotRequest(await jsonBody(ctx));
    const { robot, secret } = await audit.transaction(async (tx) => {
      const created = await robots.create(
        request.name,
        actor,
        {
          ...(request.description !== undefined ? { description: request.description } : {}),
          ...(request.expiresAt !== undefined ? { expiresAt: request.expiresAt } : {}),
        },
        tx,
      );
      for (const rule of request.rules) await rules.add(rule, tx);
      await audit.record({ type: 'robot.created', actor, clientIp: ctx.request.ip, details: { robot: created.robot.name, rules: request.rules.map(showRule) } }, tx);
      return created;
    });
    policy.invalidate();
    ctx.set('Cache-Control', 'no-store');
    replyJson(ctx, 201, { robot, username: `robot$${robot.name}`, secret });
  });

  on('delete', '/admin/v1/robots/:name', 'admin.robots.revoke', async (ctx, actor) => {
    const name = String(ctx.params.name);
    await audit.transaction(async (tx) => {
      await robots.revoke(name, tx);
      await refreshTokens.revokeAll('robot', name, tx);
      await rules.removeSubject(`robot:${name}`, tx);
      await audit.record({ type: 'robot.revoked', actor, clientIp: ctx.request.ip, details: { robot: name } }, tx);
    });
    policy.invalidate();
    reply(ctx, 204);
  });

  on('get', '/admin/v1/refresh-tokens', 'admin.refresh.list', async (ctx) => {
    const user = queryParameter(ctx, 'user');
    const name = user === undefined ? undefined : checkedName(user, 'user', 255);
    replyJson(ctx, 200, { refreshTokens: await refreshTokens.list(name === undefined ? {} : { name }) });
  });

  on('delete', '/admin/v1/refresh-tokens/:id', 'admin.refresh.revoke', async (ctx, actor) => {
    const id = String(ctx.params.id);
    // Ids are hex; anything else cannot be one (and is not sent to the database).
    const revoked =
      /^[0-9a-f]{1,64}$/.test(id) &&
      (await audit.transaction(async (tx) => {
        if (!(await refreshTokens.revoke(id, tx))) return false;
        await audit.record({ type: 'refresh_token.revoked', actor, clientIp: ctx.request.ip, details: { id } }, tx);
        return true;
      }));
    if (!revoked) throw new AdminRequestError(404, 'no such active refresh token');
    reply(ctx, 204);
  });

  // Explains what a user or robot may do on a repository, and which rules say so.
  on(
    'get',
    '/admin/v1/access',
    'admin.access.check',
    async (ctx) => {
      const subject = checkedName(queryParameter(ctx, 'subject') ?? '', 'subject', MAX_SUBJECT_LENGTH);
      const repository = queryParameter(ctx, 'repository') ?? '';
      if (!isValidName(repository)) throw badRequest('repository must be a valid repository name');
      const principal: Principal | undefined = subject === 'anonymous' ? { kind: 'anonymous' } : await authenticator.resolve(subject);
      if (!principal) throw new AdminRequestError(404, `no user or robot ${subject}`);
      replyJson(ctx, 200, {
        subject,
        repository,
        admin: policy.isAdmin(principal),
        groups: principal.kind === 'user' ? principal.identity.groups : [],
        allowed: [...(await policy.allowed(principal, repository))].sort(),
        rules: (await policy.explain(principal, repository)).map(showRule),
      });
    },
    'audit',
  );

  // The audit log, newest first, filtered and paged (./audit-query.ts); auditors may read it too.
  on(
    'get',
    '/admin/v1/audit',
    'admin.audit.list',
    async (ctx) => {
      let parsed: ParsedAuditQuery;
      try {
        parsed = parseAuditQuery(ctx.query);
      } catch (error) {
        if (error instanceof AuditQueryError) throw badRequest(error.message);
        throw error;
      }
      const page = await audit.page(parsed.query);
      const link: Record<string, string> = page.nextBeforeSeq === undefined ? {} : { Link: nextPageLink('/admin/v1/audit', parsed, page.nextBeforeSeq) };
      replyJson(ctx, 200, { events: page.events, ...(page.nextBeforeSeq === undefined ? {} : { next: String(page.nextBeforeSeq) }) }, link);
    },
    'audit',
  );

  // The hash chain's verdict, as `portcullis audit verify` prints it: intact up to the head, or
  // the first broken link. It walks every event (in pages); concurrent and closely following
  // requests share one walk (AuditLog.verifyChain), and `checkedAt` says when it ended.
  on(
    'get',
    '/admin/v1/audit/chain',
    'admin.audit.chain',
    async (ctx) => {
      const { verdict, checkedAt } = await audit.verifyChain();
      const when = { checkedAt: new Date(checkedAt).toISOString() };
      replyJson(ctx, 200, verdict.intact ? { intact: true, count: verdict.count, head: verdict.head, ...when } : { ...verdict, ...when });
    },
    'audit',
  );

  registerTrustAdminRoutes(
    { on, jsonBody, onlyKeys, queryParameter, ifMatch, refuse: (status, detail) => new AdminRequestError(status, detail) },
    { ...options.trust, signatures: options.signatures },
  );

  // Anything else under /admin: 405 with Allow on a known path, else 404 — as problems too.
  router.all(
    /^\/admin(?:\/.*)?$/i,
    admin('admin.unknown', async (ctx) => {
      const allowed = endpoints.filter((endpoint) => endpoint.path.test(ctx.path)).map((endpoint) => endpoint.method);
      if (allowed.includes('GET')) allowed.push('HEAD');
      if (allowed.length > 0) throw new AdminRequestError(405, `${ctx.method} is not allowed here`, [], { Allow: allowed.join(', ') });
      throw new AdminRequestError(404, `no admin endpoint ${ctx.path.slice(0, 200)}`);
    }),
  );
}
