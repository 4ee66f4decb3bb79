// Failed logins are throttled per user name and per client address, with exponential backoff:
// after `freeFailures` failures within the window, each further failure doubles the wait
// (up to `maxDelayMs`). A success clears the user's record. Per process and bounded: it slows
// guessing down; it is not a ledger.

interface Record {
  failures: number;
  blockedUntil: number;
  lastFailure: number;
}

export interface ThrottleOptions {
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** failures older than this are forgotten */
  windowMs: number;
  maxEntries: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = {
  freeFailures: 5,
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
    return Math.max(this.waitFor(`u:${username}`, now), this.waitFor(`a:${address}`, now));
  }

  recordFailure(username: string, address: string, now = Date.now()): void {
    this.fail(`u:${username}`, now);
    this.fail(`a:${address}`, now);
  }

  recordSuccess(username: string): void {
    this.records.delete(`u:${username}`);
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

  private fail(key: string, now: number): void {
    const previous = this.records.get(key);
    const failures = previous && now - previous.lastFailure <= this.options.windowMs ? previous.failures + 1 : 1;
    const excess = failures - this.options.freeFailures;
    const delay = excess > 0 ? Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (excess - 1)) : 0;
    this.records.delete(key); // re-insert so the map stays in least-recently-failed order
    this.records.set(key, { failures, blockedUntil: now + delay, lastFailure: now });
    if (this.records.size > this.options.maxEntries) {
      const oldest = this.records.keys().next().value;
      if (oldest !== undefined) this.records.delete(oldest);
    }
  }
}
