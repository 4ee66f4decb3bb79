// Runs registry-bench against Portcullis and against the reference registry (CNCF distribution
// 2.8, Debian's docker-registry), one after the other, and prints them side by side; see README.md.
//   node dist/bench/compare.js [--blob-mib 1024] [--json] …
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BenchOptions, parseCli, usageError } from './lib/options.js';
import { errorLines, formatMetric, formatNumber, table } from './lib/report.js';
import { PORTCULLIS_BENCH_ADMIN, portcullisSpec, projectRoot, referenceSpec, type RunningRegistry, startRegistry, syncDisks } from './lib/servers.js';
import { type BenchResult, failedResult, metricSpecs, runBenchmark } from './lib/scenarios.js';

const USAGE = 'Usage: node dist/bench/compare.js [options]   (build first: npx tsc -p tsconfig.json)';
const NAMES = ['portcullis', 'reference'] as const;
type Name = (typeof NAMES)[number];

/** Portcullis ÷ reference (reference ÷ Portcullis for latencies) that each metric should reach. */
const GOALS: Record<string, number> = { push_monolithic: 3, push_chunked: 3, small_push: 3, pull: 1, manifest_get: 3 };

interface Row {
  id: string;
  label: string;
  unit: string;
  portcullis?: number;
  reference?: number;
  /** > 1 means Portcullis is better (faster, or lower latency). */
  ratio?: number;
  goal?: number;
  met?: boolean;
}

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

async function benchmark(name: Name, extra: Record<string, string | undefined>, options: BenchOptions): Promise<BenchResult> {
  const spec = name === 'portcullis' ? portcullisSpec(extra['portcullis-main'] as string) : referenceSpec(extra['reference-bin'] as string);
  log(`\n== ${name}: starting`);
  let registry: RunningRegistry;
  try {
    registry = await startRegistry(spec, extra['tmp-dir'] as string);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log(message);
    return failedResult('-', options, `${name} did not start`);
  }
  live.add(registry);
  log(`== ${name}: ${registry.url}, data in ${registry.dataDir}`);
  try {
    // Portcullis always runs with token auth: every request pays for a verified bearer token.
    const runOptions = name === 'portcullis' ? { ...options, credentials: { ...PORTCULLIS_BENCH_ADMIN } } : options;
    const result = await runBenchmark(registry.url, runOptions, (line) => log(`[${name}] ${line}`));
    if (result.metrics.some((metric) => metric.error)) log(`[${name}] server output (tail):\n${registry.output().slice(-4000)}`);
    return result;
  } finally {
    await registry.stop();
    live.delete(registry);
    await syncDisks();
  }
}

function compareRows(options: BenchOptions, results: Record<Name, BenchResult>): Row[] {
  return metricSpecs(options).map((spec) => {
    const portcullis = results.portcullis.metrics.find((metric) => metric.id === spec.id)?.value;
    const reference = results.reference.metrics.find((metric) => metric.id === spec.id)?.value;
    const row: Row = { id: spec.id, label: spec.label, unit: spec.unit, portcullis, reference, goal: GOALS[spec.id] };
    if (portcullis !== undefined && reference !== undefined) {
      row.ratio = spec.higherIsBetter ? portcullis / reference : reference / portcullis;
      if (row.goal !== undefined) row.met = row.ratio >= row.goal;
    }
    return row;
  });
}

function comparisonTable(rows: Row[], results: Record<Name, BenchResult>): string {
  const cell = (id: string, name: Name) => formatMetric(results[name].metrics.find((metric) => metric.id === id));
  const body = rows.map((row) => [
    row.label,
    row.unit,
    cell(row.id, 'portcullis'),
    cell(row.id, 'reference'),
    row.ratio === undefined ? '-' : `${formatNumber(row.ratio)}×`,
    row.goal === undefined ? '' : `≥${row.goal}×`,
    row.met === undefined ? '' : row.met ? 'yes' : 'NO',
  ]);
  const goals = rows.filter((row) => row.goal !== undefined);
  return [
    table(['metric', 'unit', 'portcullis', 'reference', 'ratio', 'goal', 'met'], body),
    'ratio > 1 means Portcullis is better (for latencies: reference ÷ portcullis).',
    `goals met: ${goals.filter((row) => row.met).length} of ${goals.length}`,
    ...NAMES.flatMap((name) => errorLines(results[name], name)),
  ].join('\n');
}

async function main(): Promise<number> {
  const { bench, extra } = parseCli(USAGE, {
    'portcullis-main': { default: join(projectRoot(), 'dist/src/cli/main.js'), help: 'Portcullis entry point (default dist/src/cli/main.js)' },
    'reference-bin': { default: 'docker-registry', help: 'reference registry binary (default docker-registry)' },
    'tmp-dir': { default: tmpdir(), help: `parent of both registries' data directories (default ${tmpdir()})` },
    first: { default: 'portcullis', help: 'which registry to benchmark first: portcullis or reference (default portcullis)' },
  });
  if (!existsSync(extra['portcullis-main'] as string)) usageError(`${extra['portcullis-main']} does not exist: build first`);
  const order = extra.first === 'reference' ? [...NAMES].reverse() : extra.first === 'portcullis' ? [...NAMES] : usageError('--first must be portcullis or reference');
  installCleanup();
  const results = {} as Record<Name, BenchResult>;
  for (const name of order) results[name] = await benchmark(name, extra, bench);
  const rows = compareRows(bench, results);
  const text = `\nPortcullis vs reference registry (seed ${bench.seed}, ${order.join(' then ')})\n${comparisonTable(rows, results)}`;
  if (bench.json) {
    console.error(text);
    console.log(JSON.stringify({ comparison: rows, ...results }, null, 2));
  } else {
    console.log(text);
  }
  return NAMES.some((name) => results[name].metrics.some((metric) => metric.error)) ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error('compare:', error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
