// Directory users (OpenLDAP, FreeIPA, Active Directory) through ldapts.
//
// A login is: service-account search for the user (one pooled, service-bound connection), a bind as
// the user's DN with the password on a short-lived connection of its own, then the user's groups
// (from memberOf or a group search, nested groups optionally followed). Only the group lookup is
// cached; the password bind never is, and the account's state (disabled, locked, expired, password
// to change: ldap-account.ts) is read on every login and every lookup, whatever user.filter says.
// A directory that cannot be reached becomes BackendUnavailableError, a wrong setting a
// DirectorySettingError naming it (ldap-errors.ts); a refused login is an outcome, never an error.
//
// Filters are built as ldapts Filter objects, so user input is sent as a BER octet string and is
// never parsed as filter syntax (no injection through `*`, `(` or `)`).
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import {
  AndFilter,
  Client,
  EqualityFilter,
  ExtensibleFilter,
  FilterParser,
  OrFilter,
  PresenceFilter,
  type Entry,
  type Filter,
} from 'ldapts';
import type { Logger } from 'pino';
import { ConfigError, type LdapConfig } from '../../config/config.js';
import { RegistryError } from '../../registry/errors.js';
import { GroupCache } from './group-cache.js';
import {
  ACCOUNT_STATE_ATTRIBUTES,
  accountState,
  binaryValue,
  bindRefusal,
  PasswordPolicyControl,
  primaryGroupSid,
  type AccountState,
  type AccountVerdict,
} from './ldap-account.js';
import { ConnectionPool, isLdapResult, LdapConnection, type ConnectionSettings } from './ldap-connection.js';
import {
  DirectorySettingError,
  errorText,
  isMissingBase,
  missingBase,
  serviceBindFailure,
  tlsFailure,
  unavailable,
} from './ldap-errors.js';
import type { DirectoryProvider, Group, Identity, LoginHooks, LoginOutcome, RefusalReason } from './provider.js';

/** Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: matches through nested group membership. */
const IN_CHAIN_RULE = '1.2.840.113556.1.4.1941';
/** supportedCapabilities of Active Directory (…800) and AD LDS (…1851): the servers that know IN_CHAIN. */
const AD_CAPABILITIES = new Set(['1.2.840.113556.1.4.800', '1.2.840.113556.1.4.1851']);
const MAX_USERNAME_LENGTH = 256;
/** Group DNs per parent-group search in the breadth-first nested lookup (keeps filters small). */
const GROUP_BATCH = 32;
/** Result codes of a user bind that mean "the directory is in trouble", not "wrong credentials". */
const SERVER_TROUBLE = new Set([1, 2, 3, 11, 51, 52, 80]);
/** After the directory refused the service account, requests fail fast for this long instead of binding again (AD would lock it). */
const SERVICE_REFUSAL_HOLD_MS = 10_000;

/**
 * Told how long each directory operation took and how it ended (metrics): `refused` when the
 * directory answered with a result code (a wrong password, no such entry), `error` when it could
 * not be reached, timed out or said it is in trouble. The first operation on a connection includes
 * connecting to the directory; a search includes opening a pooled connection when it needed one.
 */
export type DirectoryTimer = (operation: 'bind' | 'search', seconds: number, outcome: 'ok' | 'refused' | 'error') => void;

/** What the person is told when the directory judged the password right and still said no. */
const ADVICE: Partial<Record<RefusalReason, string>> = {
  disabled: 'your directory account is disabled; ask your directory administrator to enable it',
  account_expired: 'your directory account has expired; ask your directory administrator to extend it',
  password_expired: 'your directory password has expired; change it (for example by signing in to your workstation), then log in again',
  must_change_password: 'your directory password must be changed before it can be used; change it, then log in again',
  restricted: 'your directory account may not log in at this time or from here; ask your directory administrator',
};

// ---------------------------------------------------------------------------------------------
// Small helpers

/** An entry's values for `attribute` (attribute names compared case-insensitively, as LDAP does). */
export function attributeValues(entry: Entry, attribute: string): string[] {
  const wanted = attribute.toLowerCase();
  const key = Object.keys(entry).find((k) => k !== 'dn' && k.toLowerCase() === wanted);
  const value = key === undefined ? undefined : entry[key];
  if (value === undefined) return [];
  const list: (Buffer | string)[] = Array.isArray(value) ? value : [value];
  return list.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v));
}

/**
 * The value of a DN's first RDN when its attribute is `attribute` (RFC 4514 escapes decoded), else
 * undefined. Works on UTF-8 bytes: the special characters are ASCII, and no byte of a multi-byte
 * UTF-8 character is ASCII, so escapes and separators can be found byte by byte.
 */
export function firstRdnValue(dn: string, attribute: string): string | undefined {
  const eq = dn.indexOf('=');
  if (eq < 0 || dn.slice(0, eq).trim().toLowerCase() !== attribute.toLowerCase()) return undefined;
  const raw = Buffer.from(dn.slice(eq + 1).trimStart(), 'utf8');
  if (raw[0] === 0x23) return undefined; // '#': a BER-encoded value, not worth decoding here
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i] ?? 0;
    if (byte === 0x2c || byte === 0x2b) break; // ',' ends the RDN, '+' ends its first value
    if (byte !== 0x5c) {
      out.push(byte);
      continue;
    }
    const hex = raw.subarray(i + 1, i + 3).toString('latin1');
    if (/^[0-9a-fA-F]{2}$/.test(hex)) {
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (i + 1 < raw.length) {
      out.push(raw[i + 1] ?? 0);
      i += 1;
    }
  }
  const value = Buffer.from(out).toString('utf8').trim();
  return value === '' ? undefined : value;
}

/** Why a username/password pair is refused before any search or bind, or undefined when it may be tried. */
function refusal(username: string, password?: string): string | undefined {
  if (password !== undefined && password.length === 0) return 'empty password'; // many directories treat it as an anonymous bind that succeeds
  if (username.length === 0) return 'empty username';
  if (username.length > MAX_USERNAME_LENGTH) return 'username too long';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(username)) return 'control character in username';
  return undefined;
}

/** A username as it may appear in a log line: bounded, whatever the client sent. */
function loggable(username: string): string {
  return username.length > 64 ? `${username.slice(0, 64)}…` : username;
}

const eq = (attribute: string, value: string): EqualityFilter => new EqualityFilter({ attribute, value });
const and = (...filters: Filter[]): AndFilter => new AndFilter({ filters });
const or = (...filters: Filter[]): OrFilter => new OrFilter({ filters });

/**
 * Groups that list the user directly: groupOfNames and Active Directory's group (member),
 * groupOfUniqueNames (uniqueMember), posixGroup (memberUid).
 */
function directGroupFilter(userDn: string, username: string): Filter {
  return or(
    and(eq('objectClass', 'groupOfNames'), eq('member', userDn)),
    and(eq('objectClass', 'group'), eq('member', userDn)),
    and(eq('objectClass', 'groupOfUniqueNames'), eq('uniqueMember', userDn)),
    and(eq('objectClass', 'posixGroup'), eq('memberUid', username)),
  );
}

/** Groups having one of `groupDns` as a member (posixGroups cannot contain groups). */
function parentGroupFilter(groupDns: string[]): Filter {
  return or(
    and(eq('objectClass', 'groupOfNames'), or(...groupDns.map((dn) => eq('member', dn)))),
    and(eq('objectClass', 'group'), or(...groupDns.map((dn) => eq('member', dn)))),
    and(eq('objectClass', 'groupOfUniqueNames'), or(...groupDns.map((dn) => eq('uniqueMember', dn)))),
  );
}

function inChainFilter(memberDn: string): Filter {
  return new ExtensibleFilter({ matchType: 'member', rule: IN_CHAIN_RULE, value: memberDn });
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}


// ---------------------------------------------------------------------------------------------
// Groups

/** Groups found so far, keyed by lower-cased DN (the visited set of the nested lookup). */
class GroupSet {
  private readonly groups = new Map<string, Group>();

  constructor(private readonly nameAttribute: string) {}

  has(dn: string): boolean {
    return this.groups.has(dn.toLowerCase());
  }

  /** Adds what is new; returns the DNs that were new (the next level of a breadth-first walk). */
  addEntries(entries: Entry[]): string[] {
    return entries.filter((e) => this.add(e.dn, attributeValues(e, this.nameAttribute)[0])).map((e) => e.dn);
  }

  add(dn: string, name?: string): boolean {
    const key = dn.toLowerCase();
    if (this.groups.has(key)) return false;
    this.groups.set(key, { dn, name: name ?? firstRdnValue(dn, this.nameAttribute) ?? dn });
    return true;
  }

  list(): Group[] {
    return [...this.groups.values()];
  }
}

interface UserEntry {
  dn: string;
  /** The value of user.usernameAttribute: the canonical name (token subject) however it was typed. */
  username: string;
  memberOf: string[];
  state: AccountState;
  /** Active Directory: the user's SID and primary group RID (the primary group is not in memberOf). */
  sid?: Buffer;
  primaryGroupId?: number;
}

interface DirectoryCapabilities {
  inChain: boolean;
  defaultNamingContext?: string;
}

/** Logs a directory problem when it starts and when it ends: not one line per request. */
class ProblemLog {
  private current: string | undefined;

  constructor(private readonly log: Logger) {}

  setting(error: DirectorySettingError): void {
    if (this.first(error.problem)) {
      this.log.error({ setting: error.setting, problem: error.problem }, `LDAP configuration error: ${error.setting}: ${error.problem}`);
    }
  }

  unavailable(problem: string): void {
    if (this.first(problem)) this.log.warn({ problem }, `LDAP directory unavailable: ${problem}`);
  }

  resolved(): void {
    if (this.current === undefined) return;
    this.log.info({ previous: this.current }, 'LDAP directory answers again');
    this.current = undefined;
  }

  private first(problem: string): boolean {
    if (this.current === problem) return false;
    this.current = problem;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// The provider

function readCa(caFile: string): Buffer {
  try {
    return readFileSync(caFile);
  } catch (err) {
    throw new ConfigError(`auth.ldap.caFile: cannot read ${caFile}: ${errorText(err)}`);
  }
}

function connectionSettings(config: LdapConfig, log: Logger): ConnectionSettings {
  const url = new URL(config.url);
  const secure = url.protocol === 'ldaps:';
  if (secure && config.startTls) log.warn('auth.ldap.startTls is ignored: an ldaps:// URL is TLS already');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const startTls = !secure && config.startTls;
  if (!secure && !startTls && !['127.0.0.1', '::1', 'localhost'].includes(host)) {
    log.warn({ url: config.url }, 'LDAP without TLS: passwords cross the network in clear text; use ldaps:// or startTls');
  }
  const tlsOptions: tls.ConnectionOptions = {
    host, // the name the certificate is checked against (also for StartTLS, which has no host of its own)
    minVersion: 'TLSv1.2',
    ...(net.isIP(host) ? {} : { servername: host }), // SNI must not be an IP address
    ...(config.caFile ? { ca: readCa(config.caFile) } : {}),
  };
  return { url: config.url, secure, startTls, tls: tlsOptions, timeoutMs: config.timeoutSeconds * 1000 };
}

function parseUserFilter(filter: string | undefined): Filter {
  if (!filter || filter.trim() === '') return new PresenceFilter({ attribute: 'objectClass' });
  try {
    return FilterParser.parseString(filter.trim());
  } catch (err) {
    throw new ConfigError(`auth.ldap.user.filter: ${errorText(err)}`);
  }
}

function positiveInteger(value: string | undefined): number | undefined {
  const number = value !== undefined && /^\d{1,10}$/.test(value) ? Number(value) : undefined;
  return number !== undefined && number > 0 ? number : undefined;
}

export class LdapIdentityProvider implements DirectoryProvider {
  readonly name = 'ldap';
  private readonly log: Logger;
  private readonly problems: ProblemLog;
  private readonly settings: ConnectionSettings;
  private readonly userFilter: Filter;
  private readonly domains: Set<string>;
  private readonly groupSource: 'memberOf' | 'search';
  private readonly cache: GroupCache;
  private readonly pool: ConnectionPool;
  private capabilities: Promise<DirectoryCapabilities> | undefined;
  /** The directory refused the service account: fail fast for a while instead of binding again. */
  private serviceRefused: { error: DirectorySettingError; until: number } | undefined;
  private timer: DirectoryTimer | undefined;

  constructor(
    private readonly config: LdapConfig,
    log: Logger,
  ) {
    this.log = log.child({ component: 'ldap' });
    this.problems = new ProblemLog(this.log);
    this.settings = connectionSettings(config, this.log);
    this.userFilter = parseUserFilter(config.user.filter);
    this.domains = new Set(config.user.domains.map((domain) => domain.toLowerCase()));
    this.groupSource = this.chooseGroupSource();
    this.cache = new GroupCache(config.groups.cacheTtlSeconds, config.groups.cacheMaxEntries);
    this.pool = new ConnectionPool(config.poolSize, this.settings.timeoutMs, () => this.openServiceConnection());
    if (config.bindDn && !config.bindPassword) this.log.warn('auth.ldap.bindDn is set without bindPassword: the service bind will fail');
  }

  /**
   * A login, with the reason when it is refused. `hooks.mayTry` sees the account the name
   * resolved to before its password is tried, so every spelling of it shares one throttle.
   */
  async login(username: string, password: string, hooks: LoginHooks = {}): Promise<LoginOutcome> {
    const refused = refusal(username, password);
    if (refused) return this.refuse(username, 'invalid_credentials', refused);
    const user = await this.guard(() => this.findUser(username));
    if (!user) return this.refuse(username, 'unknown_user');
    // Outside the directory's fault net: a fault of the caller's own store is not the directory's.
    if (hooks.mayTry && !(await hooks.mayTry(user.username))) return this.refuse(username, 'throttled', undefined, user.username);
    return this.guard(async () => {
      const verdict = (await this.checkPassword(user.dn, password)) ?? this.stateVerdict(user.state);
      if (verdict) {
        const advice = verdict.passwordVerified ? ADVICE[verdict.reason] : undefined;
        return this.refuse(username, verdict.reason, undefined, user.username, advice);
      }
      return { identity: await this.identity(user, 'authenticated') };
    });
  }

  async authenticate(username: string, password: string): Promise<Identity | undefined> {
    return (await this.login(username, password)).identity;
  }

  /** The user's current groups, or undefined when the account is gone or may not be used now (refresh tokens). */
  async lookup(username: string): Promise<Identity | undefined> {
    const refused = refusal(username);
    if (refused) return this.refuse(username, 'invalid_credentials', refused).identity;
    return this.guard(async () => {
      const user = await this.findUser(username);
      if (!user) return this.refuse(username, 'unknown_user').identity;
      if (user.state.blocked) {
        this.log.info({ username: user.username, reason: user.state.blocked }, 'directory account may not be used now');
        return undefined;
      }
      return this.identity(user, 'looked up');
    });
  }

  /**
   * Startup check: the service bind and the base DNs. Throws ConfigError naming the setting for
   * what configuration fixes, BackendUnavailableError when the directory cannot be reached.
   */
  async probe(): Promise<void> {
    try {
      await this.checkHealth();
    } catch (err) {
      throw err instanceof DirectorySettingError ? err.toConfigError() : err;
    }
  }

  /** The service account can bind and the base DNs exist (for /readyz); throws BackendUnavailableError otherwise. */
  async checkHealth(): Promise<void> {
    const bases: [string, string | undefined][] = [
      ['auth.ldap.user.baseDn', this.config.user.baseDn],
      ['auth.ldap.groups.baseDn', this.config.groups.baseDn],
    ];
    await this.guard(async () => {
      const missing = await this.query(async (c) => {
        for (const [setting, dn] of bases) if (dn !== undefined && !(await this.exists(c, dn))) return missingBase(setting, dn);
        return undefined;
      });
      if (missing) throw missing;
    });
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.pool.close();
  }

  /** Reports every bind and search from now on to `timer`. */
  observe(timer: DirectoryTimer): void {
    this.timer = timer;
  }

  private async timed<T>(operation: 'bind' | 'search', work: () => Promise<T>): Promise<T> {
    const timer = this.timer;
    if (!timer) return work();
    const started = performance.now();
    try {
      const result = await work();
      timer(operation, (performance.now() - started) / 1000, 'ok');
      return result;
    } catch (err) {
      timer(operation, (performance.now() - started) / 1000, isLdapResult(err) && !SERVER_TROUBLE.has(err.code) ? 'refused' : 'error');
      throw err;
    }
  }

  /** A search on a pooled service-account connection. */
  private query<T>(work: (c: Client) => Promise<T>): Promise<T> {
    return this.timed('search', () => this.pool.use(work));
  }

  // --- configuration -------------------------------------------------------------------------

  private chooseGroupSource(): 'memberOf' | 'search' {
    const { source, baseDn } = this.config.groups;
    if (source === 'search' && !baseDn) {
      // Guessing a base (e.g. the parent of user.baseDn) could pick up entries that are not meant as groups.
      this.log.warn('auth.ldap.groups.source is "search" but groups.baseDn is not set: reading memberOf instead');
      return 'memberOf';
    }
    return source;
  }

  // --- outcome and errors --------------------------------------------------------------------

  private refuse(username: string, reason: RefusalReason, detail?: string, account?: string, advice?: string): LoginOutcome {
    this.log.debug({ username: loggable(username), reason, ...(detail ? { detail } : {}) }, 'ldap login refused');
    return { refusal: { reason, ...(account !== undefined ? { account } : {}), ...(advice !== undefined ? { advice } : {}) } };
  }

  /** A bind that succeeded can still belong to an account that may not be used (read from its entry). */
  private stateVerdict(state: AccountState): AccountVerdict | undefined {
    return state.blocked ? { reason: state.blocked, passwordVerified: true } : undefined;
  }

  /**
   * Every failure other than a refused login becomes BackendUnavailableError: a DirectorySettingError when a
   * setting is wrong, else BackendUnavailableError. Each problem is logged once, not per request.
   */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await work();
    } catch (err) {
      throw this.failure(err);
    }
    this.problems.resolved();
    return result;
  }

  private failure(err: unknown): RegistryError {
    const setting = err instanceof DirectorySettingError ? err : tlsFailure(err, this.config.url);
    if (setting) {
      this.problems.setting(setting);
      return setting;
    }
    if (err instanceof RegistryError) return err;
    const failure = unavailable(err);
    this.problems.unavailable(String((failure.cause as Error).message));
    return failure;
  }

  private async identity(user: UserEntry, outcome: string): Promise<Identity> {
    const groups = await this.groupsOf(user);
    this.log.debug({ username: user.username, dn: user.dn, groups: groups.length, outcome }, 'ldap user');
    const { passwordChangedAt } = user.state;
    return { username: user.username, provider: 'ldap', dn: user.dn, groups, ...(passwordChangedAt !== undefined ? { passwordChangedAt } : {}) };
  }

  // --- users ---------------------------------------------------------------------------------

  private async openServiceConnection(): Promise<LdapConnection> {
    const held = this.serviceRefused;
    if (held && held.until > Date.now()) throw held.error;
    const connection = new LdapConnection(this.settings);
    try {
      await connection.connect();
      const { bindDn } = this.config;
      if (bindDn) await this.timed('bind', () => connection.bind(bindDn, this.config.bindPassword ?? ''));
      this.serviceRefused = undefined;
      return connection;
    } catch (err) {
      connection.destroy();
      // A refused service bind is the registry's configuration, never the user's failed login.
      if (isLdapResult(err) && !SERVER_TROUBLE.has(err.code)) {
        const error = serviceBindFailure(err, this.config.bindDn);
        this.serviceRefused = { error, until: Date.now() + SERVICE_REFUSAL_HOLD_MS };
        throw error;
      }
      throw err;
    }
  }

  /**
   * The filter for the account a typed name means: `alice`, `CORP\\alice` (a domain in
   * user.domains) or `alice@corp.example.org` (user.upnAttribute); and the name that the
   * entry's usernameAttribute is compared with. Undefined: the name cannot be an account.
   */
  private nameFilter(typed: string): { filter: Filter; name: string } | undefined {
    const { usernameAttribute, upnAttribute } = this.config.user;
    const slash = typed.indexOf('\\');
    if (slash > 0 && this.domains.has(typed.slice(0, slash).toLowerCase())) {
      const name = typed.slice(slash + 1);
      return name === '' ? undefined : { filter: eq(usernameAttribute, name), name };
    }
    if (upnAttribute && typed.includes('@')) return { filter: or(eq(usernameAttribute, typed), eq(upnAttribute, typed)), name: typed };
    return { filter: eq(usernameAttribute, typed), name: typed };
  }

  /** Exactly one entry under user.baseDn matching user.filter and the typed name. */
  private async findUser(typed: string): Promise<UserEntry | undefined> {
    const { baseDn, usernameAttribute } = this.config.user;
    const wanted = this.nameFilter(typed);
    if (!wanted) return undefined;
    const attributes = [
      usernameAttribute,
      ...ACCOUNT_STATE_ATTRIBUTES,
      'objectSid',
      'primaryGroupID',
      ...(this.groupSource === 'memberOf' ? ['memberOf'] : []),
    ];
    const options = {
      scope: 'sub' as const,
      filter: and(this.userFilter, wanted.filter),
      attributes,
      explicitBufferAttributes: ['objectSid'],
      sizeLimit: 2,
      timeLimit: this.config.timeoutSeconds,
    };
    let entries: Entry[];
    try {
      entries = (await this.query((c) => c.search(baseDn, options))).searchEntries;
    } catch (err) {
      throw isMissingBase(err) ? missingBase('auth.ldap.user.baseDn', baseDn) : err;
    }
    const [entry, ...others] = entries;
    if (!entry) return undefined;
    if (others.length > 0) {
      this.log.warn({ username: loggable(typed) }, 'more than one LDAP entry matches this username: refused');
      return undefined;
    }
    const names = attributeValues(entry, usernameAttribute);
    const username = names.find((n) => n.toLowerCase() === wanted.name.toLowerCase()) ?? names[0];
    if (username === undefined) {
      this.log.warn({ dn: entry.dn, attribute: usernameAttribute }, 'LDAP entry has no value for user.usernameAttribute: refused');
      return undefined;
    }
    const sid = binaryValue(entry, 'objectSid');
    const primaryGroupId = positiveInteger(attributeValues(entry, 'primaryGroupID')[0]);
    return {
      dn: entry.dn,
      username,
      memberOf: attributeValues(entry, 'memberOf'),
      state: accountState((attribute) => attributeValues(entry, attribute)),
      ...(sid ? { sid } : {}),
      ...(primaryGroupId !== undefined ? { primaryGroupId } : {}),
    };
  }

  /**
   * Binds as the user on a connection of its own (a pooled one would lose its service identity).
   * Undefined when the directory accepted the password and raised nothing; else why not.
   */
  private async checkPassword(dn: string, password: string): Promise<AccountVerdict | undefined> {
    const connection = new LdapConnection(this.settings);
    const policy = new PasswordPolicyControl();
    try {
      await connection.connect();
      try {
        await this.timed('bind', () => connection.bind(dn, password, [policy]));
      } catch (err) {
        if (!isLdapResult(err) || SERVER_TROUBLE.has(err.code)) throw err;
        if (err.code === 8 || err.code === 13) throw serviceBindFailure(err, this.config.bindDn); // TLS required: a setting
        return bindRefusal(err, policy) ?? { reason: 'wrong_password', passwordVerified: false };
      }
      return policy.verdict(); // accepted, but the password policy may still say "change it first"
    } finally {
      await connection.close();
    }
  }

  /** Whether an entry exists (a base DN setting). */
  private async exists(c: Client, dn: string): Promise<boolean> {
    try {
      await c.search(dn, { scope: 'base', filter: '(objectClass=*)', attributes: ['1.1'] });
      return true;
    } catch (err) {
      if (isMissingBase(err)) return false;
      throw err;
    }
  }

  // --- groups --------------------------------------------------------------------------------

  private async groupsOf(user: UserEntry): Promise<Group[]> {
    const key = user.dn.toLowerCase();
    const cached = this.cache.get(key);
    if (cached) return cached;
    let groups: Group[];
    try {
      groups = this.withinGroupBase(await this.query((c) => this.resolveGroups(c, user)));
    } catch (err) {
      const base = this.config.groups.baseDn;
      throw isMissingBase(err) && base ? missingBase('auth.ldap.groups.baseDn', base) : err;
    }
    this.cache.set(key, groups); // replaces whatever was cached: never merged
    return groups;
  }

  /**
   * With groups.baseDn set, only groups under it count, whatever their source (memberOf and
   * nesting reach anywhere): a group someone may create in another branch grants nothing.
   */
  private withinGroupBase(groups: Group[]): Group[] {
    const base = this.config.groups.baseDn?.toLowerCase().replace(/,\s+/g, ',');
    if (!base) return groups;
    return groups.filter((group) => {
      const dn = group.dn?.toLowerCase().replace(/,\s+/g, ',');
      return dn !== undefined && (dn === base || dn.endsWith(`,${base}`));
    });
  }

  private async resolveGroups(c: Client, user: UserEntry): Promise<Group[]> {
    const { nested, baseDn } = this.config.groups;
    const caps = nested || user.primaryGroupId !== undefined ? await this.directoryCapabilities(c) : undefined;
    const primary = await this.primaryGroup(c, user, caps);
    const chainBase = baseDn ?? caps?.defaultNamingContext;
    if (nested && caps?.inChain && chainBase) return this.inChainGroups(c, user, chainBase, primary);
    return this.groupSource === 'search' ? this.searchGroups(c, user, primary) : this.memberOfGroups(c, user, primary);
  }

  /**
   * Active Directory lists nobody in their primary group's `member` (nor the group in their
   * memberOf): it is the group whose SID is the user's domain SID with primaryGroupID as the RID.
   */
  private async primaryGroup(c: Client, user: UserEntry, caps: DirectoryCapabilities | undefined): Promise<Group | undefined> {
    const sid = user.sid && user.primaryGroupId !== undefined ? primaryGroupSid(user.sid, user.primaryGroupId) : undefined;
    if (!sid) return undefined;
    const base = this.config.groups.baseDn ?? caps?.defaultNamingContext ?? this.config.user.baseDn;
    const { nameAttribute } = this.config.groups;
    const filter = and(eq('objectClass', 'group'), new EqualityFilter({ attribute: 'objectSid', value: sid }));
    const [entry] = await this.searchEntries(c, base, filter, [nameAttribute]);
    if (!entry) return undefined;
    return { dn: entry.dn, name: attributeValues(entry, nameAttribute)[0] ?? firstRdnValue(entry.dn, nameAttribute) ?? entry.dn };
  }

  /**
   * Whether the server is Active Directory (so LDAP_MATCHING_RULE_IN_CHAIN exists), read once from
   * the rootDSE. Never guessed: OpenLDAP and FreeIPA answer such a filter with nothing (Harbor#9110).
   */
  private directoryCapabilities(c: Client): Promise<DirectoryCapabilities> {
    this.capabilities ??= this.readRootDse(c).catch((err: unknown) => {
      this.capabilities = undefined; // transport failure: try again next time
      throw err;
    });
    return this.capabilities;
  }

  private async readRootDse(c: Client): Promise<DirectoryCapabilities> {
    try {
      const { searchEntries } = await c.search('', {
        scope: 'base',
        filter: '(objectClass=*)',
        attributes: ['supportedCapabilities', 'defaultNamingContext'],
      });
      const root = searchEntries[0];
      const inChain = root ? attributeValues(root, 'supportedCapabilities').some((oid) => AD_CAPABILITIES.has(oid)) : false;
      const defaultNamingContext = root ? attributeValues(root, 'defaultNamingContext')[0] : undefined;
      this.log.debug({ inChain }, 'LDAP directory capabilities');
      return { inChain, ...(defaultNamingContext ? { defaultNamingContext } : {}) };
    } catch (err) {
      if (!isLdapResult(err)) throw err;
      return { inChain: false }; // rootDSE not readable: assume a directory without IN_CHAIN
    }
  }

  private searchEntries(c: Client, base: string, filter: Filter, attributes: string[]): Promise<Entry[]> {
    return c
      .search(base, { scope: 'sub', filter, attributes, timeLimit: this.config.timeoutSeconds })
      .then((r) => r.searchEntries);
  }

  /** Active Directory: one search returns direct and nested groups (those of the primary group too). */
  private async inChainGroups(c: Client, user: UserEntry, base: string, primary: Group | undefined): Promise<Group[]> {
    const chains = [inChainFilter(user.dn), ...(primary?.dn ? [inChainFilter(primary.dn)] : [])];
    const filter =
      this.groupSource === 'search'
        ? or(
            ...chains,
            and(eq('objectClass', 'groupOfUniqueNames'), eq('uniqueMember', user.dn)),
            and(eq('objectClass', 'posixGroup'), eq('memberUid', user.username)),
          )
        : or(...chains);
    const found = new GroupSet(this.config.groups.nameAttribute);
    if (primary?.dn) found.add(primary.dn, primary.name);
    found.addEntries(await this.searchEntries(c, base, filter, [this.config.groups.nameAttribute]));
    return found.list();
  }

  /** groups.source=search: direct groups, then (nested) a bounded breadth-first walk up the parents. */
  private async searchGroups(c: Client, user: UserEntry, primary: Group | undefined): Promise<Group[]> {
    const base = this.config.groups.baseDn ?? this.config.user.baseDn; // baseDn is set: see chooseGroupSource
    const { nameAttribute, nested, maxDepth } = this.config.groups;
    const found = new GroupSet(nameAttribute);
    let frontier = found.addEntries(await this.searchEntries(c, base, directGroupFilter(user.dn, user.username), [nameAttribute]));
    if (primary?.dn && found.add(primary.dn, primary.name)) frontier.push(primary.dn);
    for (let depth = 0; nested && depth < maxDepth && frontier.length > 0; depth++) {
      const parents = await Promise.all(
        chunks(frontier, GROUP_BATCH).map((batch) => this.searchEntries(c, base, parentGroupFilter(batch), [nameAttribute])),
      );
      frontier = found.addEntries(parents.flat());
    }
    return found.list();
  }

  /** groups.source=memberOf: the user's memberOf, then (nested) each group's own memberOf, breadth first. */
  private async memberOfGroups(c: Client, user: UserEntry, primary: Group | undefined): Promise<Group[]> {
    const { nameAttribute, nested, maxDepth } = this.config.groups;
    const found = new GroupSet(nameAttribute);
    if (primary?.dn) found.add(primary.dn, primary.name);
    let frontier = [...new Set([...user.memberOf, ...(primary?.dn ? [primary.dn] : [])])];
    for (let depth = 0; frontier.length > 0; depth++) {
      const followParents = nested && depth < maxDepth;
      const entries = await this.readGroups(c, frontier, followParents);
      for (const dn of frontier) found.add(dn, entries.get(dn)?.name);
      if (!followParents) break;
      const parents = [...entries.values()].flatMap((e) => e.memberOf);
      frontier = [...new Set(parents)].filter((dn) => !found.has(dn));
    }
    return found.list();
  }

  /**
   * Reads group entries for their name (when the DN's RDN is not already the name attribute) and,
   * when following nesting, their memberOf. A group that cannot be read keeps its RDN name.
   */
  private async readGroups(c: Client, dns: string[], withParents: boolean): Promise<Map<string, { name?: string; memberOf: string[] }>> {
    const { nameAttribute } = this.config.groups;
    const result = new Map<string, { name?: string; memberOf: string[] }>();
    const toRead = dns.filter((dn) => withParents || firstRdnValue(dn, nameAttribute) === undefined);
    for (const batch of chunks(toRead, GROUP_BATCH)) {
      const entries = await Promise.all(batch.map((dn) => this.readEntry(c, dn, [nameAttribute, 'memberOf'])));
      batch.forEach((dn, i) => {
        const entry = entries[i];
        if (!entry) return;
        const name = attributeValues(entry, nameAttribute)[0];
        result.set(dn, { ...(name ? { name } : {}), memberOf: attributeValues(entry, 'memberOf') });
      });
    }
    return result;
  }

  private async readEntry(c: Client, dn: string, attributes: string[]): Promise<Entry | undefined> {
    try {
      const { searchEntries } = await c.search(dn, { scope: 'base', filter: '(objectClass=*)', attributes });
      return searchEntries[0];
    } catch (err) {
      if (!isLdapResult(err)) throw err;
      this.log.debug({ dn, err: errorText(err) }, 'LDAP group entry not readable');
      return undefined;
    }
  }
}
