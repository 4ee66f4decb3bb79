// The measurements, run one after the other against one registry.
import { randomBytes } from 'node:crypto';
import { HttpClient } from './http-client.js';
import type { BenchOptions, Scenario } from './options.js';
import { PatternBlob } from './pattern-blob.js';
import { ascending, percentile, runCount, runFor, timed } from './pool.js';
import { mixed } from './mixed.js';
import { MANIFEST_ACCEPT, RegistryOps } from './registry-ops.js';
import { runWrk, type WrkTarget } from './wrk.js';

const MiB = 1024 * 1024;
const MB = 1e6;
const GET_WARMUP_SECONDS = 1;

export interface MetricSpec {
  id: string;
  label: string;
  unit: string;
  higherIsBetter: boolean;
}

export interface Metric extends MetricSpec {
  value?: number;
  error?: string;
}

export interface BenchResult {
  url: string;
  startedAt: string;
  options: Omit<BenchOptions, 'credentials' | 'json'>;
  metrics: Metric[];
  /** Seconds, byte counts and other raw figures behind the metrics, per scenario. */
  details: Record<string, Record<string, number>>;
}

export interface Measured {
  values: Record<string, number>;
  detail: Record<string, number>;
  /** Metrics that have a value but did not go as they should (e.g. some requests failed), by id. */
  errors?: Record<string, string>;
}

export interface Context {
  ops: RegistryOps;
  options: BenchOptions;
  repository: (purpose: string) => string;
  /** The monolithically pushed blob, once pushed, for the pull. */
  pushed?: { repository: string; digest: string; size: number };
}

export interface ScenarioDef {
  metrics: (options: BenchOptions) => MetricSpec[];
  run: (context: Context) => Promise<Measured>;
}

const throughput = (id: string, label: string): MetricSpec => ({ id, label, unit: 'MB/s', higherIsBetter: true });

const SCENARIO_DEFS: Record<Scenario, ScenarioDef> = {
  'push-monolithic': {
    metrics: (o) => [throughput('push_monolithic', `push ${o.blobMib} MiB blob, monolithic`)],
    run: pushMonolithic,
  },
  'push-chunked': {
    metrics: (o) => [throughput('push_chunked', `push ${o.blobMib} MiB blob, ${o.chunkMib} MiB chunks`)],
    run: pushChunked,
  },
  pull: {
    metrics: (o) => [throughput('pull', `pull ${o.blobMib} MiB blob`)],
    run: pull,
  },
  'small-push': {
    metrics: (o) => [
      { id: 'small_push_first', label: `small image pushes, c=${o.smallConcurrency}, first ${o.small}`, unit: 'ops/s', higherIsBetter: true },
      { id: 'small_push', label: `small image pushes, c=${o.smallConcurrency}, after ${o.small + o.smallWarmup}`, unit: 'ops/s', higherIsBetter: true },
    ],
    run: smallPushes,
  },
  'manifest-get': {
    metrics: (o) => [
      { id: 'manifest_get', label: `manifest GET by tag, c=${o.getConcurrency}`, unit: 'req/s', higherIsBetter: true },
      { id: 'manifest_get_p50', label: 'manifest GET p50 latency', unit: 'ms', higherIsBetter: false },
      { id: 'manifest_get_p99', label: 'manifest GET p99 latency', unit: 'ms', higherIsBetter: false },
    ],
    run: manifestGets,
  },
  mixed,
};

/** The metrics a run with these options reports, in order. */
export const metricSpecs = (options: BenchOptions): MetricSpec[] =>
  options.scenarios.flatMap((name) => SCENARIO_DEFS[name].metrics(options));

/** Called around each scenario, e.g. to read the server's memory. */
export interface ScenarioHooks {
  before?: (scenario: Scenario) => void;
  after?: (scenario: Scenario) => void;
}

export async function runBenchmark(url: string, options: BenchOptions, log: (line: string) => void, hooks: ScenarioHooks = {}): Promise<BenchResult> {
  const http = new HttpClient(url, options.credentials);
  const run = randomBytes(4).toString('hex');
  const context: Context = { ops: new RegistryOps(http), options, repository: (purpose) => `bench-${run}/${purpose}` };
  const result = emptyResult(url, options);
  try {
    for (const name of options.scenarios) {
      const specs = SCENARIO_DEFS[name].metrics(options);
      log(`${name}: ${specs[0]?.label ?? ''} …`);
      hooks.before?.(name);
      try {
        const { values, detail, errors = {} } = await SCENARIO_DEFS[name].run(context);
        result.metrics.push(...specs.map((spec) => ({ ...spec, value: values[spec.id], ...(errors[spec.id] ? { error: errors[spec.id] } : {}) })));
        result.details[name] = detail;
        for (const error of Object.values(errors)) log(`${name}: ${error}`);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        log(`${name} failed: ${message}`);
        result.metrics.push(...specs.map((spec) => ({ ...spec, error: message })));
      } finally {
        hooks.after?.(name);
      }
    }
  } finally {
    http.close();
  }
  return result;
}

export function emptyResult(url: string, options: BenchOptions): BenchResult {
  const { credentials: _credentials, json: _json, ...shown } = options;
  return { url, startedAt: new Date().toISOString(), options: shown, metrics: [], details: {} };
}

/** A result whose every metric failed with `message` (e.g. the registry did not start). */
export function failedResult(url: string, options: BenchOptions, message: string): BenchResult {
  return { ...emptyResult(url, options), metrics: metricSpecs(options).map((spec) => ({ ...spec, error: message })) };
}

/** Seconds taken by an upload or download of `bytes` → throughput and raw figures. */
function transferred(id: string, bytes: number, ms: number, extra: Record<string, number> = {}): Measured {
  return { values: { [id]: bytes / MB / (ms / 1000) }, detail: { bytes, seconds: ms / 1000, ...extra } };
}

function largeBlob(options: BenchOptions, seedOffset: number): { blob: PatternBlob; digest: string } {
  const blob = new PatternBlob(options.seed + seedOffset, Math.round(options.blobMib * MiB));
  return { blob, digest: blob.digest() };
}

async function pushMonolithic(context: Context): Promise<Measured> {
  const { blob, digest } = largeBlob(context.options, 0);
  const repository = context.repository('monolithic');
  const ms = await timed(() => context.ops.pushMonolithic(repository, digest, blob.size, () => blob.segments()));
  context.pushed = { repository, digest, size: blob.size };
  return transferred('push_monolithic', blob.size, ms);
}

async function pushChunked(context: Context): Promise<Measured> {
  // A different seed, and a different repository: a registry that dedupes by digest must still write it.
  const { blob, digest } = largeBlob(context.options, 1);
  const chunk = Math.round(context.options.chunkMib * MiB);
  const repository = context.repository('chunked');
  const ms = await timed(() =>
    context.ops.pushChunked(repository, digest, blob.size, chunk, (start, end) => blob.segments(start, end)),
  );
  return transferred('push_chunked', blob.size, ms, { chunks: Math.ceil(blob.size / chunk) });
}

async function pull(context: Context): Promise<Measured> {
  if (!context.pushed && context.options.scenarios.includes('push-monolithic')) {
    throw new Error('skipped: the monolithic push failed');
  }
  if (!context.pushed) {
    const { blob, digest } = largeBlob(context.options, 0);
    const repository = context.repository('pull');
    await context.ops.pushMonolithic(repository, digest, blob.size, () => blob.segments());
    context.pushed = { repository, digest, size: blob.size };
  }
  const { repository, digest, size } = context.pushed;
  let bytes = 0;
  const ms = await timed(async () => (bytes = await context.ops.pullBlob(repository, digest)));
  if (bytes !== size) throw new Error(`pulled ${bytes} bytes of ${digest}, expected ${size}`);
  return transferred('pull', bytes, ms);
}

async function smallPushes(context: Context): Promise<Measured> {
  const { small, smallWarmup, smallConcurrency } = context.options;
  const repository = context.repository('small');
  const batch = async (name: string): Promise<{ rate: number; seconds: number; p50: number; p99: number }> => {
    const latencies: number[] = [];
    const ms = await timed(() =>
      runCount(small, smallConcurrency, async (i) => {
        latencies.push(await timed(() => context.ops.pushSmallImage(repository, `${name}-${i}`, `${repository}#${name}-${i}`)));
      }),
    );
    const sorted = ascending(latencies);
    return { rate: small / (ms / 1000), seconds: ms / 1000, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  };
  // Two figures: the first pushes a server makes, while its JIT still compiles the push path, and
  // the pace it settles at after more, untimed, into the same repository (as a long-running
  // registry serves; the manifest GETs have a warm-up second for the same reason).
  const first = await batch('first');
  if (smallWarmup > 0) {
    await runCount(smallWarmup, smallConcurrency, (i) => context.ops.pushSmallImage(repository, `warm-${i}`, `${repository}#warm-${i}`).then(() => undefined));
  }
  const steady = await batch('op');
  return {
    values: { small_push_first: first.rate, small_push: steady.rate },
    detail: {
      ops: small,
      warmup_ops: smallWarmup,
      first_seconds: first.seconds,
      first_p50_ms: first.p50,
      first_p99_ms: first.p99,
      seconds: steady.seconds,
      p50_ms: steady.p50,
      p99_ms: steady.p99,
    },
  };
}

async function manifestGets(context: Context): Promise<Measured> {
  const { getSeconds, getConcurrency } = context.options;
  const repository = context.repository('get');
  const digest = await context.ops.pushSmallImage(repository, 'latest', repository);
  const get = () => context.ops.getManifest(repository, 'latest', digest);
  if (context.options.loadGenerator === 'wrk') {
    await get(); // checks the answer, and fetches the token wrk then sends
    const target = await manifestTarget(context.ops.http, repository);
    await runWrk([target], getConcurrency, Math.min(GET_WARMUP_SECONDS, getSeconds));
    const rate = await runWrk([target], getConcurrency, getSeconds);
    return {
      values: { manifest_get: rate.perSecond, manifest_get_p50: rate.p50, manifest_get_p99: rate.p99 },
      detail: { requests: rate.requests, seconds: rate.seconds, load_generator_cpus: rate.cpus },
    };
  }
  await runFor(Math.min(GET_WARMUP_SECONDS, getSeconds), getConcurrency, get);
  const start = performance.now();
  const latencies = ascending(await runFor(getSeconds, getConcurrency, get));
  const seconds = (performance.now() - start) / 1000;
  return {
    values: {
      manifest_get: latencies.length / seconds,
      manifest_get_p50: percentile(latencies, 50),
      manifest_get_p99: percentile(latencies, 99),
    },
    detail: { requests: latencies.length, seconds },
  };
}

/** What wrk sends for a manifest GET by tag: the URL, the Accept list and the client's token. */
export async function manifestTarget(http: HttpClient, repository: string): Promise<WrkTarget> {
  const url = new URL(`/v2/${repository}/manifests/latest`, http.baseUrl).href;
  const authorization = await http.authorizationFor(url);
  return { url, headers: { Accept: MANIFEST_ACCEPT, ...(authorization ? { Authorization: authorization } : {}) } };
}
