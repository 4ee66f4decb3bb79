// Who is asking: checks credentials against robot accounts, local users and the directory,
// throttles failed logins, and records the outcome in the audit log.
//
// A failed login looks the same whichever way it failed: the same message ("invalid username or
// password", unless the directory judged the password right and said why not, e.g. a disabled
// account), one password hash's worth of work, and no answer before the throttle's floor. The
// reason goes to the audit log only. When the throttle's store cannot count an attempt, the login
// is answered 503 whatever the password was, after the same work and floor as a failure.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/events.js';
import { RegistryError } from '../registry/errors.js';
import { decoyVerify, type HashMeter } from './identity/passwords.js';
import type { DirectoryProvider, Identity, IdentityProvider, LoginRefusal, RefusalReason } from './identity/provider.js';
import type { LoginThrottle } from './login-throttle.js';
import { sameGroup, type Principal } from './policy/rules.js';
import { ROBOT_PREFIX, type RobotAccounts } from './robots.js';

export interface AuthenticatorOptions {
  local: IdentityProvider & { exists(username: string): Promise<boolean> };
  directory?: DirectoryProvider | undefined;
  robots: RobotAccounts;
  throttle: LoginThrottle;
  audit: AuditLog;
  /** Directory groups (DN or name) whose members administer the registry. */
  adminGroups: string[];
  log: Logger;
}

export const INVALID_CREDENTIALS = 'invalid username or password';
/** Docker fetches a token with Basic credentials for every pull: one login.success per subject and address per window. */
const SUCCESS_AUDIT_WINDOW_MS = 10 * 60_000;
/** Throttled attempts are audited once per name and address per window, not once per request. */
const THROTTLED_AUDIT_WINDOW_MS = 60_000;
const AUDITED_KEYS_MAX = 10_000;

type Provider = 'local' | 'ldap' | 'robot';
type Checked = { principal: Principal; refusal?: undefined } | { principal?: undefined; refusal: LoginRefusal; provider?: Provider };
type Attempt = { principal: Principal } | { error: Error; hashed: boolean; padded: boolean };

/** Keys seen within a window (bounded; the oldest are forgotten first): for audit events worth one line per window. */
class RecentKeys {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries = AUDITED_KEYS_MAX,
  ) {}

  /** True the first time `key` is seen within the window (and remembers it). */
  firstInWindow(key: string, now = Date.now()): boolean {
    const last = this.seen.get(key);
    if (last !== undefined && now - last < this.windowMs) return false;
    this.seen.delete(key);
    this.seen.set(key, now);
    if (this.seen.size > this.maxEntries) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return true;
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

export class Authenticator {
  /** Logins for one user name run one after another, so parallel guesses cannot outrun the throttle. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  private readonly audited = new RecentKeys(SUCCESS_AUDIT_WINDOW_MS);
  private readonly throttledAudited = new RecentKeys(THROTTLED_AUDIT_WINDOW_MS);

  constructor(private readonly options: AuthenticatorOptions) {}

  /** Throws UNAUTHORIZED for wrong credentials, TOOMANYREQUESTS when throttled, UNAVAILABLE when a backend is down. */
  async login(username: string, password: string, clientIp: string): Promise<Principal> {
    const startedAt = Date.now();
    const key = canonicalName(username);
    const previous = this.inFlight.get(key) ?? Promise.resolve();
    const attempt = previous.catch(() => undefined).then(() => this.attempt(username, password, clientIp));
    this.inFlight.set(key, attempt);
    let outcome: Attempt;
    try {
      outcome = await attempt;
    } finally {
      if (this.inFlight.get(key) === attempt) this.inFlight.delete(key);
    }
    if ('principal' in outcome) return outcome.principal;
    // Outside the per-name queue: the decoy hash and the floor slow this answer, not the next attempt.
    if (outcome.padded) {
      if (!outcome.hashed) await decoyVerify(password);
      await this.options.throttle.padFailure(startedAt);
    }
    throw outcome.error;
  }

  private async attempt(username: string, password: string, clientIp: string): Promise<Attempt> {
    const { throttle, audit } = this.options;
    const key = canonicalName(username);
    const wait = await throttle.retryAfter(key, clientIp);
    if (wait > 0) {
      if (this.throttledAudited.firstInWindow(`${key}\u0000${clientIp}`)) {
        await audit.record({ type: 'login.failure', actor: actorOf(username), clientIp, details: { reason: 'throttled' satisfies RefusalReason } });
      }
      const error = new RegistryError('TOOMANYREQUESTS', 'too many failed logins; try again later', undefined, { retryAfterSeconds: wait / 1000 });
      return { error, hashed: false, padded: false };
    }
    const done = throttle.begin(clientIp);
    const meter: HashMeter = { hashed: false };
    let result: Checked;
    try {
      result = await this.check(username, password, clientIp, meter);
    } finally {
      done();
    }
    const { hashed } = meter;
    if (!result.refusal) {
      try {
        await this.succeeded(result.principal, key, clientIp);
      } catch (error) {
        // The store could not clear the record: answered like a failure it could not count.
        return { error: asError(error), hashed, padded: true };
      }
      return { principal: result.principal };
    }
    const { reason, advice, account } = result.refusal;
    await audit.record({
      type: 'login.failure',
      actor: actorOf(username),
      clientIp,
      details: { reason, ...(result.provider ? { provider: result.provider } : {}), ...(account !== undefined ? { account } : {}) },
    });
    try {
      await throttle.recordFailure(account === undefined ? key : [key, canonicalName(account)], clientIp);
    } catch (error) {
      return { error: asError(error), hashed, padded: true };
    }
    return { error: new RegistryError('UNAUTHORIZED', advice ?? INVALID_CREDENTIALS), hashed, padded: true };
  }

  private async succeeded(principal: Principal, key: string, clientIp: string): Promise<void> {
    const subject = subjectOf(principal);
    const provider = providerOf(principal);
    await this.options.throttle.recordSuccess([key, canonicalName(subject)], clientIp);
    if (this.audited.firstInWindow(`${provider}\u0000${subject}\u0000${clientIp}`)) {
      await this.options.audit.record({ type: 'login.success', actor: subject, clientIp, details: { provider } });
    }
  }

  /**
   * Re-creates the principal behind a token subject, with fresh groups; undefined when it is
   * gone or may not be used now. `provider` (known for refresh tokens) pins where to look;
   * `credentialsSince` (a refresh token's issue time) refuses a directory account whose
   * password was set after it.
   */
  async resolve(subject: string, provider?: Provider, options: { credentialsSince?: number } = {}): Promise<Principal | undefined> {
    if (subject === '') return { kind: 'anonymous' };
    if (subject.startsWith(ROBOT_PREFIX) || provider === 'robot') {
      const name = subject.startsWith(ROBOT_PREFIX) ? subject.slice(ROBOT_PREFIX.length) : subject;
      return (await this.options.robots.isActive(name)) ? { kind: 'robot', name } : undefined;
    }
    const local = provider === 'ldap' ? undefined : await this.options.local.lookup(subject);
    const identity = local ?? (provider === 'local' ? undefined : await this.directoryIdentity(await this.options.directory?.lookup(subject)));
    if (!identity) return undefined;
    const { credentialsSince } = options;
    if (credentialsSince !== undefined && identity.passwordChangedAt !== undefined && identity.passwordChangedAt > credentialsSince) {
      this.options.log.info({ username: identity.username }, 'password changed since the refresh token was issued: refused');
      return undefined;
    }
    return { kind: 'user', identity: this.withAdmin(identity) };
  }

  private async check(username: string, password: string, clientIp: string, meter: HashMeter): Promise<Checked> {
    // No account name holds a control character (and PostgreSQL refuses a NUL outright).
    if (password.length === 0 || CONTROL_CHARACTER.test(username)) return refused('invalid_credentials');
    if (username.startsWith(ROBOT_PREFIX)) return this.checkRobot(username, password);
    // A local user owns its name in every spelling the directory would accept (case, spaces,
    // Unicode folding): `Admin` must not reach the directory and come back as `admin`.
    const { local, directory } = this.options;
    const owned = await local.exists(canonicalName(username));
    if (owned || !directory) {
      const identity = await local.authenticate(username, password, meter);
      if (identity) return { principal: { kind: 'user', identity: this.withAdmin(identity) } };
      return refused(owned ? 'wrong_password' : 'unknown_user', 'local');
    }
    const throttle = this.options.throttle;
    const outcome = await directory.login(username, password, {
      // Another spelling of a throttled account is refused without trying its password.
      mayTry: async (account) => (await throttle.retryAfter(canonicalName(account), clientIp)) === 0,
    });
    if (outcome.refusal) return { refusal: outcome.refusal, provider: 'ldap' };
    const identity = await this.directoryIdentity(outcome.identity);
    if (!identity) return refused('name_reserved', 'ldap');
    return { principal: { kind: 'user', identity: this.withAdmin(identity) } };
  }

  private async checkRobot(username: string, password: string): Promise<Checked> {
    const name = await this.options.robots.authenticate(username, password);
    if (name !== undefined) return { principal: { kind: 'robot', name } };
    const exists = await this.options.robots.isActive(username.slice(ROBOT_PREFIX.length));
    return refused(exists ? 'wrong_password' : 'unknown_user', 'robot');
  }

  /** A directory identity, unless its name belongs to a local user or looks like a robot's. */
  private async directoryIdentity(identity: Identity | undefined): Promise<Identity | undefined> {
    if (!identity) return undefined;
    const name = canonicalName(identity.username);
    if (name.startsWith(ROBOT_PREFIX) || (await this.options.local.exists(name))) {
      this.options.log.warn({ username: identity.username }, 'directory user refused: the name belongs to a local user or robot');
      return undefined;
    }
    return identity;
  }

  private withAdmin(identity: Identity): Identity {
    if (identity.admin) return identity;
    const admin = identity.groups.some((group) => this.options.adminGroups.some((wanted) => sameGroup(wanted, group)));
    return admin ? { ...identity, admin: true } : identity;
  }
}

const asError = (thrown: unknown): Error => (thrown instanceof Error ? thrown : new Error(String(thrown)));

function refused(reason: RefusalReason, provider?: Provider): Checked {
  return { refusal: { reason }, ...(provider ? { provider } : {}) };
}

/** The name as typed, bounded for the audit log. */
const actorOf = (username: string): string => username.slice(0, 255);

/** Combining marks (accents, the dot of `i̇`) that directories ignore when comparing names. */
const COMBINING_MARKS = /\p{M}/gu;

/**
 * A user name as directories compare it, or coarser: compatibility forms (fullwidth `ａ`) and
 * accents folded, Unicode case folding (`ß` → `ss`, `İ`/`ı` → `i`), spaces trimmed and collapsed.
 * Names that map to one key share one throttle budget; a coarser key only makes more names share.
 */
export function canonicalName(username: string): string {
  return username
    .normalize('NFKD')
    .replace(COMBINING_MARKS, '')
    .toUpperCase() // full case folding, roughly: ß → SS, ı → I, ſ → S
    .toLowerCase()
    .normalize('NFKC')
    .trim()
    .replace(/\s+/g, ' ');
}

/** The token subject of a principal: the user name, `robot$<name>`, or '' for anonymous (as the token spec asks). */
export function subjectOf(principal: Principal): string {
  if (principal.kind === 'robot') return `${ROBOT_PREFIX}${principal.name}`;
  if (principal.kind === 'user') return principal.identity.username;
  return '';
}

export function providerOf(principal: Principal): 'local' | 'ldap' | 'robot' | 'anonymous' {
  if (principal.kind === 'user') return principal.identity.provider;
  return principal.kind;
}
