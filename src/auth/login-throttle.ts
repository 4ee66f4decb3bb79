// Failed logins are throttled with exponential backoff on three keys:
// - the user name from one address (strict: 5 free failures) — one client guessing one password;
// - the user name from anywhere (20) — guessing spread over many addresses. This lock holds only
//   the addresses that failed for the name: an address that has not (the owner's) may still log
//   in with the right password, and a failure from it locks it too. So failures from many
//   addresses cannot lock the owner out, and the directory's own lockout is kept out of reach
//   when this limit is below it;
// - the address (50) — one password sprayed over many names; generous, since everyone behind a
//   NAT or proxy shares it (IPv6 addresses count per /64).
// Attempts in flight from one address are bounded too, so a burst of parallel guesses cannot
// all be checked before the first failure is recorded. After the free failures each further
// failure doubles the wait (up to `maxDelayMs`); a success clears that address's record for the
// name. Every failed login is also answered no sooner than `minFailureMs` after it arrived, so
// its timing does not tell which names exist. Per process and bounded: it slows guessing down;
// it is not a ledger. Callers pass canonical names.
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoginThrottleConfig } from '../config/config.js';

interface Record {
  failures: number;
  blockedUntil: number;
  lastFailure: number;
}

export interface ThrottleOptions {
  freePerUserAndAddress: number;
  freePerUser: number;
  freePerAddress: number;
  /** logins checked at the same time from one address */
  maxInFlightPerAddress: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** failures older than this are forgotten */
  windowMs: number;
  maxEntries: number;
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
  maxEntries: 100_000,
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

const pairKey = (username: string, where: string): string => `p:${username}\u0000${where}`;
const nameKey = (username: string): string => `u:${username}`;
const addressOnlyKey = (where: string): string => `a:${where}`;

export class LoginThrottle {
  private readonly records = new Map<string, Record>();
  private readonly inFlight = new Map<string, number>();
  private readonly options: ThrottleOptions;

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...DEFAULT_THROTTLE, ...options };
  }

  /** Milliseconds to wait before another attempt is allowed for this user from this address; 0 when allowed. */
  retryAfter(username: string, address: string, now = Date.now()): number {
    const where = addressKey(address);
    if ((this.inFlight.get(where) ?? 0) >= this.options.maxInFlightPerAddress) return this.options.baseDelayMs;
    const pair = pairKey(username, where);
    // The name-wide lock holds only addresses that failed for this name (see the top).
    const failedHere = this.active(pair, now) !== undefined;
    return Math.max(
      this.waitFor(pair, now),
      failedHere ? this.waitFor(nameKey(username), now) : 0,
      this.waitFor(addressOnlyKey(where), now),
    );
  }

  /** Marks an attempt in flight from an address; call the returned function when it is decided. */
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
   * it resolved to, when they differ, so that every spelling shares one budget).
   */
  recordFailure(usernames: string | string[], address: string, now = Date.now()): void {
    const where = addressKey(address);
    for (const username of new Set(Array.isArray(usernames) ? usernames : [usernames])) {
      const pair = pairKey(username, where);
      this.fail(pair, this.options.freePerUserAndAddress, now);
      this.fail(nameKey(username), this.options.freePerUser, now);
      // While the name is locked, an address failing for it stays locked as long as the name.
      const nameLock = this.active(nameKey(username), now)?.blockedUntil ?? 0;
      const record = this.records.get(pair);
      if (record && nameLock > record.blockedUntil) record.blockedUntil = nameLock;
    }
    this.fail(addressOnlyKey(where), this.options.freePerAddress, now);
  }

  /** A success from `address` clears that address's failures for the name, not the name-wide lock. */
  recordSuccess(usernames: string | string[], address: string): void {
    const where = addressKey(address);
    for (const username of Array.isArray(usernames) ? usernames : [usernames]) this.records.delete(pairKey(username, where));
  }

  /** Waits until `minFailureMs` (plus a little jitter) has passed since `startedAt` (a `Date.now()`). */
  async padFailure(startedAt: number): Promise<void> {
    const floor = this.options.minFailureMs;
    if (floor <= 0) return;
    const jitter = randomInt(0, Math.floor(floor / 10) + 1);
    const left = startedAt + floor + jitter - Date.now();
    if (left > 0) await sleep(left);
  }

  private active(key: string, now: number): Record | undefined {
    const record = this.records.get(key);
    if (!record) return undefined;
    if (now - record.lastFailure > this.options.windowMs) {
      this.records.delete(key);
      return undefined;
    }
    return record;
  }

  private waitFor(key: string, now: number): number {
    const record = this.active(key, now);
    return record ? Math.max(0, record.blockedUntil - now) : 0;
  }

  private fail(key: string, free: number, now: number): void {
    const previous = this.active(key, now);
    const failures = (previous?.failures ?? 0) + 1;
    const excess = failures - free;
    const delay = excess > 0 ? Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (excess - 1)) : 0;
    this.records.delete(key); // re-insert so the map stays in least-recently-failed order
    this.records.set(key, { failures, blockedUntil: Math.max(now + delay, previous?.blockedUntil ?? 0), lastFailure: now });
    if (this.records.size > this.options.maxEntries) {
      const oldest = this.records.keys().next().value;
      if (oldest !== undefined) this.records.delete(oldest);
    }
  }
}
