// Configuration: one YAML file plus environment overrides, validated against
// schemas/config.schema.json. A bad value stops startup with a message naming the key.
import type { GcConfig } from '../gc/settings.js';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import AjvModule from 'ajv';
import { closest, distance } from 'fastest-levenshtein';
import { parse as parseYaml } from 'yaml';
import schema from '../../schemas/config.schema.json' with { type: 'json' };
import type { DatabaseConfig } from '../metadata/database.js';
import type { StorageSettings } from '../storage/index.js';

export interface Config {
  listen: string;
  dataDir: string;
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  storage: { driver: 'filesystem' | 's3'; filesystem: { root?: string }; s3: S3Config };
  metadata: {
    driver: 'sqlite' | 'postgres';
    sqlite: { path?: string };
    postgres: { url?: string; poolMax: number };
  };
  limits: { manifestMaxBytes: number; pageMaxEntries: number; referrersPageMaxBytes: number };
  uploads: { expireAfterSeconds: number; sweepIntervalSeconds: number; maxOpenPerPrincipal: number };
  tls: { certificate?: string; key?: string };
  http: {
    headersTimeoutSeconds: number;
    authRequestTimeoutSeconds: number;
    idleBodyTimeoutSeconds: number;
    keepAliveTimeoutSeconds: number;
    maxConnections: number;
    maxConnectionsPerAddress: number;
    /** addresses and CIDRs of trusted reverse proxies */
    trustProxy: string[];
  };
  /** GET /metrics: on the main listener, on a listener of its own (`listen`), or nowhere. */
  metrics: { enabled: boolean; listen?: string };
  /** drainSeconds: always set after loading (derived from `listen` when not given). */
  shutdown: { drainSeconds: number; timeoutSeconds: number };
  /** The web console (/ui/): its session lifetime and whether its cookie is Secure (TLS by default). */
  console: { enabled: boolean; sessionSeconds: number; secureCookie?: boolean };
  adminPassword?: string;
  auth: {
    // realm: always set after loading (derived from `listen` where that is safe)
    token: { service: string; issuer: string; realm: string; ttlSeconds: number; keyFile?: string; keyReloadSeconds: number };
    adminGroups: string[];
    refreshTokenTtlSeconds: number;
    rulesCacheSeconds: number;
    ldap?: LdapConfig;
    loginThrottle: LoginThrottleConfig;
  };
  gc: GcConfig;
}

/** storage.s3: see schemas/config.schema.json. */
export interface S3Config {
  bucket?: string;
  prefix?: string;
  region: string;
  endpoint?: string;
  forcePathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  redirect: boolean;
  redirectExpirySeconds: number;
  timeoutSeconds: number;
}

/** auth.loginThrottle: see schemas/config.schema.json. */
export interface LoginThrottleConfig {
  freeFailuresPerNameAndAddress: number;
  freeFailuresPerName: number;
  freeFailuresPerAddress: number;
  maxDelaySeconds: number;
  failureWindowSeconds: number;
  minFailedLoginMs: number;
}

export interface LdapConfig {
  url: string;
  startTls: boolean;
  caFile?: string;
  bindDn?: string;
  bindPassword?: string;
  timeoutSeconds: number;
  poolSize: number;
  user: { baseDn: string; filter: string; usernameAttribute: string; upnAttribute?: string; domains: string[] };
  groups: {
    source: 'memberOf' | 'search';
    baseDn?: string;
    nameAttribute: string;
    nested: boolean;
    maxDepth: number;
    cacheTtlSeconds: number;
    cacheMaxEntries: number;
  };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

interface SchemaNode {
  type?: string;
  properties?: Record<string, SchemaNode>;
  /** How a list is split in an environment variable (default `;`: group DNs contain commas). */
  envSeparator?: string;
}

const ENV_PREFIX = 'PORTCULLIS_';

/** camelCase path → PORTCULLIS_UPPER_SNAKE, e.g. storage.filesystem.root → PORTCULLIS_STORAGE_FILESYSTEM_ROOT */
export function envName(path: string[]): string {
  return ENV_PREFIX + path.map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** Every leaf key of the schema with its environment variable name. */
interface Leaf {
  path: string[];
  type: string;
  env: string;
  separator: string;
}

function leaves(node: SchemaNode, path: string[] = []): Leaf[] {
  if (node.properties) {
    return Object.entries(node.properties).flatMap(([key, child]) => leaves(child, [...path, key]));
  }
  return [{ path, type: node.type ?? 'string', env: envName(path), separator: node.envSeparator ?? ';' }];
}

const KEYS = leaves(schema as SchemaNode);

/** Every setting's dotted path, objects included (auth, auth.ldap, …), for "did you mean". */
const SETTING_PATHS = [...new Set(KEYS.flatMap((key) => key.path.map((_, i) => key.path.slice(0, i + 1).join('.'))))];
/** Variables that are not settings but are read too. */
const OTHER_VARIABLES = new Set(['PORTCULLIS_CONFIG']);
/** Prefixes left to tools around Portcullis (its test suite), never read as settings. */
const FOREIGN_PREFIXES = ['PORTCULLIS_E2E_', 'PORTCULLIS_TEST_'];

/** The candidate nearest to `wanted`, when it is near enough to be what was meant. */
function nearest(wanted: string, candidates: readonly string[]): string | undefined {
  const found = closest(wanted, candidates as string[]);
  return found !== undefined && distance(wanted, found) <= Math.max(2, Math.floor(wanted.length / 3)) ? found : undefined;
}

/**
 * A misspelled variable would otherwise be ignored in silence, and with it perhaps a security
 * setting: every PORTCULLIS_* variable must be one the configuration knows.
 */
function checkVariableNames(env: NodeJS.ProcessEnv): void {
  const known = new Set(KEYS.map((key) => key.env));
  const unknown = Object.keys(env)
    .filter((name) => name.startsWith(ENV_PREFIX) && !known.has(name) && !OTHER_VARIABLES.has(name))
    .filter((name) => !FOREIGN_PREFIXES.some((prefix) => name.startsWith(prefix)))
    .sort();
  if (unknown.length === 0) return;
  const lines = unknown.map((name) => {
    const suggestion = nearest(name, [...known, ...OTHER_VARIABLES]);
    return `${name} is not a known setting${suggestion ? `; did you mean ${suggestion}?` : ''}`;
  });
  throw new ConfigError(`invalid environment:\n  ${lines.join('\n  ')}`);
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

function fromEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, sources: Map<string, string>): void {
  for (const key of KEYS) {
    const value = env[key.env];
    if (value === undefined || value === '') continue;
    const dotted = key.path.join('.');
    sources.set(dotted, `environment variable ${key.env}`);
    if (key.type === 'integer' || key.type === 'number') {
      const number = Number(value);
      setPath(raw, key.path, Number.isFinite(number) && value.trim() !== '' ? number : value);
    } else if (key.type === 'array') {
      setPath(raw, key.path, value.split(key.separator).map((item) => item.trim()).filter(Boolean));
    } else if (key.type === 'boolean') {
      setPath(raw, key.path, value === 'true' ? true : value === 'false' ? false : value);
    } else {
      setPath(raw, key.path, value);
    }
  }
}

const Ajv = AjvModule.default;
const validate = new Ajv({ useDefaults: true, allErrors: true, keywords: ['envSeparator'] }).compile(schema);

function didYouMean(key: string): string {
  const suggestion = nearest(key, SETTING_PATHS);
  return `is not a known setting${suggestion ? `; did you mean ${suggestion}?` : ''}`;
}

export interface LoadOptions {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const file = options.file ?? env.PORTCULLIS_CONFIG;
  let raw: Record<string, unknown> = {};
  const sources = new Map<string, string>();
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new ConfigError(`cannot read configuration file ${file}: ${(error as Error).message}`);
    }
    try {
      const parsed: unknown = parseYaml(text) ?? {};
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('the top level must be a mapping');
      raw = parsed as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`configuration file ${file} is not valid YAML: ${(error as Error).message}`);
    }
  }
  checkVariableNames(env);
  fromEnv(raw, env, sources);
  refuseTrustEveryone(raw, sources, file);
  if (!validate(raw)) {
    const problems = (validate.errors ?? []).map((error) => {
      const path = error.instancePath.split('/').filter(Boolean);
      if (error.keyword === 'additionalProperties') path.push(String(error.params.additionalProperty));
      const key = path.join('.') || '(top level)';
      const where = sources.get(key) ?? (file ? `in ${file}` : 'in the configuration');
      const message =
        error.keyword === 'additionalProperties'
          ? didYouMean(key)
          : error.keyword === 'enum'
            ? `must be one of ${(error.params.allowedValues as unknown[]).join(', ')}`
            : error.message;
      return `${key} ${message} (${where})`;
    });
    throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const config = raw as unknown as Config;
  config.dataDir = resolve(config.dataDir);
  if (config.uploads.expireAfterSeconds <= config.http.idleBodyTimeoutSeconds) {
    throw new ConfigError(
      `uploads.expireAfterSeconds (${config.uploads.expireAfterSeconds}) must be longer than http.idleBodyTimeoutSeconds (${config.http.idleBodyTimeoutSeconds}): an upload still streaming could be swept away`,
    );
  }
  checkTrustedProxies(config.http.trustProxy);
  checkTls(config.tls);
  config.auth.token.realm = tokenRealm(config);
  if (config.auth.ldap?.bindDn && !config.auth.ldap.bindPassword) {
    throw new ConfigError('auth.ldap.bindPassword is required with auth.ldap.bindDn: without it the bind is anonymous');
  }
  checkS3(config.storage);
  checkMetrics(config);
  config.shutdown.drainSeconds ??= defaultDrainSeconds(config.listen);
  if (config.metadata.driver === 'postgres' && !config.metadata.postgres.url) {
    throw new ConfigError(`metadata.postgres.url is required when metadata.driver is postgres (${envName(['metadata', 'postgres', 'url'])})`);
  }
  return config;
}

/**
 * `trustProxy: true` meant "believe X-Forwarded-For from anyone": any client could then forge its
 * address. It is refused with the reason rather than read as some list.
 */
function refuseTrustEveryone(raw: Record<string, unknown>, sources: Map<string, string>, file: string | undefined): void {
  const http = raw.http as Record<string, unknown> | undefined;
  const value = http?.trustProxy;
  const wholesale = value === true || value === false || (Array.isArray(value) && value.length === 1 && (value[0] === 'true' || value[0] === 'false'));
  if (!wholesale) return;
  if (value === false || (Array.isArray(value) && value[0] === 'false')) {
    delete http?.trustProxy;
    return;
  }
  const where = sources.get('http.trustProxy') ?? (file ? `in ${file}` : 'in the configuration');
  throw new ConfigError(
    `http.trustProxy: true is not accepted (${where}): trusting X-Forwarded-For from every peer lets any client forge its address, ` +
      `slip past the login throttle and write fake addresses into the audit log. List the addresses or CIDRs of your proxies instead, ` +
      `e.g. [10.0.0.0/8, 192.0.2.7] (${envName(['http', 'trustProxy'])}=10.0.0.0/8,192.0.2.7)`,
  );
}

function checkTrustedProxies(entries: string[]): void {
  for (const entry of entries) {
    const [address = '', bits, ...rest] = entry.split('/');
    const family = isIP(address);
    const maxBits = family === 6 ? 128 : 32;
    const validBits = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits);
    if (family === 0 || !validBits || rest.length > 0) {
      throw new ConfigError(`http.trustProxy: ${JSON.stringify(entry)} is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)`);
    }
  }
}

function checkS3(storage: Config['storage']): void {
  if (storage.driver !== 's3') return;
  if (!storage.s3.bucket) throw new ConfigError(`storage.s3.bucket is required when storage.driver is s3 (${envName(['storage', 's3', 'bucket'])})`);
  if ((storage.s3.accessKeyId === undefined) !== (storage.s3.secretAccessKey === undefined)) {
    throw new ConfigError(
      `storage.s3.accessKeyId and storage.s3.secretAccessKey go together (${envName(['storage', 's3', 'accessKeyId'])}, ${envName(['storage', 's3', 'secretAccessKey'])}): one of them is missing`,
    );
  }
}

function checkMetrics(config: Config): void {
  const { enabled, listen } = config.metrics;
  if (listen === undefined) return;
  if (!enabled) throw new ConfigError(`metrics.listen (${listen}) is set but metrics.enabled is false: leave one of them out`);
  if (listen === config.listen) throw new ConfigError(`metrics.listen (${listen}) must differ from listen: leave it out to serve /metrics on the main listener`);
}

/**
 * The drain after SIGTERM when none is configured: long enough for Kubernetes to take the pod out
 * of its Service's endpoints (the kube-proxy and ingress controllers see the change within a
 * second or two) and for a load balancer polling /readyz every second or two to see it fail;
 * short enough not to hold up a rolling update. On loopback whatever is in front runs on the same
 * machine and sees a refused connection at once: no wait, so a local `portcullis serve` (and the
 * tests) stop at once.
 */
function defaultDrainSeconds(listen: string): number {
  return isLoopback(listen) ? 0 : 5;
}

function checkTls(tls: Config['tls']): void {
  if ((tls.certificate === undefined) !== (tls.key === undefined)) {
    throw new ConfigError(`tls.certificate and tls.key go together (${envName(['tls', 'certificate'])}, ${envName(['tls', 'key'])}): one of them is missing`);
  }
}

/**
 * The token endpoint clients are sent to. Never taken from a request's Host or X-Forwarded-Host:
 * a client could steer another's credentials elsewhere. Derived from the listen address only when
 * that address is loopback and no proxy is in front.
 */
function tokenRealm(config: Config): string {
  if (config.auth.token.realm) return config.auth.token.realm;
  const setting = `auth.token.realm is required (${envName(['auth', 'token', 'realm'])}), e.g. https://registry.example.org/auth/token`;
  if (!isLoopback(config.listen)) throw new ConfigError(`${setting}: the server listens on ${config.listen}, not on loopback`);
  if (config.http.trustProxy.length > 0) throw new ConfigError(`${setting}: a reverse proxy is in front (http.trustProxy is set)`);
  return `${config.tls.certificate ? 'https' : 'http'}://${config.listen}/auth/token`;
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export const blobRoot = (config: Config): string => resolve(config.storage.filesystem.root ?? `${config.dataDir}/blobs`);

/** The blob store's settings: a folder, or a bucket with how to reach it. */
export function storageSettings(config: Config): StorageSettings {
  if (config.storage.driver === 'filesystem') return { driver: 'filesystem', root: blobRoot(config) };
  const s3 = config.storage.s3;
  return {
    driver: 's3',
    bucket: s3.bucket as string, // checked at load: required with the s3 driver
    prefix: s3.prefix ?? '',
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: s3.forcePathStyle,
    credentials: s3.accessKeyId !== undefined && s3.secretAccessKey !== undefined ? { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } : undefined,
    redirectSeconds: s3.redirect ? s3.redirectExpirySeconds : undefined,
    timeoutMs: s3.timeoutSeconds * 1000,
  };
}
export const sqlitePath = (config: Config): string => resolve(config.metadata.sqlite.path ?? `${config.dataDir}/portcullis.db`);

/** The metadata database's connection settings. */
export function databaseConfig(config: Config): DatabaseConfig {
  if (config.metadata.driver === 'postgres') {
    return { driver: 'postgres', url: config.metadata.postgres.url as string, poolMax: config.metadata.postgres.poolMax };
  }
  return { driver: 'sqlite', path: sqlitePath(config) };
}
