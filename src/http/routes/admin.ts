// The admin REST API under /admin/v1: access rules, robot accounts, refresh tokens, access
// explanations and login audit. Every call needs a token granting `registry:admin:*`, which the
// token endpoint gives only to administrators; nothing here trusts an id from the client
// beyond looking it up.
import type Router from '@koa/router';
import getRawBody from 'raw-body';
import type { AuditEventType, AuditLog } from '../../audit/events.js';
import type { Authenticator } from '../../auth/authenticator.js';
import type { AccessPolicy } from '../../auth/policy/access-policy.js';
import { parseRulesFile } from '../../auth/policy/file.js';
import { formatSubject, parseSubject, RuleError, validateActions, validatePattern, type AccessRule, type Principal } from '../../auth/policy/rules.js';
import type { AccessRuleStore, RuleDiff } from '../../auth/policy/store.js';
import type { RefreshTokens } from '../../auth/refresh-tokens.js';
import { RobotError, type RobotAccounts } from '../../auth/robots.js';
import { grants } from '../../auth/tokens/access.js';
import { InvalidTokenError, type TokenService } from '../../auth/tokens/token-service.js';
import { RegistryError } from '../../registry/errors.js';
import { isValidName } from '../../registry/reference.js';
import { reply, replyJson, type AppContext, type Handler, type RequestState } from '../context.js';

export interface AdminRouteOptions {
  tokens: TokenService;
  rules: AccessRuleStore;
  policy: AccessPolicy;
  robots: RobotAccounts;
  refreshTokens: RefreshTokens;
  authenticator: Authenticator;
  audit: AuditLog;
  service: string;
  realm?: string | undefined;
}

const BODY_LIMIT = 1024 * 1024;

const invalid = (message: string, detail?: unknown) => new RegistryError('UNSUPPORTED', message, detail ?? null, 400);

async function jsonBody(ctx: AppContext): Promise<Record<string, unknown>> {
  const text = (await getRawBody(ctx.req, { limit: BODY_LIMIT, encoding: 'utf8' })) as string;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('request body must be a JSON object');
  return value as Record<string, unknown>;
}

/** Client mistakes in rules and robots become 400s (404 / 409 where they name a missing or taken object). */
function asRegistryError(error: unknown): unknown {
  if (error instanceof RuleError) return invalid(error.message);
  if (error instanceof RobotError) {
    const status = error.kind === 'missing' ? 404 : error.kind === 'exists' ? 409 : 400;
    return new RegistryError(status === 404 ? 'NOT_FOUND' : 'UNSUPPORTED', error.message, null, status);
  }
  return error;
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

function parseRule(body: Record<string, unknown>): AccessRule {
  if (typeof body.subject !== 'string' || typeof body.repositories !== 'string') {
    throw new RuleError('subject and repositories are required strings');
  }
  return { subject: parseSubject(body.subject), repositories: validatePattern(body.repositories), actions: validateActions(body.actions) };
}

export function registerAdminRoutes(router: Router<RequestState>, options: AdminRouteOptions): void {
  const { tokens, rules, policy, robots, refreshTokens, authenticator, audit } = options;

  /** Admin calls: a valid bearer token with registry:admin:*, then the handler; errors mapped. */
  const admin = (name: string, handler: (ctx: AppContext, actor: string) => Promise<void>): Handler => {
    return async (ctx) => {
      ctx.state.route = name;
      const realm = options.realm ?? `${ctx.protocol}://${ctx.host}/auth/token`;
      const challenge = `Bearer realm="${realm}",service="${options.service}",scope="registry:admin:*"`;
      const token = /^Bearer\s+(\S+)\s*$/i.exec(ctx.get('Authorization'))?.[1];
      if (!token) throw new RegistryError('UNAUTHORIZED', 'authentication required', null, 401, { 'WWW-Authenticate': challenge });
      const claims = await tokens.verify(token).catch((error: unknown) => {
        if (!(error instanceof InvalidTokenError)) throw error;
        throw new RegistryError('UNAUTHORIZED', error.message, null, 401, { 'WWW-Authenticate': `${challenge},error="invalid_token"` });
      });
      if (!grants(claims.access, 'registry', 'admin', '*')) {
        throw new RegistryError('DENIED', 'administrator rights required', null, 403);
      }
      try {
        await handler(ctx, claims.subject);
      } catch (error) {
        throw asRegistryError(error);
      }
    };
  };

  const changed = async (actor: string, ctx: AppContext, details: Record<string, unknown>) => {
    policy.invalidate();
    await audit.record({ type: 'rules.changed', actor, clientIp: ctx.request.ip, details });
  };

  router.get('/admin/v1/rules', admin('admin.rules.list', async (ctx) => {
    replyJson(ctx, 200, { rules: (await rules.list()).map(showRule) });
  }));

  // Declarative: the body is the whole rule set (as in `policy apply`); ?dryRun=true only diffs.
  router.put('/admin/v1/rules', admin('admin.rules.apply', async (ctx, actor) => {
    const body = await jsonBody(ctx);
    const wanted = parseRulesFile(JSON.stringify({ rules: body.rules }), 'request body');
    const dryRun = ctx.query.dryRun === 'true';
    const diff = await rules.replaceAll(wanted, { dryRun });
    if (!dryRun) await changed(actor, ctx, { applied: showDiff(diff) });
    replyJson(ctx, 200, { dryRun, ...showDiff(diff) });
  }));

  router.post('/admin/v1/rules', admin('admin.rules.add', async (ctx, actor) => {
    const stored = await rules.add(parseRule(await jsonBody(ctx)));
    await changed(actor, ctx, { added: showRule(stored) });
    replyJson(ctx, 201, showRule(stored));
  }));

  router.delete('/admin/v1/rules/:id', admin('admin.rules.remove', async (ctx, actor) => {
    const id = Number(ctx.params.id);
    if (!Number.isSafeInteger(id) || !(await rules.remove(id))) throw new RegistryError('NOT_FOUND', 'no such rule', null, 404);
    await changed(actor, ctx, { removed: id });
    reply(ctx, 204);
  }));

  router.get('/admin/v1/robots', admin('admin.robots.list', async (ctx) => {
    replyJson(ctx, 200, { robots: await robots.list() });
  }));

  // Creates a robot with its own rules; the secret is in this response and nowhere else.
  router.post('/admin/v1/robots', admin('admin.robots.create', async (ctx, actor) => {
    const body = await jsonBody(ctx);
    if (typeof body.name !== 'string') throw invalid('name is required');
    const expiresAt = body.expiresAt === undefined ? undefined : Date.parse(String(body.expiresAt));
    if (expiresAt !== undefined && Number.isNaN(expiresAt)) throw invalid('expiresAt must be an ISO 8601 date');
    const grantsWanted = Array.isArray(body.rules) ? body.rules : [];
    const robotRules = grantsWanted.map((entry: unknown) => {
      const { repositories, actions } = (entry ?? {}) as Record<string, unknown>;
      return parseRule({ subject: `robot:${body.name as string}`, repositories, actions });
    });
    const { robot, secret } = await robots.create(body.name, actor, {
      ...(typeof body.description === 'string' ? { description: body.description } : {}),
      ...(expiresAt !== undefined ? { expiresAt } : {}),
    });
    for (const rule of robotRules) await rules.add(rule);
    await audit.record({ type: 'robot.created', actor, clientIp: ctx.request.ip, details: { robot: robot.name, rules: robotRules.map(showRule) } });
    policy.invalidate();
    ctx.set('Cache-Control', 'no-store');
    replyJson(ctx, 201, { robot, username: `robot$${robot.name}`, secret });
  }));

  router.delete('/admin/v1/robots/:name', admin('admin.robots.revoke', async (ctx, actor) => {
    const name = String(ctx.params.name);
    await robots.revoke(name);
    await refreshTokens.revokeAll('robot', name);
    await rules.removeSubject(`robot:${name}`);
    policy.invalidate();
    await audit.record({ type: 'robot.revoked', actor, clientIp: ctx.request.ip, details: { robot: name } });
    reply(ctx, 204);
  }));

  router.get('/admin/v1/refresh-tokens', admin('admin.refresh.list', async (ctx) => {
    const user = typeof ctx.query.user === 'string' ? ctx.query.user : undefined;
    replyJson(ctx, 200, { refreshTokens: await refreshTokens.list(user === undefined ? {} : { name: user }) });
  }));

  router.delete('/admin/v1/refresh-tokens/:id', admin('admin.refresh.revoke', async (ctx, actor) => {
    if (!(await refreshTokens.revoke(String(ctx.params.id)))) throw new RegistryError('NOT_FOUND', 'no such active refresh token', null, 404);
    await audit.record({ type: 'refresh_token.revoked', actor, clientIp: ctx.request.ip, details: { id: ctx.params.id } });
    reply(ctx, 204);
  }));

  // Explains what a user or robot may do on a repository, and which rules say so.
  router.get('/admin/v1/access', admin('admin.access.check', async (ctx) => {
    const subject = String(ctx.query.subject ?? '');
    const repository = String(ctx.query.repository ?? '');
    if (!isValidName(repository)) throw invalid('repository must be a valid repository name');
    const principal: Principal | undefined = subject === 'anonymous' ? { kind: 'anonymous' } : await authenticator.resolve(subject);
    if (!principal) throw new RegistryError('NOT_FOUND', `no user or robot ${subject}`, null, 404);
    replyJson(ctx, 200, {
      subject,
      repository,
      admin: policy.isAdmin(principal),
      groups: principal.kind === 'user' ? principal.identity.groups : [],
      allowed: [...(await policy.allowed(principal, repository))].sort(),
      rules: (await policy.explain(principal, repository)).map(showRule),
    });
  }));

  router.get('/admin/v1/audit', admin('admin.audit.list', async (ctx) => {
    const type = typeof ctx.query.type === 'string' ? (ctx.query.type as AuditEventType) : undefined;
    const limit = Number(ctx.query.limit ?? 100);
    const bounded = Number.isSafeInteger(limit) && limit >= 1 ? limit : 100;
    replyJson(ctx, 200, { events: await audit.recent({ ...(type ? { type } : {}), limit: bounded }) });
  }));
}
