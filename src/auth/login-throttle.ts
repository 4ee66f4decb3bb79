// Failed logins are throttled with exponential backoff, on two keys: the user name (from any
// address: stops guessing one account's password) and the client address (from any name: stops
// spraying one password over many accounts). The address allows many more failures, since
// everyone behind a NAT or proxy shares it. After the free failures, each further failure
// doubles the wait (up to `maxDelayMs`); a success clears the user's record. Per process and
// bounded: it slows guessing down; it is not a ledger.

interface Record {
  failures: number;
  blockedUntil: number;
  lastFailure: number;
}

export interface ThrottleOptions {
  /** failures per user name before backoff starts */
  freeFailures: number;
  /** failures per client address before backoff starts */
  freeAddressFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** failures older than this are forgotten */
  windowMs: number;
  maxEntries: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = {
  freeFailures: 5,
  freeAddressFailures: 50,
  baseDelayMs: 1_000,
  maxDelayMs: 5 * 60_000,
  windowMs: 15 * 60_000,
  maxEntries: 100_000,
};

export class LoginThrottle {
  private readonly records = new Map<string, Record>();

  constructor(private readonly options: ThrottleOptions = DEFAULT_THROTTLE) {}

  /** Milliseconds to wait before another attempt is allowed for this user from this address; 0 when allowed. */
  retryAfter(username: string, address: string, now = Date.now()): number {
    return Math.max(this.waitFor(userKey(username), now), this.waitFor(`a:${address}`, now));
  }

  recordFailure(username: string, address: string, now = Date.now()): void {
    this.fail(userKey(username), this.options.freeFailures, now);
    this.fail(`a:${address}`, this.options.freeAddressFailures, now);
  }

  recordSuccess(username: string, _address: string): void {
    this.records.delete(userKey(username));
  }

  private waitFor(key: string, now: number): number {
    const record = this.records.get(key);
    if (!record) return 0;
    if (now - record.lastFailure > this.options.windowMs) {
      this.records.delete(key);
      return 0;
    }
    return Math.max(0, record.blockedUntil - now);
  }

  private fail(key: string, free: number, now: number): void {
    const previous = this.records.get(key);
    const failures = previous && now - previous.lastFailure <= this.options.windowMs ? previous.failures + 1 : 1;
    const excess = failures - free;
    const delay = excess > 0 ? Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (excess - 1)) : 0;
    this.records.delete(key); // re-insert so the map stays in least-recently-failed order
    this.records.set(key, { failures, blockedUntil: now + delay, lastFailure: now });
    if (this.records.size > this.options.maxEntries) {
      const oldest = this.records.keys().next().value;
      if (oldest !== undefined) this.records.delete(oldest);
    }
  }
}

/** Directory names compare case-insensitively: ALICE and alice share one record. */
const userKey = (username: string) => `u:${username.toLowerCase()}`;
