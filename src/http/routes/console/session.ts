// The web console's session endpoints. A person signs in with the same credentials as
// `docker login` and gets an HttpOnly, SameSite=Strict cookie scoped to /ui/api; the console then
// asks for short-lived bearer tokens with it and calls the registry and admin APIs as the CLI
// does, so the server applies the same access rules to every page.
//   POST   /ui/api/session   {username, password}  sign in (robots may not)
//   GET    /ui/api/session                         who is signed in, until when, the CSRF token
//   DELETE /ui/api/session                         sign out
//   POST   /ui/api/token     {scope: [..]}         a bearer token for those scopes, as granted
// Cross-site requests are refused before anything else (Sec-Fetch-Site, Origin, a JSON body a
// form cannot send), and every call made with the cookie must carry X-CSRF-Token as well.
import type Router from '@koa/router';
import type { Authenticator } from '../../../auth/authenticator.js';
import type { ConsoleSession, ConsoleSessions } from '../../../auth/console-sessions.js';
import type { AccessPolicy } from '../../../auth/policy/access-policy.js';
import { parseScopes } from '../../../auth/tokens/access.js';
import type { TokenService } from '../../../auth/tokens/token-service.js';
import { RegistryError } from '../../../registry/errors.js';
import { reply, replyJson, type AppContext, type RequestState } from '../../context.js';
import { badRequest, HttpError } from '../../errors.js';
import { readJsonObject } from '../../json-body.js';
import { named } from '../../named.js';

export interface ConsoleSessionOptions {
  sessions: ConsoleSessions;
  authenticator: Pick<Authenticator, 'login'>;
  policy: Pick<AccessPolicy, 'grant' | 'isAdmin' | 'mayAudit'>;
  tokens: Pick<TokenService, 'issue'>;
  /** mark the cookie Secure (HTTPS only) */
  secureCookie: boolean;
  sessionSeconds: number;
}

export const SESSION_COOKIE = 'portcullis_console';
const COOKIE_PATH = '/ui/api';
const BODY_LIMIT = 16 * 1024;
const MAX_SCOPES = 50;

const refused = (message: string) => new HttpError('DENIED', message, 403);

/**
 * Refuses a request another site made the browser send: modern browsers say so in
 * Sec-Fetch-Site; older ones at least send an Origin, which must be this host.
 */
function requireSameOrigin(ctx: AppContext): void {
  const site = ctx.get('Sec-Fetch-Site');
  if (site !== '' && site !== 'same-origin' && site !== 'none') throw refused('cross-site request refused');
  const origin = ctx.get('Origin');
  if (origin === '') return;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    throw refused('cross-site request refused');
  }
  if (host !== ctx.get('Host')) throw refused('cross-site request refused');
}

const jsonBody = (ctx: AppContext): Promise<Record<string, unknown>> => readJsonObject(ctx, BODY_LIMIT);

/** Most cookies of our name a request may carry: a sibling site can plant more (with a longer Path, sent first). */
const MAX_COOKIES = 4;

/** Every well-formed session cookie of the request, in the order the browser sent them. */
function cookiesOf(ctx: AppContext): string[] {
  const found: string[] = [];
  for (const part of ctx.get('Cookie').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) {
      const value = part.slice(eq + 1).trim();
      if (/^[0-9a-f]{24}\.[A-Za-z0-9_-]{1,64}$/.test(value)) found.push(value);
    }
  }
  return found.slice(0, MAX_COOKIES);
}

export function registerConsoleSessionRoutes(router: Router<RequestState>, options: ConsoleSessionOptions): void {
  const { sessions, authenticator, policy, tokens } = options;

  const setCookie = (ctx: AppContext, value: string, maxAge: number) => {
    const attributes = [`${SESSION_COOKIE}=${value}`, `Path=${COOKIE_PATH}`, `Max-Age=${maxAge}`, 'HttpOnly', 'SameSite=Strict', ...(options.secureCookie ? ['Secure'] : [])];
    ctx.append('Set-Cookie', attributes.join('; '));
  };
  const clearCookie = (ctx: AppContext) => setCookie(ctx, '', 0);

  const describe = async (session: ConsoleSession) => ({
    user: session.principal.identity.username,
    provider: session.principal.identity.provider,
    groups: session.principal.identity.groups,
    admin: policy.isAdmin(session.principal),
    auditor: await policy.mayAudit(session.principal),
    expiresAt: new Date(session.expiresAt).toISOString(),
    csrfToken: session.csrfToken,
  });

  /** The session of a cookie-authenticated call; with `csrf`, its X-CSRF-Token must match. */
  const live = async (ctx: AppContext): Promise<{ cookie: string; session: ConsoleSession } | undefined> => {
    for (const cookie of cookiesOf(ctx)) {
      const session = await sessions.resume(cookie);
      if (session) return { cookie, session };
    }
    return undefined;
  };

  const current = async (ctx: AppContext, csrf: boolean): Promise<{ cookie: string; session: ConsoleSession }> => {
    const found = await live(ctx);
    if (!found) {
      if (cookiesOf(ctx).length > 0) clearCookie(ctx);
      throw new HttpError('UNAUTHORIZED', 'not signed in, or the session has ended', 401);
    }
    const { cookie, session } = found;
    if (csrf && !sessions.csrfMatches(cookie, ctx.get('X-CSRF-Token'))) throw refused('missing or wrong X-CSRF-Token');
    ctx.state.principal = { kind: 'user', subject: session.principal.identity.username };
    return { cookie, session };
  };

  const noStore = (ctx: AppContext) => ctx.set('Cache-Control', 'no-store');

  router.post(
    '/ui/api/session',
    named('console.signIn', async (ctx) => {
      requireSameOrigin(ctx);
      noStore(ctx);
      const body = await jsonBody(ctx);
      const { username, password } = body;
      if (typeof username !== 'string' || typeof password !== 'string' || username === '' || password === '') throw badRequest('username and password are required');
      const principal = await authenticator.login(username, password, ctx.request.ip);
      if (principal.kind !== 'user') throw refused('robot accounts cannot sign in to the console');
      ctx.state.principal = { kind: 'user', subject: principal.identity.username };
      // Signing in again replaces the session this browser had.
      const previous = await live(ctx);
      if (previous) await sessions.end(previous.cookie);
      const cookie = await sessions.open(principal);
      const session = await sessions.resume(cookie);
      if (!session) throw new RegistryError('UNAVAILABLE', 'the new session could not be read back');
      setCookie(ctx, cookie, options.sessionSeconds);
      replyJson(ctx, 201, await describe(session), { 'Cache-Control': 'no-store' });
    }),
  );

  router.get(
    '/ui/api/session',
    named('console.session', async (ctx) => {
      requireSameOrigin(ctx);
      noStore(ctx);
      const { session } = await current(ctx, false);
      replyJson(ctx, 200, await describe(session), { 'Cache-Control': 'no-store' });
    }),
  );

  router.delete(
    '/ui/api/session',
    named('console.signOut', async (ctx) => {
      requireSameOrigin(ctx);
      noStore(ctx);
      const { cookie } = await current(ctx, true);
      await sessions.end(cookie);
      clearCookie(ctx);
      reply(ctx, 204);
    }),
  );

  router.post(
    '/ui/api/token',
    named('console.token', async (ctx) => {
      requireSameOrigin(ctx);
      noStore(ctx);
      const { session } = await current(ctx, true);
      const { scope } = await jsonBody(ctx);
      // One scope per entry (the token endpoint splits on spaces; here that would lift the limit).
      if (!Array.isArray(scope) || scope.length > MAX_SCOPES || !scope.every((entry): entry is string => typeof entry === 'string' && entry.length <= 512 && !/\s/.test(entry))) {
        throw badRequest(`scope must be a list of at most ${MAX_SCOPES} scopes, one per entry`);
      }
      const access = await policy.grant(session.principal, parseScopes(scope));
      const issued = await tokens.issue({ subject: session.principal.identity.username, access });
      replyJson(ctx, 200, { token: issued.token, expiresIn: issued.expiresIn, access }, { 'Cache-Control': 'no-store' });
    }),
  );
}
