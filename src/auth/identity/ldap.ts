// Directory users (OpenLDAP, FreeIPA, Active Directory) through ldapts.
//
// A login is: service-account search for the user (one pooled, service-bound connection), a bind as
// the user's DN with the password on a short-lived connection of its own, then the user's groups
// (from memberOf or a group search, nested groups optionally followed). Only the group lookup is
// cached; the password bind never is. A directory that cannot be reached becomes
// BackendUnavailableError (503); wrong credentials are `undefined`, never an error.
//
// Filters are built as ldapts Filter objects, so user input is sent as a BER octet string and is
// never parsed as filter syntax (no injection through `*`, `(` or `)`).
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import {
  AndFilter,
  Client,
  EqualityFilter,
  ExtensibleFilter,
  FilterParser,
  OrFilter,
  PresenceFilter,
  ResultCodeError,
  type Entry,
  type Filter,
} from 'ldapts';
import type { Logger } from 'pino';
import { ConfigError, type LdapConfig } from '../../config/config.js';
import { BackendUnavailableError } from '../../registry/errors.js';
import { GroupCache } from './group-cache.js';
import type { Group, Identity, IdentityProvider } from './provider.js';

const BACKEND = 'LDAP directory';
/** Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: matches through nested group membership. */
const IN_CHAIN_RULE = '1.2.840.113556.1.4.1941';
/** supportedCapabilities of Active Directory (…800) and AD LDS (…1851): the servers that know IN_CHAIN. */
const AD_CAPABILITIES = new Set(['1.2.840.113556.1.4.800', '1.2.840.113556.1.4.1851']);
const MAX_USERNAME_LENGTH = 256;
/** Group DNs per parent-group search in the breadth-first nested lookup (keeps filters small). */
const GROUP_BATCH = 32;
/** Result codes of a user bind that mean "the directory is in trouble", not "wrong credentials". */
const SERVER_TROUBLE = new Set([1, 2, 3, 11, 51, 52, 80]);
const CLOSE_GRACE_MS = 1000;

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

/** Why a username/password pair is refused before any bind, or undefined when it may be tried. */
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

/** An LDAP result (the server answered) rather than a transport failure (socket, TLS, timeout). */
function isLdapResult(err: unknown): err is ResultCodeError {
  return err instanceof ResultCodeError;
}

/** ldapts reports an operation timeout as a plain Error ("…: Operation timed out"); so does withDeadline. */
function isTimeout(err: unknown): boolean {
  return err instanceof Error && /timed out|timeout/i.test(err.message);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Races `work` against a timer; on timeout runs `onTimeout` (which tears the connection down). */
async function withDeadline<T>(work: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what} timed out after ${ms} ms`));
    }, ms);
  });
  work.catch(() => undefined); // after a timeout its own failure is expected: not an unhandled rejection
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

const eq = (attribute: string, value: string): EqualityFilter => new EqualityFilter({ attribute, value });
const and = (...filters: Filter[]): AndFilter => new AndFilter({ filters });
const or = (...filters: Filter[]): OrFilter => new OrFilter({ filters });

/** Groups that list the user directly: groupOfNames member, groupOfUniqueNames uniqueMember, posixGroup memberUid. */
function directGroupFilter(userDn: string, username: string): Filter {
  return or(
    and(eq('objectClass', 'groupOfNames'), eq('member', userDn)),
    and(eq('objectClass', 'groupOfUniqueNames'), eq('uniqueMember', userDn)),
    and(eq('objectClass', 'posixGroup'), eq('memberUid', username)),
  );
}

/** Groups having one of `groupDns` as a member (posixGroups cannot contain groups). */
function parentGroupFilter(groupDns: string[]): Filter {
  return or(
    and(eq('objectClass', 'groupOfNames'), or(...groupDns.map((dn) => eq('member', dn)))),
    and(eq('objectClass', 'groupOfUniqueNames'), or(...groupDns.map((dn) => eq('uniqueMember', dn)))),
  );
}

function inChainFilter(userDn: string): Filter {
  return new ExtensibleFilter({ matchType: 'member', rule: IN_CHAIN_RULE, value: userDn });
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connections

interface ConnectionSettings {
  url: string;
  /** ldaps:// */
  secure: boolean;
  /** Upgrade an ldap:// connection with StartTLS before anything else is sent. */
  startTls: boolean;
  tls: tls.ConnectionOptions;
  timeoutMs: number;
}

/**
 * One ldapts Client on exactly one socket. ldapts silently reconnects a client whose socket closed
 * (and after StartTLS it would reconnect WITHOUT TLS and unbound), so the socket factories below
 * refuse a second socket: a lost connection fails its operation and is replaced by the pool.
 * Tracking the sockets also lets us see a close that ldapts misses after StartTLS, and always
 * destroy them (ldapts leaves the TCP socket open when a StartTLS handshake fails).
 */
class LdapConnection {
  readonly client: Client;
  private readonly sockets: net.Socket[] = [];
  private plainOpened = false;
  private secureOpened = false;
  private lost = false;

  constructor(private readonly settings: ConnectionSettings) {
    this.client = new Client({
      url: settings.url,
      timeout: settings.timeoutMs,
      connectTimeout: settings.timeoutMs,
      // ldapts connects with TLS whenever tlsOptions has a value, so they are given only for ldaps://.
      tlsOptions: settings.secure ? settings.tls : undefined,
      createConnection: this.plainConnect as typeof net.connect,
      createSecureConnection: this.secureConnect as typeof tls.connect,
    });
  }

  /** False once any of its sockets closed: the pool then discards it. */
  get usable(): boolean {
    return !this.lost;
  }

  private readonly plainConnect = (port: number, host: string): net.Socket => {
    if (this.plainOpened) throw new Error('LDAP connection was lost');
    this.plainOpened = true;
    return this.track(net.connect(port, host));
  };

  // Called as (port, host, options) for ldaps:// and as (options-with-socket) by startTLS().
  private readonly secureConnect = (
    portOrOptions: number | tls.ConnectionOptions,
    host?: string,
    options?: tls.ConnectionOptions,
  ): tls.TLSSocket => {
    if (this.secureOpened) throw new Error('LDAP connection was lost');
    this.secureOpened = true;
    const socket =
      typeof portOrOptions === 'number' ? tls.connect(portOrOptions, host ?? 'localhost', options) : tls.connect(portOrOptions);
    return this.track(socket);
  };

  private track<S extends net.Socket>(socket: S): S {
    this.sockets.push(socket);
    socket.once('close', () => {
      this.lost = true;
    });
    return socket;
  }

  /** Connects and, for StartTLS, upgrades; an ldap:// or ldaps:// connection is otherwise opened by its first operation. */
  async connect(): Promise<void> {
    if (!this.settings.startTls) return;
    // startTLS() mutates its options (adds the socket), hence the copy; its handshake has no timeout of its own.
    await withDeadline(this.client.startTLS({ ...this.settings.tls }), this.settings.timeoutMs, 'LDAP StartTLS', () => this.destroy());
  }

  bind(dn: string, password: string): Promise<void> {
    return this.client.bind(dn, password);
  }

  destroy(): void {
    this.lost = true;
    for (const socket of this.sockets) {
      socket.on('error', () => undefined); // ldapts may have removed its listeners; a late error must not crash us
      socket.destroy();
    }
  }

  /** Unbinds politely when still connected, then destroys the sockets whatever happened. */
  async close(): Promise<void> {
    try {
      if (this.usable && this.client.isConnected) {
        await withDeadline(this.client.unbind(), CLOSE_GRACE_MS, 'LDAP unbind', () => this.destroy());
      }
    } catch {
      // closing anyway
    } finally {
      this.destroy();
    }
  }
}

interface Lease {
  connection: LdapConnection;
  reused: boolean;
}

/**
 * A few service-bound connections, each used by one request at a time. A connection that failed
 * at the transport level is discarded (and replaced on demand); LDAP result errors leave it in the
 * pool. A transport failure on a reused connection is retried once on a fresh one, because a
 * server restart or idle timeout may have closed it while it sat in the pool.
 */
class ConnectionPool {
  private readonly idle: LdapConnection[] = [];
  private readonly waiters: (() => void)[] = [];
  private open = 0;
  private closed = false;

  constructor(
    private readonly max: number,
    private readonly waitMs: number,
    private readonly create: () => Promise<LdapConnection>,
  ) {}

  async use<T>(work: (client: Client) => Promise<T>, retry = true): Promise<T> {
    const lease = await this.acquire();
    let result: T;
    try {
      result = await work(lease.connection.client);
    } catch (err) {
      if (isLdapResult(err)) {
        this.release(lease.connection);
        throw err;
      }
      this.discard(lease.connection);
      // A slow directory is not retried: that would only double the wait before the 503.
      if (retry && lease.reused && !this.closed && !isTimeout(err)) return this.use(work, false);
      throw err;
    }
    this.release(lease.connection);
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    const idle = this.idle.splice(0);
    this.open -= idle.length;
    for (const wake of this.waiters.splice(0)) wake();
    await Promise.all(idle.map((c) => c.close()));
  }

  private async acquire(): Promise<Lease> {
    for (;;) {
      if (this.closed) throw new Error('LDAP identity provider is closed');
      const connection = this.takeIdle();
      if (connection) return { connection, reused: true };
      if (this.open < this.max) return { connection: await this.grow(), reused: false };
      await this.waitForSlot();
    }
  }

  private takeIdle(): LdapConnection | undefined {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      if (c.usable) return c;
      this.open--;
      c.destroy();
    }
    return undefined;
  }

  private async grow(): Promise<LdapConnection> {
    this.open++;
    try {
      return await this.create();
    } catch (err) {
      this.open--;
      this.wake();
      throw err;
    }
  }

  private waitForSlot(): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(new Error(`no free LDAP connection within ${this.waitMs} ms`));
      }, this.waitMs);
      this.waiters.push(waiter);
    });
  }

  private wake(): void {
    this.waiters.shift()?.();
  }

  private release(connection: LdapConnection): void {
    if (this.closed || !connection.usable) {
      this.discard(connection);
      return;
    }
    this.idle.push(connection);
    this.wake();
  }

  private discard(connection: LdapConnection): void {
    this.open--;
    connection.destroy();
    this.wake();
  }
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
  username: string;
  memberOf: string[];
}

interface DirectoryCapabilities {
  inChain: boolean;
  defaultNamingContext?: string;
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

export class LdapIdentityProvider implements IdentityProvider {
  readonly name = 'ldap';
  private readonly log: Logger;
  private readonly settings: ConnectionSettings;
  private readonly userFilter: Filter;
  private readonly groupSource: 'memberOf' | 'search';
  private readonly cache: GroupCache;
  private readonly pool: ConnectionPool;
  private capabilities: Promise<DirectoryCapabilities> | undefined;

  constructor(
    private readonly config: LdapConfig,
    log: Logger,
  ) {
    this.log = log.child({ component: 'ldap' });
    this.settings = connectionSettings(config, this.log);
    this.userFilter = parseUserFilter(config.user.filter);
    this.groupSource = this.chooseGroupSource();
    this.cache = new GroupCache(config.groups.cacheTtlSeconds, config.groups.cacheMaxEntries);
    this.pool = new ConnectionPool(config.poolSize, this.settings.timeoutMs, () => this.openServiceConnection());
    if (config.bindDn && !config.bindPassword) this.log.warn('auth.ldap.bindDn is set without bindPassword: the service bind will fail');
  }

  async authenticate(username: string, password: string): Promise<Identity | undefined> {
    const refused = refusal(username, password);
    if (refused) return this.outcome(username, refused);
    return this.guard(username, async () => {
      const user = await this.findUser(username);
      if (!user) return this.outcome(username, 'unknown user');
      if (!(await this.checkPassword(user.dn, password))) return this.outcome(username, 'wrong password');
      return this.identity(user, 'authenticated');
    });
  }

  async lookup(username: string): Promise<Identity | undefined> {
    const refused = refusal(username);
    if (refused) return this.outcome(username, refused);
    return this.guard(username, async () => {
      const user = await this.findUser(username);
      if (!user) return this.outcome(username, 'unknown user');
      return this.identity(user, 'looked up');
    });
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.pool.close();
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

  private outcome(username: string, outcome: string): undefined {
    this.log.debug({ username: loggable(username), outcome }, 'ldap login refused');
    return undefined;
  }

  /** Every failure other than "no such user / wrong password" becomes a 503, never a raw error. */
  private async guard<T>(username: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof BackendUnavailableError) throw err;
      this.log.warn({ username: loggable(username), err: errorText(err) }, 'LDAP directory unavailable');
      throw new BackendUnavailableError(BACKEND, err);
    }
  }

  private async identity(user: UserEntry, outcome: string): Promise<Identity> {
    const groups = await this.groupsOf(user);
    this.log.debug({ username: user.username, dn: user.dn, groups: groups.length, outcome }, 'ldap user');
    return { username: user.username, provider: 'ldap', dn: user.dn, groups };
  }

  // --- users ---------------------------------------------------------------------------------

  private async openServiceConnection(): Promise<LdapConnection> {
    const connection = new LdapConnection(this.settings);
    try {
      await connection.connect();
      if (this.config.bindDn) await connection.bind(this.config.bindDn, this.config.bindPassword ?? '');
      return connection;
    } catch (err) {
      connection.destroy();
      throw err; // even InvalidCredentials: a wrong service password is the registry's problem, a 503
    }
  }

  /** Exactly one entry under user.baseDn matching user.filter and usernameAttribute=username. */
  private async findUser(username: string): Promise<UserEntry | undefined> {
    const { baseDn, usernameAttribute } = this.config.user;
    const filter = and(this.userFilter, eq(usernameAttribute, username));
    const attributes = [usernameAttribute, ...(this.groupSource === 'memberOf' ? ['memberOf'] : [])];
    const { searchEntries } = await this.pool.use((c) =>
      c.search(baseDn, { scope: 'sub', filter, attributes, sizeLimit: 2, timeLimit: this.config.timeoutSeconds }),
    );
    const [entry, ...others] = searchEntries;
    if (!entry) return undefined;
    if (others.length > 0) {
      this.log.warn({ username: loggable(username) }, 'more than one LDAP entry matches this username: refused');
      return undefined;
    }
    const names = attributeValues(entry, usernameAttribute);
    const name = names.find((n) => n.toLowerCase() === username.toLowerCase()) ?? names[0] ?? username;
    return { dn: entry.dn, username: name, memberOf: attributeValues(entry, 'memberOf') };
  }

  /** Binds as the user on a connection of its own (a pooled one would lose its service identity). */
  private async checkPassword(dn: string, password: string): Promise<boolean> {
    const connection = new LdapConnection(this.settings);
    try {
      await connection.connect();
      try {
        await connection.bind(dn, password);
        return true;
      } catch (err) {
        if (!isLdapResult(err) || SERVER_TROUBLE.has(err.code)) throw err;
        return false; // 49 invalid credentials, or a policy refusal (locked, expired, …)
      }
    } finally {
      await connection.close();
    }
  }

  // --- groups --------------------------------------------------------------------------------

  private async groupsOf(user: UserEntry): Promise<Group[]> {
    const key = user.dn.toLowerCase();
    const cached = this.cache.get(key);
    if (cached) return cached;
    const groups = this.withinGroupBase(await this.pool.use((c) => this.resolveGroups(c, user)));
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
    if (this.config.groups.nested) {
      const caps = await this.directoryCapabilities(c);
      const base = this.config.groups.baseDn ?? caps.defaultNamingContext;
      if (caps.inChain && base) return this.inChainGroups(c, user, base);
    }
    return this.groupSource === 'search' ? this.searchGroups(c, user) : this.memberOfGroups(c, user);
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

  /** Active Directory: one search returns direct and nested groups. */
  private async inChainGroups(c: Client, user: UserEntry, base: string): Promise<Group[]> {
    const filter =
      this.groupSource === 'search'
        ? or(
            inChainFilter(user.dn),
            and(eq('objectClass', 'groupOfUniqueNames'), eq('uniqueMember', user.dn)),
            and(eq('objectClass', 'posixGroup'), eq('memberUid', user.username)),
          )
        : inChainFilter(user.dn);
    const found = new GroupSet(this.config.groups.nameAttribute);
    found.addEntries(await this.searchEntries(c, base, filter, [this.config.groups.nameAttribute]));
    return found.list();
  }

  /** groups.source=search: direct groups, then (nested) a bounded breadth-first walk up the parents. */
  private async searchGroups(c: Client, user: UserEntry): Promise<Group[]> {
    const base = this.config.groups.baseDn ?? this.config.user.baseDn; // baseDn is set: see chooseGroupSource
    const { nameAttribute, nested, maxDepth } = this.config.groups;
    const found = new GroupSet(nameAttribute);
    let frontier = found.addEntries(await this.searchEntries(c, base, directGroupFilter(user.dn, user.username), [nameAttribute]));
    for (let depth = 0; nested && depth < maxDepth && frontier.length > 0; depth++) {
      const parents = await Promise.all(
        chunks(frontier, GROUP_BATCH).map((batch) => this.searchEntries(c, base, parentGroupFilter(batch), [nameAttribute])),
      );
      frontier = found.addEntries(parents.flat());
    }
    return found.list();
  }

  /** groups.source=memberOf: the user's memberOf, then (nested) each group's own memberOf, breadth first. */
  private async memberOfGroups(c: Client, user: UserEntry): Promise<Group[]> {
    const { nameAttribute, nested, maxDepth } = this.config.groups;
    const found = new GroupSet(nameAttribute);
    let frontier = [...new Set(user.memberOf)];
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
