// Failed logins are throttled with exponential backoff on three keys:
// - the user name from one address (strict: 5 free failures) — one client guessing one password;
// - the user name from anywhere (20) — guessing spread over many addresses. This lock holds only
//   the addresses that failed for the name: an address that has not (the owner's) may still log
//   in with the right password, and a failure from it locks it too. So failures from many
//   addresses cannot lock the owner out, and the directory's own lockout is kept out of reach
//   when this limit is below it;
// - the address (50) — one password sprayed over many names; generous, since everyone behind a
//   NAT or proxy shares it (IPv6 addresses count per /64).
// After the free failures each further failure doubles the wait (from `baseDelayMs` up to
// `maxDelayMs`); a success clears that address's failures for the name (not the name-wide count).
// A key's failures are forgotten once `windowMs` has passed since its last failure.
//
// Where it lives: the counts are kept by rate-limiter-flexible in the metadata database
// (migrations/20261130_009_login_throttle.ts; RateLimiterPostgres on PostgreSQL, RateLimiterSQLite
// on the embedded SQLite, both through the server's knex pool), so every replica counts the same
// failures and a restart forgets none. SQLite has one server process anyway, but a counter that a
// restart (or a crash an attacker provokes) would reset is no counter. Per key, the library keeps
// an atomic count (its own window, restarted from the last count while failures keep coming) and
// a snapshot of the count at the last failure, which expires `windowMs` after it: the wait is
// read from that snapshot. Keys are digests: no user name or address is stored in clear.
//
// Per process, in memory, by design: the attempts in flight per address (a bound on parallel
// guesses while their failures are not yet recorded: it protects this process's password
// hashing, and the store's counts hold the rest) and the floor every failed login waits for
// (`minFailureMs`), so its timing does not tell which names exist.
//
// A store that cannot be read or written fails closed: the login is answered 503 (the error is a
// DatabaseUnavailableError), never let through uncounted. A store that reads but cannot write (a
// full disk, a read-only standby) would otherwise check every guess without counting it: so once
// a failure (or a success's clearing) cannot be written, this process checks no password until a
// write to the store goes through again (each attempt tries one first, else 503). That guard is
// in memory and only ever refuses; a guesser gets at most one uncounted guess per process while
// the store cannot write.
// Callers pass canonical names.
import { createHash, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import { RateLimiterPostgres, RateLimiterSQLite, type RateLimiterStoreAbstract } from 'rate-limiter-flexible';
import { LOGIN_THROTTLE_TABLE } from '../../migrations/20261130_009_login_throttle.js';
import type { LoginThrottleConfig } from '../config/config.js';
import { DatabaseUnavailableError } from '../metadata/errors.js';

export interface ThrottleOptions {
  freePerUserAndAddress: number;
  freePerUser: number;
  freePerAddress: number;
  /** logins checked at the same time from one address (per process) */
  maxInFlightPerAddress: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** a key's failures are forgotten this long after its last one */
  windowMs: number;
  /** a failed login is answered no sooner than this after it arrived (plus up to 10% jitter) */
  minFailureMs: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = {
  freePerUserAndAddress: 5,
  freePerUser: 20,
  freePerAddress: 50,
  maxInFlightPerAddress: 16,
  baseDelayMs: 1_000,
  maxDelayMs: 5 * 60_000,
  windowMs: 15 * 60_000,
  minFailureMs: 300,
};

/** The options `auth.loginThrottle` sets; the rest keep their defaults. */
export function throttleOptions(config: LoginThrottleConfig): ThrottleOptions {
  return {
    ...DEFAULT_THROTTLE,
    freePerUserAndAddress: config.freeFailuresPerNameAndAddress,
    freePerUser: config.freeFailuresPerName,
    freePerAddress: config.freeFailuresPerAddress,
    maxDelayMs: config.maxDelaySeconds * 1000,
    windowMs: config.failureWindowSeconds * 1000,
    minFailureMs: config.minFailedLoginMs,
  };
}

/** The metadata database the counts live in. */
export interface ThrottleStore {
  db: Knex;
  driver: 'sqlite' | 'postgres';
}

/** IPv4 as is; IPv6 by its /64, which one subscriber usually has whole. */
export function addressKey(address: string): string {
  const plain = address.replace(/^::ffff:/, '');
  if (!plain.includes(':')) return plain;
  const [head = '', tail = ''] = plain.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = plain.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** The store's key for a name, an address, or both: a digest, fixed in length, of what it counts. */
function digestOf(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('base64url');
}

/** Expired rows are deleted at most this often per process (the rows only matter while unexpired). */
const SWEEP_INTERVAL_MS = 5 * 60_000;

/** What the store remembers of one key: how many failures, and how long since the last. */
interface Remembered {
  failures: number;
  sinceLastMs: number;
}

/** The failures of one kind of key (name and address, name, address), counted in the shared store. */
class FailureCount {
  private readonly limiter: RateLimiterStoreAbstract;

  constructor(
    store: ThrottleStore,
    kind: string,
    private readonly free: number,
    private readonly options: ThrottleOptions,
  ) {
    const settings = {
      storeClient: store.db,
      storeType: 'knex',
      tableName: LOGIN_THROTTLE_TABLE,
      // Made by our migration: the library never creates tables at run time.
      tableCreated: true,
      // Its timer sweeps unguarded (a failed sweep on SQLite would be an unhandled rejection); see sweepExpired.
      clearExpiredByTimeout: false,
      keyPrefix: `login-${kind}`,
      points: free,
      duration: options.windowMs / 1000,
    };
    this.limiter = store.driver === 'postgres' ? new RateLimiterPostgres(settings) : new RateLimiterSQLite(settings);
  }

  /** The failures remembered for `key`; undefined once the window has passed since the last one. */
  async remembered(key: string): Promise<Remembered | undefined> {
    const last = await this.limiter.get(lastKey(key));
    if (!last) return undefined;
    // The snapshot expires a window after the failure that wrote it (on that server's clock).
    const sinceLastMs = Math.max(0, this.options.windowMs - last.msBeforeNext);
    return { failures: last.consumedPoints, sinceLastMs };
  }

  /** Milliseconds `remembered` still has to wait: none for the free failures, then doubling. */
  waitOf(remembered: Remembered | undefined): number {
    const excess = (remembered?.failures ?? 0) - this.free;
    if (!remembered || excess <= 0) return 0;
    const delay = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (excess - 1));
    return Math.max(0, delay - remembered.sinceLastMs);
  }

  async fail(key: string): Promise<void> {
    // Atomic: failures recorded at the same time on several servers are all counted.
    let counted = await this.limiter.penalty(countKey(key));
    if (counted.isFirstInDuration) {
      // The count's own window restarts from its first failure; while failures keep coming less
      // than a window apart, the new one starts from the count remembered at the last of them.
      const before = await this.limiter.get(lastKey(key));
      if (before) counted = await this.limiter.penalty(countKey(key), before.consumedPoints);
    }
    // The snapshot is whichever write lands last: when failures race, it may hold a count one
    // short until the next failure (the count itself loses none).
    await this.limiter.set(lastKey(key), counted.consumedPoints, this.options.windowMs / 1000);
  }

  async forget(key: string): Promise<void> {
    await Promise.all([this.limiter.delete(countKey(key)), this.limiter.delete(lastKey(key))]);
  }

  /** Writes a row that means nothing (it expires in a minute): does the store take writes? */
  async probeWrite(): Promise<void> {
    await this.limiter.set('probe', 0, 60);
  }
}

const countKey = (key: string): string => `count:${key}`;
const lastKey = (key: string): string => `last:${key}`;

/** Runs a read or write of the counts; any failure of the store is a 503, never a login let through. */
async function inStore<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw error instanceof DatabaseUnavailableError ? error : new DatabaseUnavailableError(error);
  }
}

export class LoginThrottle {
  private readonly pairs: FailureCount;
  private readonly names: FailureCount;
  private readonly addresses: FailureCount;
  private readonly inFlight = new Map<string, number>();
  private readonly options: ThrottleOptions;
  private lastSweep = 0;
  /** A write to the store failed, and none has gone through since (see the top). */
  private unwritable = false;

  constructor(
    private readonly store: ThrottleStore,
    options: Partial<ThrottleOptions> = {},
  ) {
    this.options = { ...DEFAULT_THROTTLE, ...options };
    this.pairs = new FailureCount(store, 'pair', this.options.freePerUserAndAddress, this.options);
    this.names = new FailureCount(store, 'name', this.options.freePerUser, this.options);
    this.addresses = new FailureCount(store, 'address', this.options.freePerAddress, this.options);
  }

  /**
   * Milliseconds to wait before another attempt is allowed for this user from this address; 0
   * when allowed. Throws DatabaseUnavailableError when the counts cannot be read.
   */
  async retryAfter(username: string, address: string): Promise<number> {
    const where = addressKey(address);
    if ((this.inFlight.get(where) ?? 0) >= this.options.maxInFlightPerAddress) return this.options.baseDelayMs;
    if (this.unwritable) {
      await this.writing(() => this.addresses.probeWrite());
      this.unwritable = false;
    }
    const [pair, name, fromAddress] = await inStore(() =>
      Promise.all([this.pairs.remembered(digestOf(username, where)), this.names.remembered(digestOf(username)), this.addresses.remembered(digestOf(where))]),
    );
    // The name-wide lock holds only addresses that failed for this name (see the top).
    return Math.max(this.pairs.waitOf(pair), pair ? this.names.waitOf(name) : 0, this.addresses.waitOf(fromAddress));
  }

  /** Marks an attempt in flight from an address (in this process); call the returned function when it is decided. */
  begin(address: string): () => void {
    const where = addressKey(address);
    this.inFlight.set(where, (this.inFlight.get(where) ?? 0) + 1);
    return () => {
      const left = (this.inFlight.get(where) ?? 1) - 1;
      if (left <= 0) this.inFlight.delete(where);
      else this.inFlight.set(where, left);
    };
  }

  /**
   * Records a failure from `address` for each of `usernames` (the name as typed and the account
   * it resolved to, when they differ, so that every spelling shares one budget). Throws
   * DatabaseUnavailableError when it cannot be recorded.
   */
  async recordFailure(usernames: string | string[], address: string): Promise<void> {
    const where = addressKey(address);
    const names = [...new Set(Array.isArray(usernames) ? usernames : [usernames])];
    await this.writing(() =>
      Promise.all([
        ...names.flatMap((username) => [this.pairs.fail(digestOf(username, where)), this.names.fail(digestOf(username))]),
        this.addresses.fail(digestOf(where)),
      ]),
    );
    this.sweepExpired();
  }

  /**
   * A success from `address` clears that address's failures for the name, not the name-wide
   * count. Throws DatabaseUnavailableError when they cannot be cleared.
   */
  async recordSuccess(usernames: string | string[], address: string): Promise<void> {
    const where = addressKey(address);
    const names = [...new Set(Array.isArray(usernames) ? usernames : [usernames])];
    await this.writing(() => Promise.all(names.map((username) => this.pairs.forget(digestOf(username, where)))));
  }

  /** Waits until `minFailureMs` (plus a little jitter) has passed since `startedAt` (a `Date.now()`). */
  async padFailure(startedAt: number): Promise<void> {
    const floor = this.options.minFailureMs;
    if (floor <= 0) return;
    const jitter = randomInt(0, Math.floor(floor / 10) + 1);
    const left = startedAt + floor + jitter - Date.now();
    if (left > 0) await sleep(left);
  }

  /** A write to the store: when it fails, no password is checked until one goes through again. */
  private async writing<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await inStore(work);
    } catch (error) {
      this.unwritable = true;
      throw error;
    }
  }

  /** Deletes rows past their expiry now and then; a sweep that fails is simply tried again later. */
  private sweepExpired(): void {
    const now = Date.now();
    if (now - this.lastSweep < SWEEP_INTERVAL_MS) return;
    this.lastSweep = now;
    this.store
      .db(LOGIN_THROTTLE_TABLE)
      .where('expire', '<', now)
      .delete()
      .catch(() => undefined);
  }
}
