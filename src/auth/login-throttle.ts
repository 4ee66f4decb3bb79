// Failed logins are throttled with exponential backoff on three keys:
// - the user name from one address (hard: 5 free failures) — one client guessing one password;
// - the user name from anywhere (20) — guessing spread over many addresses, without letting one
//   address lock a user (or a CI robot) out for everyone after a handful of typos;
// - the address (50) — one password sprayed over many names; generous, since everyone behind a
//   NAT or proxy shares it (IPv6 addresses count per /64).
// Attempts in flight from one address are bounded too, so a burst of parallel guesses cannot
// all be checked before the first failure is recorded. After the free failures each further
// failure doubles the wait (up to `maxDelayMs`); a success clears the user's records. Per
// process and bounded: it slows guessing down; it is not a ledger. Callers pass canonical names.

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
};

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

export class LoginThrottle {
  private readonly records = new Map<string, Record>();
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly options: ThrottleOptions = DEFAULT_THROTTLE) {}

  /** Milliseconds to wait before another attempt is allowed for this user from this address; 0 when allowed. */
  retryAfter(username: string, address: string, now = Date.now()): number {
    const where = addressKey(address);
    if ((this.inFlight.get(where) ?? 0) >= this.options.maxInFlightPerAddress) return this.options.baseDelayMs;
    return Math.max(
      this.waitFor(`p:${username}\u0000${where}`, now),
      this.waitFor(`u:${username}`, now),
      this.waitFor(`a:${where}`, now),
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

  recordFailure(username: string, address: string, now = Date.now()): void {
    const where = addressKey(address);
    this.fail(`p:${username}\u0000${where}`, this.options.freePerUserAndAddress, now);
    this.fail(`u:${username}`, this.options.freePerUser, now);
    this.fail(`a:${where}`, this.options.freePerAddress, now);
  }

  recordSuccess(username: string, address: string): void {
    this.records.delete(`p:${username}\u0000${addressKey(address)}`);
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
