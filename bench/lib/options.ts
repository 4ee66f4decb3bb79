// Command-line options shared by registry-bench and compare.
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Credentials } from './http-client.js';
import { defaultLoadGenerator, type LoadGenerator } from './wrk.js';

export const SCENARIOS = ['push-monolithic', 'push-chunked', 'pull', 'small-push', 'manifest-get', 'mixed'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchOptions {
  blobMib: number;
  chunkMib: number;
  small: number;
  /** Untimed small image pushes between the first timed batch and the steady one. */
  smallWarmup: number;
  smallConcurrency: number;
  getSeconds: number;
  getConcurrency: number;
  /** Clients of the mixed push/re-tag/pull/delete load, and how long it runs. */
  mixedClients: number;
  mixedSeconds: number;
  /** What sends the manifest GETs: wrk (when installed) or the benchmark's own Node client. */
  loadGenerator: LoadGenerator;
  /** Seed of the large blobs' content (the chunked blob uses seed + 1). */
  seed: number;
  scenarios: Scenario[];
  json: boolean;
  credentials?: Credentials;
}

export interface ExtraOption {
  default?: string;
  help: string;
  /** A switch without a value: 'true' when given, else the default. */
  flag?: boolean;
}

/** The shared options that take a number, with their defaults (a command may choose its own). */
export const SHARED_DEFAULTS = {
  'blob-mib': '1024',
  'chunk-mib': '16',
  small: '500',
  'small-warmup': '50',
  'small-concurrency': '16',
  'get-seconds': '10',
  'get-concurrency': '64',
  'mixed-clients': '32',
  'mixed-seconds': '30',
} as const;
export type SharedDefaults = Partial<Record<keyof typeof SHARED_DEFAULTS, string>>;

function sharedHelp(defaults: Record<keyof typeof SHARED_DEFAULTS, string>): string {
  return `
  --blob-mib N            size of the large blob, MiB (default ${defaults['blob-mib']})
  --chunk-mib N           PATCH size of the chunked push, MiB (default ${defaults['chunk-mib']})
  --small N               small image pushes in each of the two timed batches (default ${defaults.small})
  --small-warmup N        untimed small image pushes between the first batch and the steady one (default ${defaults['small-warmup']})
  --small-concurrency N   concurrent small image pushes (default ${defaults['small-concurrency']})
  --get-seconds N         duration of the manifest GET test (default ${defaults['get-seconds']})
  --get-concurrency N     concurrent manifest GETs (default ${defaults['get-concurrency']})
  --mixed-clients N       clients of the mixed push/re-tag/pull/delete load (default ${defaults['mixed-clients']})
  --mixed-seconds N       duration of the mixed load (default ${defaults['mixed-seconds']})
  --load-generator G      what sends the manifest GETs: wrk or node (default wrk when installed)
  --scenarios LIST        comma-separated subset of ${SCENARIOS.join(',')} (default all)
  --seed N                seed of the large blobs' content (default random)
  --username U            registry user (Basic, or Docker token auth on a Bearer challenge)
  --password P            registry password (or environment variable BENCH_PASSWORD)
  --json                  print the results as JSON on stdout (the table goes to stderr)
  --help                  show this help`;
}

/** Parses argv into the shared options plus this command's own options. */
export function parseCli(
  usage: string,
  extra: Record<string, ExtraOption>,
  argv = process.argv.slice(2),
  ownDefaults: SharedDefaults = {},
): { bench: BenchOptions; extra: Record<string, string | undefined> } {
  const str = { type: 'string' } as const;
  const defaults = { ...SHARED_DEFAULTS, ...ownDefaults };
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ...Object.fromEntries(Object.keys(SHARED_DEFAULTS).map((name) => [name, str])),
      'load-generator': str,
      scenarios: str,
      seed: str,
      username: str,
      password: str,
      json: { type: 'boolean' },
      help: { type: 'boolean' },
      ...Object.fromEntries(Object.entries(extra).map(([name, option]) => [name, option.flag ? { type: 'boolean' } : str])),
    },
  });
  const all: Record<string, string | boolean | undefined> = values;
  const text = (name: string): string | undefined => {
    const value = all[name];
    return typeof value === 'string' ? value : undefined;
  };
  if (values.help) {
    const own = Object.entries(extra).map(([name, option]) => `  --${name.padEnd(22)}${option.help}`);
    console.log(`${usage}\n\nOptions:\n${own.join('\n')}${sharedHelp(defaults)}`);
    process.exit(0);
  }
  const bench: BenchOptions = {
    blobMib: positive(text, 'blob-mib', defaults['blob-mib']),
    chunkMib: positive(text, 'chunk-mib', defaults['chunk-mib']),
    small: positive(text, 'small', defaults.small, true),
    smallWarmup: positive(text, 'small-warmup', defaults['small-warmup'], true, true),
    smallConcurrency: positive(text, 'small-concurrency', defaults['small-concurrency'], true),
    getSeconds: positive(text, 'get-seconds', defaults['get-seconds']),
    getConcurrency: positive(text, 'get-concurrency', defaults['get-concurrency'], true),
    mixedClients: positive(text, 'mixed-clients', defaults['mixed-clients'], true),
    mixedSeconds: positive(text, 'mixed-seconds', defaults['mixed-seconds']),
    loadGenerator: loadGenerator(text('load-generator')),
    seed: text('seed') === undefined ? randomInt(2 ** 31) : positive(text, 'seed', '0', true, true),
    scenarios: scenarios(text('scenarios')),
    json: values.json === true,
    ...credentials(text('username'), text('password') ?? process.env.BENCH_PASSWORD),
  };
  const extras = Object.fromEntries(
    Object.entries(extra).map(([name, option]) => [name, option.flag ? (all[name] === true ? 'true' : option.default) : (text(name) ?? option.default)]),
  );
  return { bench, extra: extras };
}

function positive(
  text: (name: string) => string | undefined,
  name: string,
  fallback: string,
  integer = false,
  zeroAllowed = false,
): number {
  const raw = text(name) ?? fallback;
  const value = Number(raw);
  const valid = Number.isFinite(value) && (zeroAllowed ? value >= 0 : value > 0) && (!integer || Number.isInteger(value));
  if (!valid) usageError(`--${name} must be a ${integer ? 'whole ' : ''}number${zeroAllowed ? '' : ' above 0'}, not "${raw}"`);
  return value;
}

function scenarios(list: string | undefined): Scenario[] {
  if (list === undefined) return [...SCENARIOS];
  const names = list.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => !(SCENARIOS as readonly string[]).includes(name));
  if (unknown.length > 0) usageError(`unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.join(', ')})`);
  return SCENARIOS.filter((name) => names.includes(name));
}

function credentials(username: string | undefined, password: string | undefined): { credentials?: Credentials } {
  if (username === undefined) return {};
  return { credentials: { username, password: password ?? '' } };
}

export function usageError(message: string): never {
  console.error(`error: ${message} (see --help)`);
  process.exit(2);
}

function loadGenerator(text: string | undefined): LoadGenerator {
  if (text === undefined) return defaultLoadGenerator();
  if (text === 'wrk' || text === 'node') return text;
  usageError(`--load-generator must be wrk or node, not ${JSON.stringify(text)}`);
}
