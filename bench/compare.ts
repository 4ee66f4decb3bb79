// Runs registry-bench against Portcullis and against the reference registry (CNCF distribution
// 2.8, Debian's docker-registry), one after the other, `--repeat` times, and prints the medians
// side by side with the servers' resident memory; see README.md.
//   node dist/bench/compare.js [--repeat 3] [--blob-mib 512] [--json] …
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BenchOptions, parseCli, type SharedDefaults, usageError } from './lib/options.js';
import { median } from './lib/pool.js';
import { MemoryWatch } from './lib/process-memory.js';
import { errorLines, formatNumber, table } from './lib/report.js';
import { PORTCULLIS_BENCH_ADMIN, portcullisSpec, projectRoot, referenceSpec, type RunningRegistry, startRegistry, syncDisks } from './lib/servers.js';
import { type BenchResult, failedResult, type Metric, type MetricSpec, metricSpecs, runBenchmark } from './lib/scenarios.js';

const USAGE = 'Usage: node dist/bench/compare.js [options]   (build first: npx tsc -p tsconfig.json)';
const NAMES = ['portcullis', 'reference'] as const;
type Name = (typeof NAMES)[number];

/**
 * Smaller than registry-bench's, so that three repetitions of both registries take a few minutes; a
 * longer warm-up, so that the steady small-push figure is past V8's compiling of the push path.
 */
const COMPARE_DEFAULTS: SharedDefaults = { 'blob-mib': '512', small: '200', 'small-warmup': '1000' };

/**
 * What each metric should reach (issue 10): `ratio`, the least Portcullis ÷ reference (reference ÷
 * Portcullis where lower is better, so > 1 is always Portcullis ahead); `atMost`, the most
 * Portcullis's own figure may be.
 */
interface Goal {
  ratio?: number;
  atMost?: number;
}
const GOALS: Record<string, Goal> = {
  push_monolithic: { ratio: 3 },
  push_chunked: { ratio: 3 },
  pull: { ratio: 1.2 },
  small_push_first: { ratio: 2 },
  small_push: { ratio: 2 },
  manifest_get: { ratio: 3 },
  manifest_get_p99: { atMost: 50 },
  mixed: { ratio: 2 },
  mixed_errors: { atMost: 0 },
  // Portcullis at most twice the reference's memory: reference ÷ Portcullis ≥ 0.5.
  rss_peak_mib: { ratio: 0.5 },
  rss_peak_mixed_mib: { ratio: 0.5 },
};

/** Read from the server's /proc/<pid>/status, not by the client. */
const memoryMetrics = (options: BenchOptions): MetricSpec[] => [
  { id: 'rss_peak_mib', label: 'peak resident memory, whole run', unit: 'MiB', higherIsBetter: false },
  ...(options.scenarios.includes('mixed')
    ? [{ id: 'rss_peak_mixed_mib', label: 'peak resident memory, mixed load', unit: 'MiB', higherIsBetter: false }]
    : []),
  { id: 'rss_end_mib', label: 'resident memory at the end', unit: 'MiB', higherIsBetter: false },
];

interface Row {
  id: string;
  label: string;
  unit: string;
  /** Median over the repetitions (a sum for counts); undefined when every repetition failed. */
  portcullis?: number;
  reference?: number;
  /** Each repetition's figure, null where it failed. */
  runs: Record<Name, (number | null)[]>;
  /** Of the medians; > 1 means Portcullis is better (faster, lower latency, less memory). */
  ratio?: number;
  goal?: Goal;
  met?: boolean;
}

type Runs = Record<Name, BenchResult[]>;

const live = new Set<RunningRegistry>();
const log = (line: string) => console.error(line);

function installCleanup(): void {
  const stopAll = () => {
    for (const registry of live) registry.stopSync();
    live.clear();
  };
  process.once('exit', stopAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      log(`\n${signal}: stopping registries and removing their data`);
      stopAll();
      process.exit(130);
    });
  }
}

interface Setup {
  options: BenchOptions;
  portcullisMain: string;
  referenceBin: string;
  tmpDir: string;
}

/** Starts a registry with a fresh data directory; undefined (and a failed result) when it does not start. */
async function start(name: Name, setup: Setup): Promise<RunningRegistry | string> {
  const spec = name === 'portcullis' ? portcullisSpec(setup.portcullisMain) : referenceSpec(setup.referenceBin);
  log(`\n== ${name}: starting`);
  try {
    const registry = await startRegistry(spec, setup.tmpDir);
    live.add(registry);
    log(`== ${name}: ${registry.url}, pid ${registry.pid}, data in ${registry.dataDir}`);
    return registry;
  } catch (error) {
    log(error instanceof Error ? error.message : String(error));
    return `${name} did not start`;
  }
}

async function stop(registry: RunningRegistry): Promise<void> {
  await registry.stop();
  live.delete(registry);
  await syncDisks();
}

/** One repetition against a running registry, with its resident memory per scenario and overall. */
async function measure(name: Name, registry: RunningRegistry, options: BenchOptions, fresh: boolean, tag: string): Promise<BenchResult> {
  // Portcullis always runs with token auth: every request pays for a verified bearer token.
  const runOptions = name === 'portcullis' ? { ...options, credentials: { ...PORTCULLIS_BENCH_ADMIN } } : options;
  // On a reused server, this repetition's peak starts now; on a fresh one it includes start-up.
  const watch = new MemoryWatch(registry.pid, fresh);
  const startMib = registry.memory()?.residentMib;
  const result = await runBenchmark(registry.url, runOptions, (line) => log(`[${tag}] ${line}`), {
    before: () => watch.begin(),
    after: (scenario) => watch.end(scenario),
  });
  if (result.metrics.some((metric) => metric.error)) log(`[${tag}] server output (tail):\n${registry.output().slice(-4000)}`);
  const total = watch.total();
  const values: Record<string, number | undefined> = {
    rss_peak_mib: total?.peakMib,
    rss_peak_mixed_mib: watch.phases.mixed?.peakMib,
    rss_end_mib: total?.residentMib,
  };
  result.metrics.push(...memoryMetrics(options).map((spec): Metric => (values[spec.id] === undefined ? { ...spec } : { ...spec, value: values[spec.id] })));
  result.details.memory = {
    ...(startMib === undefined ? {} : { start_mib: startMib }),
    ...Object.fromEntries(
      Object.entries(watch.phases).flatMap(([phase, memory]) => [
        [`after_${phase}_mib`, memory.residentMib],
        ...(memory.peakMib === undefined ? [] : [[`peak_${phase}_mib`, memory.peakMib]]),
      ]),
    ),
    ...(total ? { peak_mib: total.peakMib, end_mib: total.residentMib } : {}),
  };
  return result;
}

const failed = (options: BenchOptions, message: string): BenchResult => {
  const result = failedResult('-', options, message);
  result.metrics.push(...memoryMetrics(options).map((spec) => ({ ...spec, error: message })));
  return result;
};

/** Each seed repetition gets its own blobs (the chunked push uses seed + 1), shared by both registries. */
const optionsFor = (options: BenchOptions, repetition: number): BenchOptions => ({ ...options, seed: options.seed + 2 * repetition });

/** A fresh server (and data directory) for every run, the order of the two alternating per repetition. */
async function freshServers(setup: Setup, repeat: number, first: Name[]): Promise<{ runs: Runs; orders: Name[][] }> {
  const runs: Runs = { portcullis: [], reference: [] };
  const orders: Name[][] = [];
  for (let repetition = 0; repetition < repeat; repetition++) {
    const order = repetition % 2 === 0 ? first : [...first].reverse();
    orders.push(order);
    const options = optionsFor(setup.options, repetition);
    for (const name of order) {
      const tag = `${name} ${repetition + 1}/${repeat}`;
      const registry = await start(name, setup);
      if (typeof registry === 'string') {
        runs[name].push(failed(options, registry));
        continue;
      }
      try {
        runs[name].push(await measure(name, registry, options, true, tag));
      } finally {
        await stop(registry);
      }
    }
  }
  return { runs, orders };
}

/** One server per registry, every repetition against it (so growth of its memory shows), one registry after the other. */
async function reusedServers(setup: Setup, repeat: number, order: Name[]): Promise<{ runs: Runs; orders: Name[][] }> {
  const runs: Runs = { portcullis: [], reference: [] };
  for (const name of order) {
    const registry = await start(name, setup);
    try {
      for (let repetition = 0; repetition < repeat; repetition++) {
        const options = optionsFor(setup.options, repetition);
        if (typeof registry === 'string') runs[name].push(failed(options, registry));
        else runs[name].push(await measure(name, registry, options, repetition === 0, `${name} ${repetition + 1}/${repeat}`));
      }
    } finally {
      if (typeof registry !== 'string') await stop(registry);
    }
  }
  return { runs, orders: [order] };
}

function aggregate(spec: MetricSpec, values: (number | null)[]): number | undefined {
  const measured = values.filter((value): value is number => value !== null);
  if (measured.length === 0) return undefined;
  // Counts (failed requests) add up: "0 errors" means none in any repetition.
  return spec.unit === 'count' ? measured.reduce((sum, value) => sum + value, 0) : median(measured);
}

function compareRows(options: BenchOptions, runs: Runs): Row[] {
  return [...metricSpecs(options), ...memoryMetrics(options)].map((spec) => {
    const valuesOf = (name: Name) => runs[name].map((result) => result.metrics.find((metric) => metric.id === spec.id)?.value ?? null);
    const row: Row = { id: spec.id, label: spec.label, unit: spec.unit, runs: { portcullis: valuesOf('portcullis'), reference: valuesOf('reference') } };
    const portcullis = aggregate(spec, row.runs.portcullis);
    const reference = aggregate(spec, row.runs.reference);
    if (portcullis !== undefined) row.portcullis = portcullis;
    if (reference !== undefined) row.reference = reference;
    if (portcullis !== undefined && reference !== undefined && spec.unit !== 'count') {
      const ratio = spec.higherIsBetter ? portcullis / reference : reference / portcullis;
      if (Number.isFinite(ratio)) row.ratio = ratio;
    }
    const goal = GOALS[spec.id];
    if (goal) {
      row.goal = goal;
      const checks = [
        ...(goal.ratio === undefined ? [] : [row.ratio === undefined ? undefined : row.ratio >= goal.ratio]),
        ...(goal.atMost === undefined ? [] : [portcullis === undefined ? undefined : portcullis <= goal.atMost]),
      ];
      if (checks.every((check) => check !== undefined)) row.met = checks.every(Boolean);
    }
    return row;
  });
}

const goalText = (goal: Goal | undefined, unit: string): string =>
  [
    ...(goal?.ratio === undefined ? [] : [`≥${goal.ratio}×`]),
    ...(goal?.atMost === undefined ? [] : [goal.atMost === 0 ? '0' : `≤${goal.atMost} ${unit}`]),
  ].join(', ');

function comparisonTable(rows: Row[], runs: Runs, repeat: number): string {
  const body = rows.map((row) => {
    const number = (value: number) => (row.unit === 'count' ? String(value) : formatNumber(value));
    const cell = (value: number | undefined, name: Name) => (value === undefined ? (runs[name].length > 0 ? 'error' : '-') : number(value));
    const each = (values: (number | null)[]) => values.map((value) => (value === null ? 'err' : number(value))).join(' ');
    return [
      row.label,
      row.unit,
      cell(row.portcullis, 'portcullis'),
      cell(row.reference, 'reference'),
      row.ratio === undefined ? '-' : `${formatNumber(row.ratio)}×`,
      goalText(row.goal, row.unit),
      row.met === undefined ? '' : row.met ? 'yes' : 'NO',
      ...(repeat > 1 ? [each(row.runs.portcullis), each(row.runs.reference)] : []),
    ];
  });
  const headers = ['metric', 'unit', 'portcullis', 'reference', 'ratio', 'goal', 'met', ...(repeat > 1 ? ['portcullis runs', 'reference runs'] : [])];
  return table(headers, body);
}

/** Per run: resident memory after each scenario / its peak during it, the whole run's peak and the last reading. */
function memoryTable(runs: Runs, options: BenchOptions): string {
  const mib = (value: number | undefined) => (value === undefined ? '-' : String(Math.round(value)));
  const body = NAMES.flatMap((name) =>
    runs[name].map((result, index) => {
      const memory = result.details.memory ?? {};
      return [
        `${name} ${index + 1}`,
        mib(memory.start_mib),
        ...options.scenarios.map((scenario) => `${mib(memory[`after_${scenario}_mib`])}/${mib(memory[`peak_${scenario}_mib`])}`),
        mib(memory.peak_mib),
        mib(memory.end_mib),
      ];
    }),
  );
  return table(['resident MiB', 'start', ...options.scenarios, 'peak', 'end'], body);
}

async function main(): Promise<number> {
  const { bench, extra } = parseCli(
    USAGE,
    {
      'portcullis-main': { default: join(projectRoot(), 'dist/src/cli/main.js'), help: 'Portcullis entry point (default dist/src/cli/main.js)' },
      'reference-bin': { default: 'docker-registry', help: 'reference registry binary (default docker-registry)' },
      'tmp-dir': { default: tmpdir(), help: `parent of both registries' data directories (default ${tmpdir()})` },
      first: { default: 'portcullis', help: 'which registry runs first in the first repetition: portcullis or reference (default portcullis)' },
      repeat: { default: '3', help: 'repetitions; each figure is the median of them (default 3)' },
      'reuse-server': { flag: true, help: 'one server per registry for all repetitions (its memory growth shows), instead of a fresh one per run' },
    },
    process.argv.slice(2),
    COMPARE_DEFAULTS,
  );
  const setup: Setup = {
    options: bench,
    portcullisMain: extra['portcullis-main'] as string,
    referenceBin: extra['reference-bin'] as string,
    tmpDir: extra['tmp-dir'] as string,
  };
  if (!existsSync(setup.portcullisMain)) usageError(`${setup.portcullisMain} does not exist: build first`);
  const first: Name[] = extra.first === 'reference' ? [...NAMES].reverse() : extra.first === 'portcullis' ? [...NAMES] : usageError('--first must be portcullis or reference');
  const repeat = Number(extra.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) usageError('--repeat must be a whole number above 0');
  const reuse = extra['reuse-server'] === 'true';
  installCleanup();
  const began = Date.now();
  const { runs, orders } = reuse ? await reusedServers(setup, repeat, first) : await freshServers(setup, repeat, first);
  const minutes = (Date.now() - began) / 60_000;
  const rows = compareRows(bench, runs);
  const goals = rows.filter((row) => row.goal !== undefined);
  const order = reuse ? `${first.join(' then ')}, each one server for all ${repeat} repetitions` : orders.map((names) => names.map((name) => name[0]).join('→')).join(', ');
  const text = [
    '',
    `Portcullis vs reference registry: ${repeat === 1 ? 'one run' : `medians of ${repeat} repetitions`} (order ${order}), seed ${bench.seed}, ${formatNumber(minutes)} min`,
    comparisonTable(rows, runs, repeat),
    'ratio > 1 means Portcullis is better: portcullis ÷ reference for throughputs, reference ÷ portcullis for latencies and memory.',
    `goals met: ${goals.filter((row) => row.met).length} of ${goals.length}`,
    '',
    memoryTable(runs, bench),
    'resident memory of the server process (VmRSS / VmHWM in /proc/<pid>/status): after each scenario/peak during it.',
    ...NAMES.flatMap((name) => runs[name].flatMap((result, index) => errorLines(result, `${name} ${index + 1}`))),
  ].join('\n');
  if (bench.json) {
    console.error(text);
    console.log(JSON.stringify({ comparison: rows, repeat, reuseServer: reuse, orders, minutes, runs }, null, 2));
  } else {
    console.log(text);
  }
  // A figure that failed, on either side, fails the run; unexpected responses only on Portcullis's
  // (the reference's own 500s under the mixed load are its known behaviour, see README.md).
  const failedOn = (name: Name, flagged: (metric: Metric) => boolean) => runs[name].some((result) => result.metrics.some(flagged));
  const failedFigure = (metric: Metric) => metric.error !== undefined && metric.value === undefined;
  return failedOn('reference', failedFigure) || failedOn('portcullis', (metric) => metric.error !== undefined) ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error('compare:', error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
