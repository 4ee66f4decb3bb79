// Who is asking: checks credentials against robot accounts, local users and the directory,
// throttles failed logins, and records the outcome in the audit log.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/events.js';
import { RegistryError } from '../registry/errors.js';
import type { Identity, IdentityProvider } from './identity/provider.js';
import type { LoginThrottle } from './login-throttle.js';
import { sameGroup, type Principal } from './policy/rules.js';
import { ROBOT_PREFIX, type RobotAccounts } from './robots.js';

export interface AuthenticatorOptions {
  local: IdentityProvider & { exists(username: string): Promise<boolean> };
  directory?: IdentityProvider | undefined;
  robots: RobotAccounts;
  throttle: LoginThrottle;
  audit: AuditLog;
  /** Directory groups (DN or name) whose members administer the registry. */
  adminGroups: string[];
  log: Logger;
}


// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

export class Authenticator {
  /** Logins for one user name run one after another, so parallel guesses cannot outrun the throttle. */
  private readonly inFlight = new Map<string, Promise<unknown>>();

  constructor(private readonly options: AuthenticatorOptions) {}

  /** Throws UNAUTHORIZED for wrong credentials, TOOMANYREQUESTS when throttled, UNAVAILABLE when a backend is down. */
  async login(username: string, password: string, clientIp: string): Promise<Principal> {
    const key = canonicalName(username);
    const previous = this.inFlight.get(key) ?? Promise.resolve();
    const attempt = previous.catch(() => undefined).then(() => this.attempt(username, password, clientIp));
    this.inFlight.set(key, attempt);
    try {
      return await attempt;
    } finally {
      if (this.inFlight.get(key) === attempt) this.inFlight.delete(key);
    }
  }

  private async attempt(username: string, password: string, clientIp: string): Promise<Principal> {
    const { throttle, audit } = this.options;
    const wait = throttle.retryAfter(canonicalName(username), clientIp);
    if (wait > 0) {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins; try again later', undefined, 429, {
        'Retry-After': String(Math.ceil(wait / 1000)),
      });
    }
    let principal: Principal | undefined;
    const done = throttle.begin(clientIp);
    try {
      // No account name holds a control character; a NUL would also be refused by PostgreSQL.
      principal = password.length === 0 || CONTROL_CHARACTER.test(username) ? undefined : await this.check(username, password);
    } finally {
      done();
    }
    if (!principal) {
      throttle.recordFailure(canonicalName(username), clientIp);
      await audit.record({ type: 'login.failure', actor: username.slice(0, 255), clientIp });
      throw new RegistryError('UNAUTHORIZED', 'invalid username or password');
    }
    throttle.recordSuccess(canonicalName(username), clientIp);
    await audit.record({ type: 'login.success', actor: subjectOf(principal), clientIp, details: { provider: providerOf(principal) } });
    return principal;
  }

  /**
   * Re-creates the principal behind a token subject, with fresh groups; undefined when it is
   * gone. `provider` (known for refresh tokens) pins where to look.
   */
  async resolve(subject: string, provider?: 'local' | 'ldap' | 'robot'): Promise<Principal | undefined> {
    if (subject === '') return { kind: 'anonymous' };
    if (subject.startsWith(ROBOT_PREFIX) || provider === 'robot') {
      const name = subject.startsWith(ROBOT_PREFIX) ? subject.slice(ROBOT_PREFIX.length) : subject;
      return (await this.options.robots.isActive(name)) ? { kind: 'robot', name } : undefined;
    }
    const local = provider === 'ldap' ? undefined : await this.options.local.lookup(subject);
    const identity = local ?? (provider === 'local' ? undefined : await this.directoryIdentity(await this.options.directory?.lookup(subject)));
    return identity && { kind: 'user', identity: this.withAdmin(identity) };
  }

  private async check(username: string, password: string): Promise<Principal | undefined> {
    if (username.startsWith(ROBOT_PREFIX)) {
      const name = await this.options.robots.authenticate(username, password);
      return name === undefined ? undefined : { kind: 'robot', name };
    }
    // A local user owns its name in every spelling the directory would accept (case, spaces):
    // `Admin` must not reach the directory and come back as `admin`. Without a directory,
    // unknown names still go through the local check (and its decoy hash), so the response
    // time does not tell which names exist.
    const owned = await this.options.local.exists(canonicalName(username));
    const identity = owned || !this.options.directory
      ? await this.options.local.authenticate(username, password)
      : await this.directoryIdentity(await this.options.directory.authenticate(username, password));
    return identity && { kind: 'user', identity: this.withAdmin(identity) };
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

/** A user name as directories compare it: Unicode-normalised, trimmed, case-folded. */
export function canonicalName(username: string): string {
  return username.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();
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
