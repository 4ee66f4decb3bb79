// Local users, kept in the metadata database (through its UserStore): the embedded default's
// identity provider and the home of the bootstrap administrator.
import { createHmac, randomBytes } from 'node:crypto';
import type { AuthStores, UserRecord, UserSummary } from '../../metadata/auth-stores.js';
import type { Identity, IdentityProvider } from './provider.js';
import { decoyHash, hashPassword, verifyPassword, type HashMeter } from './passwords.js';

const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export type LocalUser = UserSummary;

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
  constructor(private readonly stores: AuthStores) {}

  /** Creates a user; with `tx`, as part of that transaction (e.g. with the audit event recording it). */
  async add(username: string, password: string, options: { admin?: boolean } = {}, tx?: AuthStores): Promise<void> {
    validateUsername(username);
    const passwordHash = await hashPassword(validatePassword(password));
    const created = await (tx ?? this.stores).users.insert({ username, passwordHash, admin: options.admin ?? false, createdAt: Date.now() });
    if (!created) throw new UserError(`user ${username} already exists`);
  }

  async setPassword(username: string, password: string, tx?: AuthStores): Promise<void> {
    if (!USERNAME.test(username)) throw new UserError(`no user ${JSON.stringify(username.slice(0, 80))}`);
    const passwordHash = await hashPassword(validatePassword(password));
    const updated = await (tx ?? this.stores).users.setPasswordHash(username, passwordHash);
    this.verified.clear();
    if (!updated) throw new UserError(`no user ${username}`);
  }

  /**
   * Deletes a local user, but never the last local administrator: directory administrators
   * (auth.adminGroups) do not count, since a directory change can take them away.
   */
  async remove(username: string, tx?: AuthStores): Promise<void> {
    this.verified.clear();
    if (!USERNAME.test(username)) throw new UserError(`no user ${JSON.stringify(username.slice(0, 80))}`);
    await (tx ?? this.stores).transaction(async (within) => {
      const user = await within.users.get(username);
      if (!user) throw new UserError(`no user ${username}`);
      if (user.admin) {
        const admins = await within.users.lockAdministrators();
        if (!admins.some((other) => other !== username)) {
          throw new UserError(
            `${username} is the last local administrator and cannot be removed; ` +
              'make another one first (portcullis user add NAME --admin)',
          );
        }
      }
      await within.users.delete(username);
    });
  }

  /**
   * Creates the bootstrap administrator once in the life of the database: when no bootstrap was
   * ever recorded and no local user exists. Later starts, even with every user removed, create
   * nobody: an operator adds administrators with the CLI.
   */
  async bootstrap(username: string, password: string): Promise<'created' | 'users-existed' | 'done-before'> {
    if (await this.stores.users.bootstrapRecorded()) return 'done-before';
    validateUsername(username);
    const passwordHash = await hashPassword(validatePassword(password));
    try {
      return await this.stores.transaction(async (tx) => {
        if (await tx.users.bootstrapRecorded()) return 'done-before' as const;
        const usersExist = (await tx.users.count()) > 0;
        if (!usersExist && !(await tx.users.insert({ username, passwordHash, admin: true, createdAt: Date.now() }))) {
          throw new UserError(`user ${username} was created by someone else while the bootstrap ran`);
        }
        await tx.users.recordBootstrap(usersExist ? 'users existed' : username);
        return usersExist ? ('users-existed' as const) : ('created' as const);
      });
    } catch (error) {
      // Another server starting on the same fresh database got there first.
      if (await this.stores.users.bootstrapRecorded()) return 'done-before';
      throw error;
    }
  }

  async exists(username: string): Promise<boolean> {
    if (!USERNAME.test(username)) return false;
    return (await this.stores.users.get(username)) !== undefined;
  }

  count(): Promise<number> {
    return this.stores.users.count();
  }

  list(): Promise<LocalUser[]> {
    return this.stores.users.list();
  }

  /** `meter` learns whether a password hash was computed (it is not for a remembered password). */
  async authenticate(username: string, password: string, meter?: HashMeter): Promise<Identity | undefined> {
    if (password.length === 0 || !USERNAME.test(username)) return undefined;
    const user = await this.stores.users.get(username);
    if (user && this.verified.has(username, password, user.passwordHash)) return toIdentity(user);
    // Hash even for unknown users, so response time does not reveal which names exist.
    const matches = await verifyPassword(password, user?.passwordHash ?? (await decoyHash()), meter);
    if (!user || !matches) return undefined;
    this.verified.add(username, password, user.passwordHash);
    return toIdentity(user);
  }

  async lookup(username: string): Promise<Identity | undefined> {
    if (!USERNAME.test(username)) return undefined;
    const user = await this.stores.users.get(username);
    return user && toIdentity(user);
  }

  async close(): Promise<void> {}
}

function toIdentity(user: UserRecord): Identity {
  return { username: user.username, provider: 'local', groups: [], admin: user.admin };
}
