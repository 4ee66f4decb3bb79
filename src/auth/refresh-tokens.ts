// Refresh tokens (docker login's offline_token, OAuth2 access_type=offline): opaque
// `<id>.<secret>` strings, stored as digests, revocable, and deliberately NOT rotated on use —
// Docker keeps presenting the first one it got (moby#39718).
import { randomBytes } from 'node:crypto';
import type { AuthStores, PrincipalKind, PrincipalProvider, RefreshTokenPurpose, RefreshTokenRecord } from '../metadata/auth-stores.js';
import { newSecret, secretDigest, secretMatches } from './secrets.js';

const MAX_PER_PRINCIPAL = 20;
const TOKEN_ID = /^[0-9a-f]{24}$/;

export interface RefreshPrincipal {
  kind: PrincipalKind;
  name: string;
  provider: PrincipalProvider;
}

export interface RefreshTokenInfo extends RefreshPrincipal {
  id: string;
  /** registry (docker login, OAuth2) or console (a web console sign-in) */
  purpose: RefreshTokenPurpose;
  createdAt: number;
  expiresAt: number;
  lastUsedAt?: number;
  revokedAt?: number;
}

/** What administrators see of a token: everything but the secret's digest. */
const toInfo = (record: RefreshTokenRecord): RefreshTokenInfo => ({
  id: record.id,
  purpose: record.purpose,
  kind: record.principalKind,
  name: record.principalName,
  provider: record.provider,
  createdAt: record.createdAt,
  expiresAt: record.expiresAt,
  ...(record.lastUsedAt !== undefined ? { lastUsedAt: record.lastUsedAt } : {}),
  ...(record.revokedAt !== undefined ? { revokedAt: record.revokedAt } : {}),
});

export class RefreshTokens {
  constructor(
    private readonly stores: AuthStores,
    private readonly lifetimeMs: number,
    /** the tokens this instance issues and accepts: a console session is no docker refresh token, nor the reverse */
    private readonly purpose: RefreshTokenPurpose = 'registry',
  ) {}

  async issue(principal: RefreshPrincipal): Promise<string> {
    const id = randomBytes(12).toString('hex');
    const secret = newSecret();
    const now = Date.now();
    // docker login makes a new one each time: keep a principal's newest few (of this purpose), drop the rest.
    await this.stores.refreshTokens.insert(
      {
        id,
        purpose: this.purpose,
        secretHash: secretDigest(secret),
        principalKind: principal.kind,
        principalName: principal.name,
        provider: principal.provider,
        createdAt: now,
        expiresAt: now + this.lifetimeMs,
      },
      MAX_PER_PRINCIPAL,
    );
    return `${id}.${secret}`;
  }

  /** The principal a valid, unrevoked, unexpired token stands for, and when the token was issued and expires. */
  async redeem(token: string): Promise<(RefreshPrincipal & { issuedAt: number; expiresAt: number }) | undefined> {
    const [id, secret, extra] = token.split('.');
    if (!id || !secret || extra !== undefined || !TOKEN_ID.test(id)) return undefined;
    const record = await this.stores.refreshTokens.get(id);
    if (!record || !secretMatches(secret, record.secretHash) || record.purpose !== this.purpose) return undefined;
    if (record.revokedAt !== undefined || record.expiresAt <= Date.now()) return undefined;
    await this.stores.refreshTokens.markUsed(id);
    return { kind: record.principalKind, name: record.principalName, provider: record.provider, issuedAt: record.createdAt, expiresAt: record.expiresAt };
  }

  async list(filter: { name?: string } = {}): Promise<RefreshTokenInfo[]> {
    const records = await this.stores.refreshTokens.list(filter.name === undefined ? {} : { principalName: filter.name });
    return records.map(toInfo);
  }

  /** Revokes one token; with `tx`, as part of that transaction (with the audit event recording it). */
  revoke(id: string, tx?: AuthStores): Promise<boolean> {
    return (tx ?? this.stores).refreshTokens.revoke(id);
  }

  /** Revokes every token of a principal (user removed, robot revoked). */
  revokeAll(kind: PrincipalKind, name: string, tx?: AuthStores): Promise<number> {
    return (tx ?? this.stores).refreshTokens.revokeAll(kind, name);
  }
}
