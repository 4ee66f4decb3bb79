// Who is asking: checks credentials against robot accounts, local users and the directory,
// throttles failed logins, and records the outcome in the audit log.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/events.js';
import { RegistryError } from '../registry/errors.js';
import type { Identity, IdentityProvider } from './identity/provider.js';
import type { LoginThrottle } from './login-throttle.js';
import type { Principal } from './policy/rules.js';
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

const normalise = (text: string) => text.toLowerCase().replace(/,\s+/g, ',');

export class Authenticator {
  private readonly adminGroups: Set<string>;
  /** Logins for one user name run one after another, so parallel guesses cannot outrun the throttle. */
  private readonly inFlight = new Map<string, Promise<unknown>>();

  constructor(private readonly options: AuthenticatorOptions) {
    this.adminGroups = new Set(options.adminGroups.map(normalise));
  }

  /** Throws UNAUTHORIZED for wrong credentials, TOOMANYREQUESTS when throttled, UNAVAILABLE when a backend is down. */
  async login(username: string, password: string, clientIp: string): Promise<Principal> {
    const key = username.toLowerCase();
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
    const wait = throttle.retryAfter(username, clientIp);
    if (wait > 0) {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins; try again later', undefined, 429, {
        'Retry-After': String(Math.ceil(wait / 1000)),
      });
    }
    const principal = password.length === 0 ? undefined : await this.check(username, password);
    if (!principal) {
      throttle.recordFailure(username, clientIp);
      await audit.record({ type: 'login.failure', actor: username.slice(0, 255), clientIp });
      throw new RegistryError('UNAUTHORIZED', 'invalid username or password');
    }
    throttle.recordSuccess(username, clientIp);
    await audit.record({ type: 'login.success', actor: subjectOf(principal), clientIp, details: { provider: providerOf(principal) } });
    return principal;
  }

  /** Re-creates the principal behind a token subject, with fresh groups; undefined when it is gone. */
  async resolve(subject: string): Promise<Principal | undefined> {
    if (subject === '') return { kind: 'anonymous' };
    if (subject.startsWith(ROBOT_PREFIX)) {
      const name = subject.slice(ROBOT_PREFIX.length);
      return (await this.options.robots.isActive(name)) ? { kind: 'robot', name } : undefined;
    }
    const identity = (await this.options.local.lookup(subject)) ?? (await this.options.directory?.lookup(subject));
    return identity && { kind: 'user', identity: this.withAdmin(identity) };
  }

  private async check(username: string, password: string): Promise<Principal | undefined> {
    if (username.startsWith(ROBOT_PREFIX)) {
      const name = await this.options.robots.authenticate(username, password);
      return name === undefined ? undefined : { kind: 'robot', name };
    }
    // A local user shadows a directory user of the same name: the directory is not asked. Without
    // a directory, unknown names still go through the local check (and its decoy hash), so the
    // response time does not tell which names exist.
    const local = await this.options.local.exists(username);
    const provider = local ? this.options.local : (this.options.directory ?? this.options.local);
    const identity = await provider?.authenticate(username, password);
    return identity && { kind: 'user', identity: this.withAdmin(identity) };
  }

  private withAdmin(identity: Identity): Identity {
    if (identity.admin) return identity;
    const admin = identity.groups.some((group) => this.adminGroups.has(normalise(group.name)) || (group.dn !== undefined && this.adminGroups.has(normalise(group.dn))));
    return admin ? { ...identity, admin: true } : identity;
  }
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
