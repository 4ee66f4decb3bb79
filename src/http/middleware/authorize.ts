// Bearer token checks for the distribution API, driven by each route's declared access. A
// missing, invalid or insufficient token gets 401 with the challenge that tells the client
// where to get a better one (Docker token auth).
import type { ResourceAccess } from '../../auth/tokens/access.js';
import { grants } from '../../auth/tokens/access.js';
import { InvalidTokenError, type VerifiedToken, type TokenService } from '../../auth/tokens/token-service.js';
import { HttpError } from '../errors.js';
import type { AppContext } from '../context.js';

/**
 * What a route needs: any valid token, an action on the route's repository, the catalog,
 * administration, or reading the audit trail (auditors; administrators may too).
 */
export type RouteAccess =
  | { kind: 'authenticated' }
  | { kind: 'repository'; action: 'pull' | 'push' | 'delete' }
  | { kind: 'catalog' }
  | { kind: 'admin' }
  | { kind: 'audit' };

export interface AuthorizerOptions {
  tokens: TokenService;
  service: string;
  /** Absolute token endpoint URL, from the configuration (never from a request's headers). */
  realm: string;
}

/** The scope a client should ask for to be allowed through. */
function scopeFor(ctx: AppContext, need: RouteAccess): string | undefined {
  if (need.kind === 'catalog') return 'registry:catalog:*';
  if (need.kind === 'admin') return 'registry:admin:*';
  if (need.kind === 'audit') return 'registry:audit:*';
  if (need.kind === 'authenticated') return undefined;
  const repository = ctx.state.repository as string;
  // Docker asks pull,push for a push; answer in the words it expects.
  const actions = need.action === 'push' ? 'pull,push' : need.action;
  return `repository:${repository}:${actions}`;
}

function challenge(ctx: AppContext, options: AuthorizerOptions, need: RouteAccess, error?: 'invalid_token' | 'insufficient_scope'): string {
  const parts = [`realm="${options.realm}"`, `service="${options.service}"`];
  const scope = scopeFor(ctx, need);
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return `Bearer ${parts.join(',')}`;
}

function satisfied(access: readonly ResourceAccess[], ctx: AppContext, need: RouteAccess): boolean {
  if (need.kind === 'authenticated') return true;
  if (need.kind === 'catalog') return grants(access, 'registry', 'catalog', '*');
  if (need.kind === 'admin') return grants(access, 'registry', 'admin', '*');
  if (need.kind === 'audit') return grants(access, 'registry', 'admin', '*') || grants(access, 'registry', 'audit', '*');
  return grants(access, 'repository', ctx.state.repository as string, need.action);
}

export interface Authorizer {
  /**
   * The one bearer-token check: a verified token's claims, recorded on the request; 401 with the
   * challenge for `need` when the token is missing or invalid.
   */
  authenticate(ctx: AppContext, need: RouteAccess): Promise<VerifiedToken>;
  /** authenticate, then 401 insufficient_scope unless the token grants `need`. */
  authorize(ctx: AppContext, need: RouteAccess): Promise<void>;
  /** Whether verified claims grant `need` (for routes that answer a refusal themselves). */
  grants(claims: VerifiedToken, ctx: AppContext, need: RouteAccess): boolean;
}

export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  async function authenticate(ctx: AppContext, need: RouteAccess): Promise<VerifiedToken> {
    const header = ctx.get('Authorization');
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      throw new HttpError('UNAUTHORIZED', 'authentication required', 401, { 'WWW-Authenticate': challenge(ctx, options, need) });
    }
    let claims: VerifiedToken;
    try {
      claims = await options.tokens.verify(match[1] as string);
    } catch (error) {
      if (!(error instanceof InvalidTokenError)) throw error;
      throw new HttpError('UNAUTHORIZED', error.message, 401, { 'WWW-Authenticate': challenge(ctx, options, need, 'invalid_token') });
    }
    ctx.state.auth = { subject: claims.subject, access: claims.access };
    return claims;
  }

  return {
    authenticate,
    grants: (claims, ctx, need) => satisfied(claims.access, ctx, need),
    async authorize(ctx, need) {
      const claims = await authenticate(ctx, need);
      if (!satisfied(claims.access, ctx, need)) {
        throw new HttpError('UNAUTHORIZED', 'access to the resource is denied', 401, {
          'WWW-Authenticate': challenge(ctx, options, need, 'insufficient_scope'),
        });
      }
    },
  };
}

/** Whether the request's verified token grants `action` on a repository other than the route's own. */
export function tokenAllows(ctx: AppContext, repository: string, action: 'pull' | 'push' | 'delete'): boolean {
  return ctx.state.auth !== undefined && grants(ctx.state.auth.access, 'repository', repository, action);
}
