// Refresh tokens (docker login's offline_token, OAuth2 access_type=offline): opaque
// `<id>.<secret>` strings, stored as digests, revocable, and deliberately NOT rotated on use —
// Docker keeps presenting the first one it got (moby#39718).
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { newSecret, secretDigest, secretMatches } from './secrets.js';

const MAX_PER_PRINCIPAL = 20;

export interface RefreshPrincipal {
  kind: 'user' | 'robot';
  name: string;
  provider: 'local' | 'ldap' | 'robot';
}

export interface RefreshTokenInfo extends RefreshPrincipal {
  id: string;
  createdAt: number;
  expiresAt: number;
  lastUsedAt?: number;
  revokedAt?: number;
}

interface Row {
  id: string;
  secret_hash: string;
  principal_kind: 'user' | 'robot';
  principal_name: string;
  provider: 'local' | 'ldap' | 'robot';
  created_at: number | string;
  expires_at: number | string;
  last_used_at: number | string | null;
  revoked_at: number | string | null;
}

const toInfo = (row: Row): RefreshTokenInfo => ({
  id: row.id,
  kind: row.principal_kind,
  name: row.principal_name,
  provider: row.provider,
  createdAt: Number(row.created_at),
  expiresAt: Number(row.expires_at),
  ...(row.last_used_at !== null ? { lastUsedAt: Number(row.last_used_at) } : {}),
  ...(row.revoked_at !== null ? { revokedAt: Number(row.revoked_at) } : {}),
});

export class RefreshTokens {
  constructor(
    private readonly db: Knex,
    private readonly lifetimeMs: number,
  ) {}

  async issue(principal: RefreshPrincipal): Promise<string> {
    const id = randomBytes(12).toString('hex');
    const secret = newSecret();
    const now = Date.now();
    await this.db('refresh_tokens').insert({
      id,
      secret_hash: secretDigest(secret),
      principal_kind: principal.kind,
      principal_name: principal.name,
      provider: principal.provider,
      created_at: now,
      expires_at: now + this.lifetimeMs,
      last_used_at: null,
      revoked_at: null,
    });
    // docker login makes a new one each time: keep a principal's newest few, drop the rest.
    const keep = (await this.db('refresh_tokens')
      .where({ principal_kind: principal.kind, principal_name: principal.name })
      .orderBy('created_at', 'desc')
      .limit(MAX_PER_PRINCIPAL)
      .pluck('id')) as string[];
    await this.db('refresh_tokens').where({ principal_kind: principal.kind, principal_name: principal.name }).whereNotIn('id', keep).delete();
    return `${id}.${secret}`;
  }

  /** The principal a valid, unrevoked, unexpired token stands for, and when the token was issued. */
  async redeem(token: string): Promise<(RefreshPrincipal & { issuedAt: number }) | undefined> {
    const [id, secret, extra] = token.split('.');
    if (!id || !secret || extra !== undefined || !/^[0-9a-f]{24}$/.test(id)) return undefined;
    const row = (await this.db('refresh_tokens').where({ id }).first()) as Row | undefined;
    if (!row || !secretMatches(secret, row.secret_hash)) return undefined;
    if (row.revoked_at !== null || Number(row.expires_at) <= Date.now()) return undefined;
    await this.db('refresh_tokens').where({ id }).update({ last_used_at: Date.now() });
    return { kind: row.principal_kind, name: row.principal_name, provider: row.provider, issuedAt: Number(row.created_at) };
  }

  async list(filter: { name?: string } = {}): Promise<RefreshTokenInfo[]> {
    const query = this.db('refresh_tokens').orderBy('created_at');
    if (filter.name !== undefined) query.where({ principal_name: filter.name });
    return ((await query) as Row[]).map(toInfo);
  }

  async revoke(id: string): Promise<boolean> {
    return (await this.db('refresh_tokens').where({ id }).whereNull('revoked_at').update({ revoked_at: Date.now() })) > 0;
  }

  /** Revokes every token of a principal (user removed, robot revoked). */
  async revokeAll(kind: 'user' | 'robot', name: string): Promise<number> {
    return this.db('refresh_tokens').where({ principal_kind: kind, principal_name: name }).whereNull('revoked_at').update({ revoked_at: Date.now() });
  }
}
