// Local users, kept in the metadata database: the embedded default's identity provider and
// the home of the bootstrap administrator.
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Identity, IdentityProvider } from './provider.js';
import { decoyHash, hashPassword, verifyPassword } from './passwords.js';

const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The admin_state row that says the bootstrap administrator was made (migrations/…_004_admin_state.ts). */
const BOOTSTRAP_KEY = 'bootstrap_admin';

export interface LocalUser {
  username: string;
  admin: boolean;
  createdAt: number;
}

interface UserRow {
  username: string;
  password_hash: string;
  admin: number | boolean;
  created_at: number | string;
}

export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

export function validateUsername(username: string): string {
  if (!USERNAME.test(username)) {
    throw new UserError(`invalid user name ${JSON.stringify(username.slice(0, 80))}: 1-64 of a-z 0-9 . _ -, starting with a letter or digit`);
  }
  return username;
}

function validatePassword(password: string): string {
  if (password.length < 12) throw new UserError('passwords must have at least 12 characters');
  if (password.length > 1024) throw new UserError('passwords must have at most 1024 characters');
  return password;
}

/**
 * Recently verified passwords, so a client that fetches a token per request (docker does, per
 * repository) does not pay for scrypt every time. Keys are HMACs under a per-process random key
 * over the name, the password and the stored hash — so a password changed anywhere (another
 * replica, the CLI) stops matching at once; the password itself is never kept. Only successes
 * are remembered, briefly.
 */
class VerifiedPasswords {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, number>();

  constructor(
    private readonly ttlMs = 60_000,
    private readonly maxEntries = 10_000,
  ) {}

  private id(username: string, password: string, storedHash: string): string {
    return createHmac('sha256', this.key).update(`${username}\u0000${storedHash}\u0000`).update(password).digest('hex');
  }

  has(username: string, password: string, storedHash: string): boolean {
    const id = this.id(username, password, storedHash);
    const expires = this.entries.get(id);
    if (expires === undefined) return false;
    if (expires < Date.now()) {
      this.entries.delete(id);
      return false;
    }
    return true;
  }

  add(username: string, password: string, storedHash: string): void {
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(this.id(username, password, storedHash), Date.now() + this.ttlMs);
  }

  clear(): void {
    this.entries.clear();
  }
}

export class LocalUsers implements IdentityProvider {
  readonly name = 'local';
  private readonly verified = new VerifiedPasswords();

  constructor(private readonly db: Knex) {}

  async add(username: string, password: string, options: { admin?: boolean } = {}): Promise<void> {
    validateUsername(username);
    const hash = await hashPassword(validatePassword(password));
    const now = Date.now();
    await this.db.transaction(async (trx) => {
      if (await trx('users').where({ username }).first('username')) throw new UserError(`user ${username} already exists`);
      await trx('users').insert({ username, password_hash: hash, admin: options.admin ?? false, created_at: now, updated_at: now });
    });
  }

  async setPassword(username: string, password: string): Promise<void> {
    if (!USERNAME.test(username)) throw new UserError(`no user ${JSON.stringify(username.slice(0, 80))}`);
    const hash = await hashPassword(validatePassword(password));
    const updated = await this.db('users').where({ username }).update({ password_hash: hash, updated_at: Date.now() });
    this.verified.clear();
    if (updated === 0) throw new UserError(`no user ${username}`);
  }

  /**
   * Deletes a local user, but never the last local administrator: directory administrators
   * (auth.adminGroups) do not count, since a directory change can take them away.
   */
  async remove(username: string): Promise<void> {
    this.verified.clear();
    if (!USERNAME.test(username)) throw new UserError(`no user ${JSON.stringify(username.slice(0, 80))}`);
    await this.db.transaction(async (trx) => {
      const row = (await trx('users').where({ username }).first('username', 'admin')) as Pick<UserRow, 'username' | 'admin'> | undefined;
      if (!row) throw new UserError(`no user ${username}`);
      if (Boolean(row.admin)) {
        // Locks every administrator's row (PostgreSQL), so two removals at once cannot each
        // believe the other administrator stays.
        const admins = (await trx('users').where({ admin: true }).forUpdate().pluck('username')) as string[];
        if (!admins.some((other) => other !== username)) {
          throw new UserError(
            `${username} is the last local administrator and cannot be removed; ` +
              'make another one first (portcullis user add NAME --admin)',
          );
        }
      }
      await trx('users').where({ username }).delete();
    });
  }

  /**
   * Creates the bootstrap administrator once in the life of the database: when no bootstrap was
   * ever recorded and no local user exists. Later starts, even with every user removed, create
   * nobody: an operator adds administrators with the CLI.
   */
  async bootstrap(username: string, password: string): Promise<'created' | 'users-existed' | 'done-before'> {
    if (await this.bootstrapRecorded()) return 'done-before';
    validateUsername(username);
    const hash = await hashPassword(validatePassword(password));
    const now = Date.now();
    try {
      return await this.db.transaction(async (trx) => {
        if (await trx('admin_state').where({ key: BOOTSTRAP_KEY }).first('key')) return 'done-before' as const;
        const usersExist = (await trx('users').first('username')) !== undefined;
        if (!usersExist) await trx('users').insert({ username, password_hash: hash, admin: true, created_at: now, updated_at: now });
        await trx('admin_state').insert({ key: BOOTSTRAP_KEY, value: usersExist ? 'users existed' : username, recorded_at: now });
        return usersExist ? ('users-existed' as const) : ('created' as const);
      });
    } catch (error) {
      // Another server starting on the same fresh database got there first.
      if (await this.bootstrapRecorded()) return 'done-before';
      throw error;
    }
  }

  private async bootstrapRecorded(): Promise<boolean> {
    return (await this.db('admin_state').where({ key: BOOTSTRAP_KEY }).first('key')) !== undefined;
  }

  async exists(username: string): Promise<boolean> {
    return (await this.db('users').where({ username }).first('username')) !== undefined;
  }

  async count(): Promise<number> {
    const row = (await this.db('users').count({ n: '*' }).first()) as { n: number | string } | undefined;
    return Number(row?.n ?? 0);
  }

  async list(): Promise<LocalUser[]> {
    const rows = (await this.db('users').orderBy('username').select('username', 'admin', 'created_at')) as UserRow[];
    return rows.map((row) => ({ username: row.username, admin: Boolean(row.admin), createdAt: Number(row.created_at) }));
  }

  async authenticate(username: string, password: string): Promise<Identity | undefined> {
    if (password.length === 0 || !USERNAME.test(username)) return undefined;
    const row = (await this.db('users').where({ username }).first()) as UserRow | undefined;
    if (row && this.verified.has(username, password, row.password_hash)) return toIdentity(row);
    // Hash even for unknown users, so response time does not reveal which names exist.
    const matches = await verifyPassword(password, row?.password_hash ?? (await decoyHash()));
    if (!row || !matches) return undefined;
    this.verified.add(username, password, row.password_hash);
    return toIdentity(row);
  }

  async lookup(username: string): Promise<Identity | undefined> {
    if (!USERNAME.test(username)) return undefined;
    const row = (await this.db('users').where({ username }).first()) as UserRow | undefined;
    return row && toIdentity(row);
  }

  async close(): Promise<void> {}
}

function toIdentity(row: UserRow): Identity {
  return { username: row.username, provider: 'local', groups: [], admin: Boolean(row.admin) };
}
