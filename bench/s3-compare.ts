// Portcullis on PostgreSQL + S3 against the reference registry (Debian's docker-registry, CNCF
// distribution 2.8, with its storage.s3 driver), both on one private Ceph RADOS Gateway, one
// registry after the other, each on a fresh bucket; then manifest GETs by tag with one and with two
// Portcullis replicas on one database and one bucket. See README.md ("s3-compare").
//   node dist/bench/s3-compare.js [--quick] [--blob-mib 1024] [--get-seconds 10] [--small 200] [--json] …
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CephRgwMemory, startCephRgw } from '../test/support/ceph-rgw.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../test/support/postgres.js';
import { freshBucket, s3Env, storageEnv, type TestBucket } from '../test/support/s3.js';
import { type Credentials, HttpClient } from './lib/http-client.js';
import { type BenchOptions, parseCli, type Scenario, usageError } from './lib/options.js';
import { ascending, percentile, runFor } from './lib/pool.js';
import { RegistryOps } from './lib/registry-ops.js';
import { errorLines, formatMetric, formatNumber, table } from './lib/report.js';
import { type BenchResult, failedResult, manifestTarget, type Metric, metricSpecs, runBenchmark } from './lib/scenarios.js';
import { runWrk } from './lib/wrk.js';
import {
  PORTCULLIS_BENCH_ADMIN,
  portcullisSpec,
  type ProcessSpec,
  referenceS3Spec,
  type RunningRegistry,
  startRegistry,
  syncDisks,
} from './lib/servers.js';

const USAGE = `Usage: node dist/bench/s3-compare.js [--quick] [options]   (build first: npx tsc -p tsconfig.json)
Defaults differ from registry-bench: --small 200. --quick means --blob-mib 64 --get-seconds 3 --small 20 --small-warmup 5
(options given explicitly win over both).`;
const DEFAULT_ARGS = ['--small', '200'];
const QUICK_ARGS = ['--blob-mib', '64', '--get-seconds', '3', '--small', '20', '--small-warmup', '5'];

/** Portcullis ÷ reference that each metric should reach (issue 8); the small pushes have no goal. */
const GOALS: Record<string, number> = { push_monolithic: 1.5, push_chunked: 1.5, pull: 1, manifest_get: 10 };
/** Manifest GETs per second of two replicas ÷ one. */
const REPLICA_GOAL = 1.6;
const GET_WARMUP_SECONDS = 1;
/** How long a signal waits for buckets, databases and the gateway to go before exiting anyway. */
const SIGNAL_CLEANUP_MS = 30_000;
const MiB = 1024 * 1024;

const log = (line: string) => console.error(line);
const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** Manifest GETs by tag against one or more servers. */
interface GetRate {
  servers: number;
  requests: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
  /** CPUs busy on the whole machine while it ran (Linux only): near the count of CPUs, the machine was the limit. */
  machineBusyCpus?: number;
  /** CPUs the load generator (this process) used meanwhile. */
  loadGeneratorCpus: number;
}

interface ReplicaRates {
  one?: GetRate;
  two?: GetRate;
  error?: string;
}

/** Requests per second of two replicas ÷ one, against the goal. */
interface ReplicaVerdict {
  ratio?: number;
  goal: number;
  met?: boolean;
}

/** Every run's result; the reference runs have no auth, Portcullis always runs with token auth. */
interface Runs {
  /** docker-registry as it is by default on S3: blob GETs are 307s to presigned URLs of the store. */
  reference: BenchResult;
  /** docker-registry with storage.redirect.disable (blob GETs streamed through it): the pull only. */
  referenceStreamed?: BenchResult;
  /** storage.s3.redirect: false, every byte through Portcullis. */
  portcullis: BenchResult;
  /** storage.s3.redirect: true: the pull only, since a push is the same as streamed. */
  portcullisRedirect?: BenchResult;
  replicas?: ReplicaRates;
}

interface Row {
  label: string;
  unit: string;
  portcullis?: Metric;
  reference?: Metric;
  /** > 1 means Portcullis is better (faster, or lower latency). */
  ratio?: number;
  goal?: number;
  met?: boolean;
}

interface CleanupStep {
  /** What undo does, after "could not". */
  what: string;
  undo: () => Promise<void>;
}

/**
 * What is to be stopped, removed or dropped, undone newest first: at the end of each phase, on an
 * error, and on a signal. A step is taken off the list before it runs, so it runs once.
 */
class Cleanup {
  private readonly steps: CleanupStep[] = [];
  /** Acquisitions still in flight: a signal waits for them, so what they make is undone too. */
  private readonly pending = new Set<Promise<unknown>>();
  private closed = false;
  private unwinding: Promise<void> = Promise.resolve();

  /** Makes something and registers its undo the moment it exists; refused once a signal closed the cleanup. */
  async acquire<T>(make: () => Promise<T>, what: (made: T) => string, undo: (made: T) => Promise<void>): Promise<T> {
    if (this.closed) throw new Error('interrupted');
    const acquired = make().then((made) => {
      this.steps.push({ what: what(made), undo: () => undo(made) });
      return made;
    });
    this.pending.add(acquired);
    try {
      return await acquired;
    } finally {
      this.pending.delete(acquired);
    }
  }

  /** The number of steps now: unwind(mark) undoes only what was added since. */
  mark(): number {
    return this.steps.length;
  }

  /** Undoes the steps added since `mark`; unwinds asked for at once (a signal during a phase's end) run one after the other. */
  unwind(mark = 0): Promise<void> {
    const run = this.unwinding.then(() => this.undoDownTo(mark));
    this.unwinding = run;
    return run;
  }

  private async undoDownTo(mark: number): Promise<void> {
    while (this.steps.length > mark) {
      const step = this.steps.pop() as CleanupStep;
      try {
        await step.undo();
      } catch (error) {
        log(`cleanup: could not ${step.what}: ${messageOf(error)}`);
      }
    }
  }

  /** For a signal: refuses new acquisitions, waits for those in flight, then undoes everything. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.pending]);
    await this.unwind();
  }
}

const cleanup = new Cleanup();
/** Registries running now, for the synchronous kill on exit and on a signal. */
const live = new Set<RunningRegistry>();

function installSignalHandlers(): void {
  const killRegistries = () => {
    for (const registry of live) registry.stopSync();
    live.clear();
  };
  process.once('exit', killRegistries);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      log(`\n${signal}: stopping the registries, removing buckets and databases, stopping the gateway`);
      killRegistries();
      setTimeout(() => process.exit(130), SIGNAL_CLEANUP_MS).unref();
      void cleanup.close().finally(() => process.exit(130));
    });
  }
}

/** Runs `work`; whatever it added to the cleanup is undone when it ends, then dirty pages are flushed. */
async function phase<T>(work: () => Promise<T>): Promise<T> {
  const mark = cleanup.mark();
  try {
    return await work();
  } finally {
    await cleanup.unwind(mark);
    // The OSD's writes of this run must not slow the next one.
    await syncDisks();
  }
}

function bucket(prefix: string): Promise<TestBucket> {
  return cleanup.acquire(() => freshBucket(prefix), (made) => `remove bucket ${made.name}`, (made) => made.remove());
}

function database(): Promise<TestDatabase> {
  return cleanup.acquire(createTestDatabase, (made) => `drop database ${made.name}`, (made) => made.drop());
}

async function registry(spec: ProcessSpec, label: string): Promise<RunningRegistry> {
  const started = await cleanup.acquire(
    () => startRegistry(spec, tmpdir()),
    () => `stop ${label}`,
    (made) => made.stop().finally(() => live.delete(made)),
  );
  live.add(started);
  log(`== ${label}: ${started.url}`);
  return started;
}

/** An EC P-256 signing key in a file of its own, for replicas that must accept each other's tokens. */
async function signingKeyFile(): Promise<string> {
  const dir = await cleanup.acquire(
    () => mkdtemp(join(tmpdir(), 'portcullis-bench-key-')),
    (made) => `remove ${made}`,
    (made) => rm(made, { recursive: true, force: true }),
  );
  const file = join(dir, 'signing.pem');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return file;
}

/** One registry run on fresh resources; a registry that does not start gives a result whose every metric failed. */
function measure(label: string, options: BenchOptions, start: () => Promise<RunningRegistry>, credentials?: Credentials): Promise<BenchResult> {
  return phase(async () => {
    log(`\n== ${label}: starting`);
    let started: RunningRegistry;
    try {
      started = await start();
    } catch (error) {
      log(messageOf(error));
      return failedResult('-', options, `${label} did not start`);
    }
    const result = await runBenchmark(started.url, { ...options, credentials }, (line) => log(`[${label}] ${line}`));
    if (result.metrics.some((metric) => metric.error)) log(`[${label}] server output (tail):\n${started.output().slice(-4000)}`);
    return result;
  });
}

function referenceRun(binary: string, options: BenchOptions, redirect: boolean): Promise<BenchResult> {
  const label = redirect ? 'reference (307 to the store, its default)' : 'reference (streamed: storage.redirect.disable)';
  return measure(label, options, async () => {
    const created = await bucket('bench-reference');
    const store = {
      endpoint: created.s3.endpoint,
      bucket: created.name,
      accessKeyId: created.s3.accessKeyId,
      secretAccessKey: created.s3.secretAccessKey,
      region: created.s3.region,
      rootDirectory: '/registry',
    };
    return registry(referenceS3Spec(binary, store, redirect), label);
  });
}

/** Portcullis with its own database and bucket: metadata and blobs must describe the same store. */
function portcullisRun(mainJs: string, options: BenchOptions, redirect: boolean): Promise<BenchResult> {
  const label = redirect ? 'portcullis (storage.s3.redirect: true)' : 'portcullis (streamed)';
  return measure(
    label,
    options,
    async () => {
      const [db, created] = await Promise.all([database(), bucket('bench-portcullis')]);
      return registry(portcullisSpec(mainJs, { ...postgresEnv(db), ...storageEnv(created, { redirect }) }), label);
    },
    { ...PORTCULLIS_BENCH_ADMIN },
  );
}

/**
 * Manifest GETs by tag for `getSeconds` with `getConcurrency` in flight, each request sent to the
 * next of `urls` in turn (a round-robin load balancer), after a warm-up. Every request carries a
 * bearer token.
 */
async function manifestGetRate(urls: string[], options: BenchOptions): Promise<GetRate> {
  const clients = urls.map((url) => new HttpClient(url, { ...PORTCULLIS_BENCH_ADMIN }));
  try {
    const ops = clients.map((client) => new RegistryOps(client));
    const at = (i: number) => ops[i % ops.length] as RegistryOps;
    const repository = `bench-${randomBytes(4).toString('hex')}/get-${urls.length}`;
    const digest = await at(0).pushSmallImage(repository, 'latest', repository);
    // Each client logs in to its server once before the load starts, as real clients each hold a
    // token: otherwise every in-flight request would log in at once (password hashing included).
    for (const [i] of ops.entries()) await at(i).getManifest(repository, 'latest', digest);
    if (options.loadGenerator === 'wrk') {
      const targets = await Promise.all(clients.map((client) => manifestTarget(client, repository)));
      await runWrk(targets, options.getConcurrency, Math.min(GET_WARMUP_SECONDS, options.getSeconds));
      const machineAtStart = machineCpuTicks();
      const rate = await runWrk(targets, options.getConcurrency, options.getSeconds);
      return {
        servers: urls.length,
        requests: rate.requests,
        seconds: rate.seconds,
        perSecond: rate.perSecond,
        p50: rate.p50,
        p99: rate.p99,
        machineBusyCpus: busyCpusSince(machineAtStart),
        loadGeneratorCpus: rate.cpus,
      };
    }
    let next = 0;
    const get = () => at(next++).getManifest(repository, 'latest', digest);
    await runFor(Math.min(GET_WARMUP_SECONDS, options.getSeconds), options.getConcurrency, get);
    const start = performance.now();
    const machineAtStart = machineCpuTicks();
    const selfAtStart = process.cpuUsage();
    const latencies = ascending(await runFor(options.getSeconds, options.getConcurrency, get));
    const seconds = (performance.now() - start) / 1000;
    const self = process.cpuUsage(selfAtStart);
    return {
      servers: urls.length,
      requests: latencies.length,
      seconds,
      perSecond: latencies.length / seconds,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      machineBusyCpus: busyCpusSince(machineAtStart),
      loadGeneratorCpus: (self.user + self.system) / 1e6 / seconds,
    };
  } finally {
    for (const client of clients) client.close();
  }
}

interface CpuTicks {
  busy: number;
  total: number;
  cpus: number;
}

/** Busy and total time of all CPUs so far, from /proc/stat (Linux); undefined elsewhere. */
function machineCpuTicks(): CpuTicks | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  // cpu  user nice system idle iowait irq softirq steal …
  const fields = (lines[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 8 || fields.some((field) => !Number.isFinite(field))) return undefined;
  const total = fields.reduce((sum, field) => sum + field, 0);
  const idle = (fields[3] as number) + (fields[4] as number);
  return { busy: total - idle, total, cpus: lines.filter((line) => /^cpu\d+\s/.test(line)).length };
}

/** How many CPUs were busy on average since `start`. */
function busyCpusSince(start: CpuTicks | undefined): number | undefined {
  const end = machineCpuTicks();
  if (!start || !end || end.total <= start.total) return undefined;
  return ((end.busy - start.busy) / (end.total - start.total)) * end.cpus;
}

/** Two replicas on one database and one bucket, sharing a signing key; one replica's rate, then both. */
function replicaRun(mainJs: string, options: BenchOptions): Promise<ReplicaRates> {
  return phase(async () => {
    log('\n== portcullis replicas: starting two');
    try {
      const [db, created, keyFile] = await Promise.all([database(), bucket('bench-replicas'), signingKeyFile()]);
      const env = { ...postgresEnv(db), ...storageEnv(created), PORTCULLIS_AUTH_TOKEN_KEY_FILE: keyFile };
      // One after the other: the first migrates the fresh database and creates the administrator.
      const first = await registry(portcullisSpec(mainJs, env), 'portcullis replica 1');
      const second = await registry(portcullisSpec(mainJs, env), 'portcullis replica 2');
      log(`[replicas] manifest GET by tag, c=${options.getConcurrency}, one replica (the other idle) …`);
      const one = await manifestGetRate([first.url], options);
      log(`[replicas] ${formatNumber(one.perSecond)} req/s; both replicas, round-robin …`);
      const two = await manifestGetRate([first.url, second.url], options);
      log(`[replicas] ${formatNumber(two.perSecond)} req/s`);
      return { one, two };
    } catch (error) {
      log(`[replicas] failed: ${messageOf(error)}`);
      return { error: messageOf(error) };
    }
  });
}

const metricOf = (result: BenchResult | undefined, id: string): Metric | undefined => result?.metrics.find((metric) => metric.id === id);

function withRatio(row: Row, higherIsBetter: boolean): Row {
  const portcullis = row.portcullis?.value;
  const reference = row.reference?.value;
  // A count (the mixed load's unexpected responses) is read as it is, not as a ratio.
  if (portcullis === undefined || reference === undefined || row.unit === 'count') return row;
  const ratio = higherIsBetter ? portcullis / reference : reference / portcullis;
  return { ...row, ratio, ...(row.goal === undefined ? {} : { met: ratio >= row.goal }) };
}

/** One row per metric of the streamed runs; the pull three times (streamed, redirected, and across). */
function comparisonRows(options: BenchOptions, runs: Runs): Row[] {
  return metricSpecs(options).flatMap((spec) => {
    const pair = (label: string, portcullis: BenchResult | undefined, reference: BenchResult | undefined): Row =>
      withRatio(
        { label, unit: spec.unit, portcullis: metricOf(portcullis, spec.id), reference: metricOf(reference, spec.id), goal: GOALS[spec.id] },
        spec.higherIsBetter,
      );
    if (spec.id !== 'pull') return [pair(spec.label, runs.portcullis, runs.reference)];
    return [
      pair(`${spec.label}, both streamed`, runs.portcullis, runs.referenceStreamed),
      pair(`${spec.label}, both 307 to the store`, runs.portcullisRedirect, runs.reference),
      pair(`${spec.label}, streamed vs reference's 307`, runs.portcullis, runs.reference),
    ];
  });
}

function rowCells(row: Row): string[] {
  return [
    row.ratio === undefined ? '-' : `${formatNumber(row.ratio)}×`,
    row.goal === undefined ? '' : `≥${row.goal}×`,
    row.met === undefined ? '' : row.met ? 'yes' : 'NO',
  ];
}

function comparisonTable(rows: Row[]): string {
  const body = rows.map((row) => [row.label, row.unit, formatMetric(row.portcullis), formatMetric(row.reference), ...rowCells(row)]);
  return table(['metric', 'unit', 'portcullis', 'reference', 'ratio', 'goal', 'met'], body);
}

function replicaVerdict(rates: ReplicaRates): ReplicaVerdict {
  if (!rates.one || !rates.two) return { goal: REPLICA_GOAL };
  const ratio = rates.two.perSecond / rates.one.perSecond;
  return { ratio, goal: REPLICA_GOAL, met: ratio >= REPLICA_GOAL };
}

/** One replica's figures beside two replicas', the ratio (> 1: two are better), and the goal for req/s. */
function replicaTable(options: BenchOptions, rates: ReplicaRates, verdict: ReplicaVerdict): string {
  const cell = (value: number | undefined) => (value === undefined ? (rates.error ? 'error' : '-') : formatNumber(value));
  const line = (label: string, unit: string, pick: (rate: GetRate) => number | undefined, ratio?: (one: number, two: number) => number): string[] => {
    const one = rates.one && pick(rates.one);
    const two = rates.two && pick(rates.two);
    const shown = ratio && one !== undefined && two !== undefined ? `${formatNumber(ratio(one, two))}×` : '-';
    return [label, unit, cell(one), cell(two), shown];
  };
  const met = verdict.met === undefined ? '' : verdict.met ? 'yes' : 'NO';
  const body = [
    [...line(`manifest GET by tag, c=${options.getConcurrency}`, 'req/s', (rate) => rate.perSecond, (one, two) => two / one), `≥${verdict.goal}×`, met],
    [...line('manifest GET p50 latency', 'ms', (rate) => rate.p50, (one, two) => one / two), '', ''],
    [...line('manifest GET p99 latency', 'ms', (rate) => rate.p99, (one, two) => one / two), '', ''],
    [...line('CPUs busy, whole machine', 'CPUs', (rate) => rate.machineBusyCpus), '', ''],
    [...line('CPUs used by the load generator', 'CPUs', (rate) => rate.loadGeneratorCpus), '', ''],
  ];
  return table(['portcullis replicas', 'unit', 'one', 'two', 'ratio', 'goal', 'met'], body);
}

const loadLine = (): string => loadavg().map((load) => load.toFixed(2)).join(' ');

function memoryLine(memory: CephRgwMemory): string {
  const mib = (bytes: number) => `${Math.round(bytes / MiB)} MiB`;
  return `[ceph] resident memory: mon ${mib(memory.mon)}, osd ${mib(memory.osd)}, rgw ${mib(memory.rgw)}`;
}

/** The shared defaults of this command, then --quick's, then what was given (the last of each option wins). */
function withDefaults(argv: string[]): string[] {
  const quick = argv.includes('--quick');
  return [...DEFAULT_ARGS, ...(quick ? QUICK_ARGS : []), ...argv.filter((arg) => arg !== '--quick')];
}

async function main(): Promise<number> {
  const { bench, extra } = parseCli(
    USAGE,
    {
      'portcullis-main': {
        default: fileURLToPath(new URL('../src/cli/main.js', import.meta.url)),
        help: 'Portcullis entry point (default dist/src/cli/main.js)',
      },
      'reference-bin': { default: 'docker-registry', help: 'reference registry binary (default docker-registry)' },
    },
    withDefaults(process.argv.slice(2)),
  );
  const mainJs = extra['portcullis-main'] as string;
  const referenceBin = extra['reference-bin'] as string;
  if (!existsSync(mainJs)) usageError(`${mainJs} does not exist: build first`);
  const has = (scenario: Scenario) => bench.scenarios.includes(scenario);
  const pullOnly: BenchOptions = { ...bench, scenarios: ['pull'] };
  installSignalHandlers();
  const loadAtStart = loadLine();
  const started = new Date();
  let runs: Runs;
  try {
    log(`== Ceph RADOS Gateway (bluestore): starting (load average ${loadAtStart})`);
    const gateway = await cleanup.acquire(() => startCephRgw(), () => 'stop the Ceph gateway', (made) => made.stop());
    // freshBucket() makes its buckets on the gateway these variables name (test/support/s3.ts).
    Object.assign(process.env, s3Env(gateway));
    log(`== Ceph RADOS Gateway: ${gateway.endpoint}, data in ${gateway.dir}`);
    const memory = async () => log(memoryLine(await gateway.memory()));
    const reference = await referenceRun(referenceBin, bench, true);
    await memory();
    const referenceStreamed = has('pull') ? await referenceRun(referenceBin, pullOnly, false) : undefined;
    const portcullis = await portcullisRun(mainJs, bench, false);
    await memory();
    const portcullisRedirect = has('pull') ? await portcullisRun(mainJs, pullOnly, true) : undefined;
    const replicas = has('manifest-get') ? await replicaRun(mainJs, bench) : undefined;
    await memory();
    runs = { reference, referenceStreamed, portcullis, portcullisRedirect, replicas };
  } finally {
    await cleanup.unwind();
  }

  const rows = comparisonRows(bench, runs);
  const verdict = runs.replicas && replicaVerdict(runs.replicas);
  const goals = [...rows, ...(verdict ? [verdict] : [])].filter((row) => row.goal !== undefined);
  const minutes = (Date.now() - started.getTime()) / 60_000;
  const text = [
    '',
    `Portcullis (PostgreSQL + S3, token auth) vs reference registry (docker-registry, storage.s3), one Ceph RADOS Gateway`,
    `${started.toISOString()}, ${formatNumber(minutes)} min; seed ${bench.seed}; load average (1/5/15 min) at start ${loadAtStart}, at end ${loadLine()}`,
    comparisonTable(rows),
    ...(runs.replicas && verdict ? ['', replicaTable(bench, runs.replicas, verdict)] : []),
    '',
    'ratio > 1 means Portcullis (two replicas) is better: for latencies it is reference ÷ portcullis (one ÷ two).',
    `goals met: ${goals.filter((row) => row.met).length} of ${goals.length}`,
    ...errorLines(runs.reference, 'reference'),
    ...(runs.referenceStreamed ? errorLines(runs.referenceStreamed, 'reference, streamed') : []),
    ...errorLines(runs.portcullis, 'portcullis'),
    ...(runs.portcullisRedirect ? errorLines(runs.portcullisRedirect, 'portcullis, redirect') : []),
    ...(runs.replicas?.error ? [`replicas: ${runs.replicas.error}`] : []),
  ].join('\n');
  if (bench.json) {
    console.error(text);
    console.log(JSON.stringify({ comparison: rows, replicas: runs.replicas ? { ...runs.replicas, ...verdict } : null, runs }, null, 2));
  } else {
    console.log(text);
  }
  const results = [runs.reference, runs.referenceStreamed, runs.portcullis, runs.portcullisRedirect];
  const failed = results.some((result) => result?.metrics.some((metric) => metric.error)) || runs.replicas?.error !== undefined;
  return failed ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error('s3-compare:', messageOf(error));
    process.exitCode = 1;
  },
);
