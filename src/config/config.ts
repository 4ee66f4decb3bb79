// Configuration: one YAML file plus environment overrides, validated against
// schemas/config.schema.json. A bad value stops startup with a message naming the key.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import AjvModule from 'ajv';
import { parse as parseYaml } from 'yaml';
import schema from '../../schemas/config.schema.json' with { type: 'json' };

export interface Config {
  listen: string;
  dataDir: string;
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  storage: { driver: 'filesystem'; filesystem: { root?: string } };
  metadata: {
    driver: 'sqlite' | 'postgres';
    sqlite: { path?: string };
    postgres: { url?: string; poolMax: number };
  };
  limits: { manifestMaxBytes: number; pageMaxEntries: number };
  uploads: { expireAfterSeconds: number; sweepIntervalSeconds: number; maxOpenPerPrincipal: number };
  http: { headersTimeoutSeconds: number; idleBodyTimeoutSeconds: number; keepAliveTimeoutSeconds: number; trustProxy: boolean };
  adminPassword?: string;
  auth: {
    token: { service: string; issuer: string; realm?: string; ttlSeconds: number; keyFile?: string; keyReloadSeconds: number };
    adminGroups: string[];
    refreshTokenTtlSeconds: number;
    rulesCacheSeconds: number;
    ldap?: LdapConfig;
  };
}

export interface LdapConfig {
  url: string;
  startTls: boolean;
  caFile?: string;
  bindDn?: string;
  bindPassword?: string;
  timeoutSeconds: number;
  poolSize: number;
  user: { baseDn: string; filter: string; usernameAttribute: string };
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
}

const ENV_PREFIX = 'PORTCULLIS_';

/** camelCase path → PORTCULLIS_UPPER_SNAKE, e.g. storage.filesystem.root → PORTCULLIS_STORAGE_FILESYSTEM_ROOT */
export function envName(path: string[]): string {
  return ENV_PREFIX + path.map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** Every leaf key of the schema with its environment variable name. */
function leaves(node: SchemaNode, path: string[] = []): { path: string[]; type: string; env: string }[] {
  if (node.properties) {
    return Object.entries(node.properties).flatMap(([key, child]) => leaves(child, [...path, key]));
  }
  return [{ path, type: node.type ?? 'string', env: envName(path) }];
}

const KEYS = leaves(schema as SchemaNode);

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
      // Lists are separated by semicolons: group DNs contain commas.
      setPath(raw, key.path, value.split(';').map((item) => item.trim()).filter(Boolean));
    } else if (key.type === 'boolean') {
      setPath(raw, key.path, value === 'true' ? true : value === 'false' ? false : value);
    } else {
      setPath(raw, key.path, value);
    }
  }
}

const Ajv = AjvModule.default;
const validate = new Ajv({ useDefaults: true, allErrors: true }).compile(schema);

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
  fromEnv(raw, env, sources);
  if (!validate(raw)) {
    const problems = (validate.errors ?? []).map((error) => {
      const path = error.instancePath.split('/').filter(Boolean);
      if (error.keyword === 'additionalProperties') path.push(String(error.params.additionalProperty));
      const key = path.join('.') || '(top level)';
      const where = sources.get(key) ?? (file ? `in ${file}` : 'in the configuration');
      const message =
        error.keyword === 'additionalProperties'
          ? 'is not a known setting'
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
  if (!config.auth.token.realm && !isLoopback(config.listen)) {
    throw new ConfigError(
      `auth.token.realm is required when listening on ${config.listen} (${envName(['auth', 'token', 'realm'])}), e.g. https://registry.example.org/auth/token`,
    );
  }
  if (config.auth.ldap?.bindDn && !config.auth.ldap.bindPassword) {
    throw new ConfigError('auth.ldap.bindPassword is required with auth.ldap.bindDn: without it the bind is anonymous');
  }
  if (config.metadata.driver === 'postgres' && !config.metadata.postgres.url) {
    throw new ConfigError(`metadata.postgres.url is required when metadata.driver is postgres (${envName(['metadata', 'postgres', 'url'])})`);
  }
  return config;
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export const blobRoot = (config: Config): string => resolve(config.storage.filesystem.root ?? `${config.dataDir}/blobs`);
export const sqlitePath = (config: Config): string => resolve(config.metadata.sqlite.path ?? `${config.dataDir}/portcullis.db`);
