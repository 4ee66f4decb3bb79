// The Docker token endpoint: GET /auth/token (Basic credentials or anonymous) and
// POST /auth/token (OAuth2 password and refresh_token grants), plus GET /auth/jwks.
import getRawBody from 'raw-body';
import type { Authenticator } from '../../auth/authenticator.js';
import { subjectOf, providerOf } from '../../auth/authenticator.js';
import type { AccessPolicy } from '../../auth/policy/access-policy.js';
import type { Principal } from '../../auth/policy/rules.js';
import type { RefreshTokens } from '../../auth/refresh-tokens.js';
import { ROBOT_PREFIX } from '../../auth/robots.js';
import { formatScopes, InvalidScopeError, parseScopes, type ResourceAccess } from '../../auth/tokens/access.js';
import type { TokenService } from '../../auth/tokens/token-service.js';
import { RegistryError } from '../../registry/errors.js';
import { replyJson, type AppContext } from '../context.js';
import { badRequest, HttpError, responseOf } from '../errors.js';

export interface TokenRouteOptions {
  authenticator: Authenticator;
  policy: AccessPolicy;
  tokens: TokenService;
  refreshTokens: RefreshTokens;
  service: string;
  /** told of every token issued and every request refused (metrics) */
  outcomes?: TokenOutcomes;
}

/** How a token was asked for: GET with Basic credentials or none, POST with an OAuth2 grant (or another). */
export type TokenGrant = 'basic' | 'anonymous' | 'password' | 'refresh_token' | 'unsupported';
/** Why a token request was refused, from the status it got. */
export type TokenRefusal = 'unauthorized' | 'denied' | 'throttled' | 'invalid_request' | 'unavailable' | 'error';

export interface TokenOutcomes {
  issued(grant: TokenGrant): void;
  refused(grant: TokenGrant, reason: TokenRefusal): void;
}

function refusalOf(error: unknown): TokenRefusal {
  const status = responseOf(error)?.status ?? 500;
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'denied';
  if (status === 429) return 'throttled';
  if (status === 503) return 'unavailable';
  return status >= 400 && status < 500 ? 'invalid_request' : 'error';
}

const FORM_LIMIT = 64 * 1024;

/** Basic credentials; undefined when there is no Authorization header at all (anonymous). */
function basicCredentials(header: string): { username: string; password: string } | undefined {
  if (header === '') return undefined;
  // Anything else that is not well-formed Basic is a failed authentication, never anonymous.
  const match = /^Basic\s+([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim());
  if (!match) throw new RegistryError('UNAUTHORIZED', 'malformed Authorization header');
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw new RegistryError('UNAUTHORIZED', 'malformed Basic credentials');
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function checkService(service: string | null | undefined, expected: string): void {
  if (service && service !== expected) {
    throw badRequest(`unknown service ${JSON.stringify(service.slice(0, 100))}`);
  }
}

/** Scopes arrive as repeated parameters, each possibly holding several space-separated scopes. */
function requestedScopes(values: string[]): ResourceAccess[] {
  return parseScopes(values.flatMap((value) => value.split(' ')).filter((scope) => scope.length > 0));
}

const asList = (value: string | string[] | undefined): string[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

export function tokenRoutes(options: TokenRouteOptions) {
  const { authenticator, policy, tokens, refreshTokens, service, outcomes } = options;

  /** Runs a token request, telling `outcomes` whether it ended in a token. */
  async function counted(grant: () => TokenGrant, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (error) {
      outcomes?.refused(grant(), refusalOf(error));
      throw error;
    }
    outcomes?.issued(grant());
  }

  async function respond(ctx: AppContext, principal: Principal, scopes: ResourceAccess[], offline: boolean, oauth = false): Promise<void> {
    ctx.state.principal = { kind: principal.kind, subject: subjectOf(principal) };
    const access = await policy.grant(principal, scopes);
    const issued = await tokens.issue({ subject: subjectOf(principal), access });
    const body: Record<string, unknown> = {
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
    };
    // The OAuth2 form of the endpoint reports what was granted.
    if (oauth) body.scope = formatScopes(access);
    if (offline && principal.kind !== 'anonymous') {
      body.refresh_token = await refreshTokens.issue({
        kind: principal.kind,
        name: principal.kind === 'robot' ? principal.name : principal.identity.username,
        provider: providerOf(principal) as 'local' | 'ldap' | 'robot',
      });
    }
    ctx.set('Cache-Control', 'no-store');
    replyJson(ctx, 200, body);
  }

  return {
    /** GET: Basic credentials (docker login, every pull/push) or none (anonymous). */
    async get(ctx: AppContext): Promise<void> {
      const grant: TokenGrant = ctx.get('Authorization') === '' ? 'anonymous' : 'basic';
      await counted(
        () => grant,
        async () => {
          checkService(ctx.query.service as string | undefined, service);
          const scopes = requestedScopes(asList(ctx.query.scope));
          const credentials = basicCredentials(ctx.get('Authorization'));
          const principal: Principal = credentials
            ? await authenticator.login(credentials.username, credentials.password, ctx.request.ip)
            : { kind: 'anonymous' };
          await respond(ctx, principal, scopes, ctx.query.offline_token === 'true');
        },
      );
    },

    /**
     * POST: OAuth2 form, grant_type password or refresh_token. Client mistakes are answered as
     * OAuth2 errors (RFC 6749 §5.2: 400 with `error`); throttling and outages keep 429 / 503.
     */
    async post(ctx: AppContext): Promise<void> {
      const asked: { grant: TokenGrant } = { grant: 'unsupported' };
      try {
        await counted(
          () => asked.grant,
          () => grantToken(ctx, asked),
        );
      } catch (error) {
        const oauth = oauthError(error);
        if (!oauth) throw error;
        ctx.set('Cache-Control', 'no-store');
        replyJson(ctx, 400, oauth);
      }
    },

    async jwks(ctx: AppContext): Promise<void> {
      replyJson(ctx, 200, await tokens.jwks(), {}, 'application/jwk-set+json');
    },
  };

  /** The OAuth2 grants: password (with access_type=offline for a refresh token) and refresh_token. */
  async function grantToken(ctx: AppContext, asked: { grant: TokenGrant }): Promise<void> {
    if (!ctx.is('application/x-www-form-urlencoded')) {
      throw badRequest('expected an application/x-www-form-urlencoded body');
    }
    const form = new URLSearchParams((await getRawBody(ctx.req, { limit: FORM_LIMIT, encoding: 'utf8' })) as string);
    checkService(form.get('service'), service);
    const scopes = requestedScopes(form.getAll('scope'));
    const grant = form.get('grant_type');
    if (grant === 'password' || grant === 'refresh_token') asked.grant = grant;
    if (grant === 'password') {
      const principal = await authenticator.login(form.get('username') ?? '', form.get('password') ?? '', ctx.request.ip);
      await respond(ctx, principal, scopes, form.get('access_type') === 'offline', true);
    } else if (grant === 'refresh_token') {
      const held = await refreshTokens.redeem(form.get('refresh_token') ?? '');
      // The account is re-checked on every use: gone, disabled, locked, or a password set after
      // the token was issued, and the token no longer works.
      const principal = held
        ? await authenticator.resolve(held.kind === 'robot' ? `${ROBOT_PREFIX}${held.name}` : held.name, held.provider, { credentialsSince: held.issuedAt })
        : undefined;
      if (!principal) throw new RegistryError('UNAUTHORIZED', 'invalid or revoked refresh token');
      await respond(ctx, principal, scopes, false, true);
    } else {
      throw new UnsupportedGrantError();
    }
  }
}

class UnsupportedGrantError extends HttpError {
  constructor() {
    super('REQUEST_INVALID', 'grant_type must be password or refresh_token', 400);
  }
}

/** The OAuth2 error for a failed token request, or undefined when it is not the client's mistake. */
function oauthError(error: unknown): { error: string; error_description: string } | undefined {
  if (!(error instanceof RegistryError)) return undefined;
  const description = error.message;
  if (error instanceof InvalidScopeError) return { error: 'invalid_scope', error_description: description };
  if (error instanceof UnsupportedGrantError) return { error: 'unsupported_grant_type', error_description: description };
  if (error.code === 'UNAUTHORIZED') return { error: 'invalid_grant', error_description: description };
  const status = responseOf(error)?.status;
  if (status === 400 || status === 413) return { error: 'invalid_request', error_description: description };
  return undefined;
}
