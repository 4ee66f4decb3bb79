// Web console sessions. A sign-in is a refresh token of the console's own (shorter) lifetime kept
// in an HttpOnly cookie: stored as a digest in the shared database (any replica serves it),
// revocable and listed with the others in the admin API, and ended with the account (a user
// removed, a password changed). Each use re-resolves the account, so a directory change (gone,
// disabled, groups) applies to the next page, not after the session. The console exchanges the
// session for short-lived bearer tokens and calls the same APIs as the CLI with them.
//
// CSRF: the cookie is SameSite=Strict, and every call that uses it must also carry a token
// derived from the session's secret (HMAC), which only a page of this origin can read (from the
// session endpoint). It is recomputed from the cookie, so nothing more is stored.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { providerOf, subjectOf, type Authenticator } from './authenticator.js';
import type { Principal } from './policy/rules.js';
import type { RefreshTokens } from './refresh-tokens.js';

export interface ConsoleSession {
  principal: Principal & { kind: 'user' };
  expiresAt: number;
  /** what the console sends back in X-CSRF-Token */
  csrfToken: string;
}

/** The session's cookie value is `<id>.<secret>`; the CSRF token is keyed by the secret. */
function csrfTokenOf(cookie: string): string {
  const secret = cookie.slice(cookie.indexOf('.') + 1);
  return createHmac('sha256', secret).update('portcullis console csrf v1').digest('base64url');
}

export class ConsoleSessions {
  constructor(
    private readonly tokens: RefreshTokens,
    private readonly authenticator: Pick<Authenticator, 'resolve'>,
  ) {}

  /** A new session for a person who has just signed in; the cookie's value. */
  async open(principal: Principal & { kind: 'user' }): Promise<string> {
    return this.tokens.issue({ kind: 'user', name: subjectOf(principal), provider: providerOf(principal) as 'local' | 'ldap' });
  }

  /** The live session a cookie stands for, its account checked again; undefined when it is over. */
  async resume(cookie: string): Promise<ConsoleSession | undefined> {
    const held = await this.tokens.redeem(cookie);
    if (!held || held.kind !== 'user') return undefined;
    const principal = await this.authenticator.resolve(held.name, held.provider, { credentialsSince: held.issuedAt });
    if (principal?.kind !== 'user') return undefined;
    return { principal, expiresAt: held.expiresAt, csrfToken: csrfTokenOf(cookie) };
  }

  /** Whether `given` is the CSRF token of this session's cookie (constant time). */
  csrfMatches(cookie: string, given: string): boolean {
    const expected = Buffer.from(csrfTokenOf(cookie));
    const actual = Buffer.from(given);
    return actual.length === expected.length && timingSafeEqual(actual, expected);
  }

  /** Ends a session (sign-out); false when the cookie named none. */
  async end(cookie: string): Promise<boolean> {
    const id = cookie.split('.')[0] ?? '';
    return /^[0-9a-f]{24}$/.test(id) && (await this.tokens.revoke(id));
  }
}
