// The Koa application: middleware order is request log → metrics → API version header → error
// mapping → routes. Routes only translate HTTP; the registry domain does the work.
import Router from '@koa/router';
import Koa from 'koa';
import type { Logger } from 'pino';
import type { Registry } from '../registry/index.js';
import { RegistryError, type ErrorCode } from '../registry/errors.js';
import { parseName } from '../registry/reference.js';
import { reply, type AppContext, type Handler, type RequestState } from './context.js';
import type { ClientAddressOf } from './client-address.js';
import { HttpError } from './errors.js';
import { named } from './named.js';
import { registerConsoleSessionRoutes } from './routes/console/session.js';
import { consoleHeaders, registerConsoleAssetRoutes } from './routes/console/assets.js';
import { errorResponses } from './middleware/errors.js';
import { requestLog } from './middleware/request-log.js';
import { durableAcknowledgement } from './middleware/durable-acknowledgement.js';
import type { CommitBarrier } from '../metadata/group-commit.js';
import { opsRoutes, type HealthChecks } from './routes/ops.js';
import { distributionRoutes, patterns, type Route } from './routes/v2/index.js';
import { BASE_EXTENSION_HEADERS } from './routes/v2/base.js';
import { signatureExtensionRoutes } from './routes/extensions.js';
import { repositoryDetailRoutes } from './routes/repository-details.js';
import type { SignatureService } from '../trust/signatures.js';
import type { SignatureIntake } from '../trust/intake.js';
import type { PullEnforcement } from '../trust/enforcement.js';
import type { CatalogFilter } from './routes/v2/listings.js';
import { tokenRoutes } from './routes/token.js';
import { registerAdminRoutes } from './routes/admin.js';
import type { TrustAdministration } from './routes/trust-admin.js';
import type { Auth } from '../auth/index.js';
import { createAuthorizer, tokenAllows, type Authorizer } from './middleware/authorize.js';
import type { Metrics } from '../metrics/metrics.js';
import { routeTemplate, UNMATCHED_ROUTE } from '../metrics/http.js';

export interface AppOptions {
  registry: Registry;
  log: Logger;
  manifestMaxBytes: number;
  healthChecks: HealthChecks;
  /** The client's address for a request (trusted proxies' X-Forwarded-For only). */
  clientAddress: ClientAddressOf;
  /** Deadline for a whole request to the token and admin routes (small bodies; slow ones are an attack). */
  authRequestTimeoutMs: number;
  auth: Auth;
  /** GPG signatures through the registry signature extension (/extensions/v2/…/signatures). */
  signatures: SignatureService;
  /** cosign signatures and sigstore bundles, verified as their manifests arrive */
  intake: SignatureIntake;
  /** the trust policies' signature requirement, at pull time */
  enforcement: PullEnforcement;
  /** the trust policies through the admin API, their explanations and the signature report */
  trust: TrustAdministration;
  /** Prometheus figures of every request (absent: none are kept). */
  metrics?: Metrics | undefined;
  /** Answer GET /metrics here, without a token; else it is 404 here (metrics.listen, or metrics off). */
  serveMetrics?: boolean;
  /** Whether a shutdown has begun: /readyz then answers 503. */
  draining?: () => boolean;
  /** What a request that committed a change waits for before it is answered (the group commit). */
  commits?: CommitBarrier;
  /** The web console under /ui/ (absent: not served). */
  console?: { sessionSeconds: number; secureCookie: boolean };
}

/** The error a malformed value of each path parameter gets. */
const PARAM_ERRORS: Record<string, ErrorCode> = {
  name: 'NAME_INVALID',
  digest: 'DIGEST_INVALID',
  reference: 'MANIFEST_INVALID',
  uuid: 'BLOB_UPLOAD_UNKNOWN',
};

function decodeParams(groups: Record<string, string | undefined>): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [key, value] of Object.entries(groups)) {
    if (value === undefined) continue;
    try {
      params[key] = decodeURIComponent(value);
    } catch {
      const code = PARAM_ERRORS[key] ?? 'NAME_INVALID';
      throw new RegistryError(code, 'malformed percent-encoding in path', { [key]: value });
    }
  }
  return params;
}

/** Routes whose request streams a blob in (the POST only with ?digest=: a monolithic upload). */
const UPLOAD_BODY_ROUTES = new Set(['upload.start', 'upload.append', 'upload.finish']);

/**
 * Binds a route: records its name, decodes and validates its path parameters, checks the
 * caller's token against the route's declared access, runs the handler. An authorised upload
 * is reported to `uploadStarted` (uploads in progress).
 */
function bind(route: Route, authorize: Authorizer['authorize'], uploadStarted?: (ctx: AppContext) => void): Handler {
  const upload = uploadStarted && UPLOAD_BODY_ROUTES.has(route.name) ? uploadStarted : undefined;
  return async (ctx: AppContext) => {
    ctx.state.route = route.name;
    ctx.state.params = decodeParams(route.pattern.exec(ctx.path)?.groups ?? {});
    const name = ctx.state.params.name;
    if (name !== undefined) ctx.state.repository = parseName(name);
    await authorize(ctx, route.access);
    if (upload && (route.name !== 'upload.start' || ctx.query.digest !== undefined)) upload(ctx);
    await route.handler(ctx);
  };
}

/**
 * The route label of a request: the template of the route that answered it, never its path
 * (which names repositories and digests). The distribution routes by their names; routes
 * registered with a path (token, admin, health) by the path the router matched.
 */
function routeLabeller(routes: readonly Route[]): (ctx: AppContext) => string {
  const templates = new Map(routes.map((route) => [route.name, routeTemplate(route.pattern)]));
  return (ctx) => {
    const byName = ctx.state.route === undefined ? undefined : templates.get(ctx.state.route);
    if (byName !== undefined) return byName;
    const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute;
    return typeof matched === 'string' ? routeTemplate(matched) : UNMATCHED_ROUTE;
  };
}

/** Drops the connection of a request to matching paths that is not answered within `ms`. */
function deadlineFor(paths: RegExp, ms: number) {
  return async (ctx: AppContext, next: () => Promise<void>): Promise<void> => {
    if (!paths.test(ctx.path)) return next();
    const socket = ctx.req.socket;
    const timer = setTimeout(() => {
      ctx.state.log.warn({ route: ctx.state.route ?? ctx.path, ms }, 'request deadline passed; connection dropped');
      socket.destroy();
    }, ms);
    timer.unref();
    ctx.res.once('close', () => clearTimeout(timer));
    await next();
  };
}

export function createApp(options: AppOptions): Koa<RequestState> {
  const app = new Koa<RequestState>();
  // Koa's own X-Forwarded-* handling trusts any peer; the address is resolved below instead.
  app.proxy = false;
  app.on('error', (error: Error & { code?: string }) => {
    // Errors after the response started (client went away mid-stream): nothing to answer.
    if (error.code === 'ECONNRESET' || error.code === 'ERR_STREAM_PREMATURE_CLOSE' || error.code === 'EPIPE') return;
    options.log.warn({ err: error }, 'response stream error');
  });

  const { auth } = options;
  const authorizer = createAuthorizer({ tokens: auth.tokens, service: auth.service, realm: auth.realm });
  const catalogFilter: CatalogFilter = (ctx) => auth.pullScope(ctx.state.auth?.subject ?? '');
  const router = new Router<RequestState>();
  const routes = [
    ...distributionRoutes(options.registry, {
      manifestMaxBytes: options.manifestMaxBytes,
      catalogFilter,
      manifestPushed: (manifest) => options.intake.arrived(manifest),
      pullGate: async (ctx, repository, reference, manifest) => {
        const verdict = await options.enforcement.judge({
          repository,
          reference,
          method: ctx.method === 'HEAD' ? 'HEAD' : 'GET',
          mayPush: tokenAllows(ctx, repository, 'push'),
          manifest,
          actor: ctx.state.auth?.subject,
          clientIp: ctx.request.ip,
        });
        if (!verdict.serve) throw new RegistryError('DENIED', verdict.reason, { policy: verdict.policy });
      },
    }),
    ...signatureExtensionRoutes(options.signatures),
    ...repositoryDetailRoutes(options.trust, options.registry.listing),
  ];
  const { metrics } = options;
  const uploadStarted = metrics ? (ctx: AppContext) => metrics.http.uploadStarted(ctx.res) : undefined;
  for (const route of routes) {
    router.register(route.pattern, [route.method], bind(route, authorizer.authorize, uploadStarted), { name: route.name, pathAsRegExp: true });
  }
  const token = tokenRoutes({
    authenticator: auth.authenticator,
    policy: auth.policy,
    tokens: auth.tokens,
    refreshTokens: auth.refreshTokens,
    service: auth.service,
    ...(metrics ? { outcomes: metrics.tokens } : {}),
  });
  router.get('/auth/token', named('token.get', token.get));
  router.post('/auth/token', named('token.post', token.post));
  router.get('/auth/jwks', named('token.jwks', token.jwks));
  registerAdminRoutes(router, {
    bearer: authorizer,
    rules: auth.rules,
    policy: auth.policy,
    robots: auth.robots,
    refreshTokens: auth.refreshTokens,
    authenticator: auth.authenticator,
    audit: auth.audit,
    signatures: options.signatures,
    trust: options.trust,
  });
  if (options.console) {
    registerConsoleSessionRoutes(router, {
      sessions: auth.consoleSessions,
      authenticator: auth.authenticator,
      policy: auth.policy,
      tokens: auth.tokens,
      ...options.console,
    });
    registerConsoleAssetRoutes(router);
  }
  const ops = opsRoutes(options.healthChecks, options.draining);
  router.get('/healthz', named('ops.live', ops.live));
  router.get('/readyz', named('ops.ready', ops.ready));
  // No token: a scraper needs no credentials, and no label names a repository or a user.
  if (metrics && options.serveMetrics) {
    router.get(
      '/metrics',
      named('ops.metrics', async (ctx) => reply(ctx, 200, { 'Content-Type': metrics.contentType, 'Cache-Control': 'no-store' }, await metrics.render())),
    );
  }

  app.use(async (ctx, next) => {
    ctx.request.ip = options.clientAddress(ctx.req);
    await next();
  });
  app.use(requestLog(options.log));
  if (metrics) app.use(metrics.http.middleware(routeLabeller(routes)));
  app.use(deadlineFor(/^\/(?:auth|admin|ui\/api)\//, options.authRequestTimeoutMs));
  if (options.console) app.use(consoleHeaders);
  app.use(async (ctx, next) => {
    ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    if (patterns.base.test(ctx.path)) ctx.set({ ...BASE_EXTENSION_HEADERS });
    await next();
  });
  app.use(errorResponses(options.log));
  if (options.commits) app.use(durableAcknowledgement(options.commits));
  app.use(router.routes());
  app.use(async (ctx) => {
    const allowed = [...new Set(routes.filter((route) => route.pattern.test(ctx.path)).map((route) => route.method))];
    if (allowed.length === 0) throw new RegistryError('NOT_FOUND', 'no such endpoint');
    throw new HttpError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed here`, 405, { Allow: allowed.join(', ') }, { allowed });
  });
  return app;
}
