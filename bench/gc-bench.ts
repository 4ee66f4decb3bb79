// Garbage collection: how fast a collection works through a backlog, and what a collection running
// at the same time costs pushes and manifest GETs (goal: at least 90 % of their throughput without).
//
//   node dist/bench/gc-bench.js [--images N] [--backlog N] [--paces 0,4] [--batch N] [--small N] [--get-seconds N] [--json]
//
// Portcullis (embedded default: SQLite and a blob folder) is started as `compare` starts it. Then:
//   1. throughput: N untagged images (config + 2 layers each) are stored beside the idle server,
//      and one collection (grace 0, untagged manifests deleted) removes them: manifests, links,
//      blob rows and stored objects per second;
//   2. baseline: small image pushes and manifest GETs (the registry-bench scenarios);
//   3. with GC, once per pace: a backlog of due link reviews (blobs uploaded long ago that nothing
//      references), and a collector in a process of its own (as `portcullis gc` beside `serve`,
//      with a grace of an hour, so the pushes measured are never its business) working through it
//      while the same pushes and GETs are measured again; then the baseline again (the database
//      grows meanwhile): the mean of all baselines is the reference.
// Run it by hand on an otherwise quiet machine (see bench/README.md).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { Knex } from 'knex';
import { createCollector, SERVE_PACE, type GcReport } from '../src/gc/index.js';
import { openDatabase } from '../src/metadata/database.js';
import { KnexMetadataStore } from '../src/metadata/knex-store.js';
import { blobKey } from '../src/registry/blobs.js';
import { parseDigest } from '../src/registry/reference.js';
import { FilesystemBlobStore } from '../src/storage/filesystem.js';
import { parseCli, usageError, type BenchOptions } from './lib/options.js';
import { formatNumber, table } from './lib/report.js';
import { runBenchmark, type BenchResult } from './lib/scenarios.js';
import { PORTCULLIS_BENCH_ADMIN, portcullisSpec, projectRoot, startRegistry, syncDisks, type RunningRegistry } from './lib/servers.js';
import { sha256 } from './lib/registry-ops.js';

const USAGE = 'Usage: node dist/bench/gc-bench.js [options]   (build first: npx tsc -p tsconfig.json)';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const HOUR_S = 3600;
const quiet = pino({ level: 'silent' });
const log = (line: string) => console.error(line);


/** The server's data folder, opened beside it as `portcullis gc` opens it. */
interface Beside {
  dataDir: string;
  db: Knex;
  store: FilesystemBlobStore;
  metadata: KnexMetadataStore;
}

function openBeside(dataDir: string): Beside {
  const db = openDatabase({ driver: 'sqlite', path: join(dataDir, 'portcullis.db') });
  const store = new FilesystemBlobStore(join(dataDir, 'blobs'));
  return { dataDir, db, store, metadata: new KnexMetadataStore(db) };
}

/**
 * A blob as an upload leaves it: its bytes under their generation's key (written directly: the
 * benchmark measures the collector, not uploads), then recorded and linked by the registry's own
 * commit (which queues the link for review).
 */
async function storeBlob(beside: Beside, repository: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha256(bytes);
  const key = blobKey(parseDigest(digest), randomUUID());
  const path = join(beside.dataDir, 'blobs', key);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes, { mode: 0o444 });
  await beside.metadata.commitBlob(repository, { digest, size: bytes.length, storageKey: key });
  return { digest, size: bytes.length };
}

/** `count` untagged images (config + 2 layers) spread over 16 repositories. */
async function untaggedImages(beside: Beside, run: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const repository = `gcbench-${run}/images-${i % 16}`;
    const config = await storeBlob(beside, repository, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', i, run })));
    const layers = [await storeBlob(beside, repository, randomBytes(1024)), await storeBlob(beside, repository, randomBytes(2048))];
    const payload = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: layers.map((layer) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer })),
      }),
    );
    const dependencies = [config, ...layers].map((blob) => ({ ...blob, kind: 'blob' as const }));
    await beside.metadata.putManifest(repository, { digest: sha256(payload), mediaType: OCI_MANIFEST, size: payload.length, payload }, dependencies);
  }
}

/** `count` blobs nothing references, their reviews due for a collector with a grace of an hour. */
async function agedBacklog(beside: Beside, run: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await storeBlob(beside, `gcbench-${run}/backlog-${i % 16}`, randomBytes(1024));
  await beside.db('gc_blob_reviews').update({ touched_at: 0 });
}

interface Throughput {
  seconds: number;
  manifestsPerSecond: number;
  linksPerSecond: number;
  objectsPerSecond: number;
  reviewedPerSecond: number;
  report: GcReport;
}

async function measureThroughput(beside: Beside, images: number): Promise<Throughput> {
  const run = randomBytes(3).toString('hex');
  log(`throughput: storing ${images} untagged images (${images * 3} blobs) beside the server …`);
  await untaggedImages(beside, run, images);
  const collector = createCollector({
    db: beside.db,
    store: beside.store,
    settings: { graceMs: 0, intervalMs: 0, untagged: { default: 'delete', delete: [], keep: [] } },
    log: quiet,
  });
  log('throughput: one collection …');
  const started = performance.now();
  const report = await collector.collect();
  const seconds = (performance.now() - started) / 1000;
  return {
    seconds,
    manifestsPerSecond: report.manifests.deleted / seconds,
    linksPerSecond: report.blobLinks.deleted / seconds,
    objectsPerSecond: report.storage.objects / seconds,
    reviewedPerSecond: (report.manifests.reviewed + report.blobLinks.reviewed) / seconds,
    report,
  };
}

/** Pushes and GETs, as registry-bench measures them. */
async function measureLoad(url: string, options: BenchOptions, label: string): Promise<BenchResult> {
  return runBenchmark(url, { ...options, scenarios: ['small-push', 'manifest-get'], credentials: { ...PORTCULLIS_BENCH_ADMIN } }, (line) => log(`[${label}] ${line}`));
}

const metric = (result: BenchResult, id: string): number | undefined => result.metrics.find((m) => m.id === id)?.value;

/** A collector in a process of its own, collecting back to back until stopped; its reports as they come. */
interface CollectorChild {
  reports: GcReport[];
  stop(): Promise<void>;
}

async function startCollectorChild(dataDir: string, graceSeconds: number, pace: number, batch: number): Promise<CollectorChild> {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), '--collector-child', dataDir, String(graceSeconds), String(pace), String(batch)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const reports: GcReport[] = [];
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (!child.stdout) throw new Error('the collector process has no stdout');
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'ready') ready();
    else reports.push(JSON.parse(line) as GcReport);
  });
  await Promise.race([started, exited.then(() => Promise.reject(new Error('the collector process exited before it was ready')))]);
  return {
    reports,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The child: collections back to back; SIGTERM ends it after the batch at hand. */
async function collectorChild(dataDir: string, graceSeconds: number, pace: number, batchSize: number): Promise<void> {
  const beside = openBeside(dataDir);
  const collector = createCollector({
    db: beside.db,
    store: beside.store,
    settings: { graceMs: graceSeconds * 1000, intervalMs: 0, untagged: { default: 'keep', delete: [], keep: [] } },
    log: quiet,
    // The bytes go at once (no backup window): the collector's whole work is measured.
    tuning: { pace, batchSize, storageDelayMs: 0 },
  });
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  console.log('ready');
  while (!stop.signal.aborted) {
    const report = await collector.collect({ signal: stop.signal, orphanSweepEveryMs: HOUR_S * 1000 });
    console.log(JSON.stringify(report));
    if (report.blobLinks.reviewed === 0 && report.manifests.reviewed === 0) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await beside.db.destroy();
}

interface ConcurrentRun {
  pace: number;
  during: BenchResult;
  /** links the collector deleted while the load was measured */
  collected: number;
  /** due reviews left when the load stopped: more than 0 means it was busy the whole time */
  left: number;
}

async function main(): Promise<number> {
  const { bench, extra } = parseCli(USAGE, {
    'portcullis-main': { default: join(projectRoot(), 'dist/src/cli/main.js'), help: 'Portcullis entry point (default dist/src/cli/main.js)' },
    images: { default: '2000', help: 'untagged images for the throughput run (3 blobs each; default 2000)' },
    backlog: { default: '20000', help: 'due link reviews the concurrent collector works through (default 20000)' },
    paces: { default: `0,${SERVE_PACE}`, help: `the concurrent collector pauses this multiple of each batch's time; one measurement per value (default 0,${SERVE_PACE}: none, and what serve uses)` },
    batch: { default: '10', help: 'rows per transaction of the concurrent collector (default 10, the default)' },
    'tmp-dir': { default: tmpdir(), help: `parent of the data directory (default ${tmpdir()})` },
  });
  const images = Number(extra.images);
  const backlog = Number(extra.backlog);
  const batch = Number(extra.batch);
  const paces = (extra.paces as string).split(',').map(Number);
  if (!Number.isInteger(images) || images < 1) usageError('--images must be a whole number above 0');
  if (!Number.isInteger(backlog) || backlog < 1) usageError('--backlog must be a whole number above 0');
  if (!Number.isInteger(batch) || batch < 1) usageError('--batch must be a whole number above 0');
  if (paces.some((pace) => !Number.isFinite(pace) || pace < 0)) usageError('--paces must be numbers, 0 or more');
  // Shorter than registry-bench's defaults: each is measured several times here.
  const options: BenchOptions = { ...bench, small: bench.small === 500 ? 300 : bench.small, getSeconds: bench.getSeconds === 10 ? 5 : bench.getSeconds };

  let registry: RunningRegistry | undefined;
  process.once('exit', () => registry?.stopSync());
  registry = await startRegistry(portcullisSpec(extra['portcullis-main'] as string), extra['tmp-dir'] as string);
  const dataDir = join(registry.dataDir, 'data');
  const beside = openBeside(dataDir);
  try {
    const throughput = await measureThroughput(beside, images);
    await syncDisks();
    const baselines = [await measureLoad(registry.url, options, 'without gc')];
    const runs: ConcurrentRun[] = [];
    for (const pace of paces) {
      log(`with gc (pace ${pace}): a backlog of ${backlog} due link reviews …`);
      await agedBacklog(beside, randomBytes(3).toString('hex'), backlog);
      await syncDisks();
      const collector = await startCollectorChild(dataDir, HOUR_S, pace, batch);
      let during: BenchResult;
      try {
        during = await measureLoad(registry.url, options, `with gc, pace ${pace}`);
      } finally {
        await collector.stop();
      }
      const left = Number(((await beside.db('gc_blob_reviews').where('touched_at', 0).count({ n: '*' }).first()) as { n: number | string }).n);
      runs.push({ pace, during, collected: collector.reports.reduce((sum, report) => sum + report.blobLinks.deleted, 0), left });
      // What is left of this backlog must not make the next measurement's collector look busier.
      await beside.db('gc_blob_reviews').where('touched_at', 0).update({ touched_at: Date.now() });
      baselines.push(await measureLoad(registry.url, options, 'without gc'));
    }

    const reference = (id: string) => baselines.reduce((sum, result) => sum + (metric(result, id) ?? NaN), 0) / baselines.length;
    const ids = ['small_push', 'manifest_get'] as const;
    const rows = runs.flatMap((run) =>
      ids.map((id) => ({ pace: run.pace, id, reference: reference(id), withGc: metric(run.during, id) ?? NaN, ratio: (metric(run.during, id) ?? NaN) / reference(id) })),
    );
    const summary = {
      throughput: {
        images,
        seconds: throughput.seconds,
        reviewedPerSecond: throughput.reviewedPerSecond,
        manifestsDeletedPerSecond: throughput.manifestsPerSecond,
        linksDeletedPerSecond: throughput.linksPerSecond,
        objectsDeletedPerSecond: throughput.objectsPerSecond,
        reclaimedBytes: throughput.report.reclaimed.bytes,
      },
      concurrent: {
        backlog,
        batch,
        runs: runs.map((run) => ({ pace: run.pace, linksDeletedDuringLoad: run.collected, backlogLeftAfterLoad: run.left, busyThroughout: run.left > 0 })),
        rows,
      },
      baselines,
      during: runs.map((run) => run.during),
    };
    const text = [
      '',
      `garbage collection, one run over ${images} untagged images (${images * 3} blobs): ${formatNumber(throughput.seconds)} s`,
      table(
        ['figure', 'per second'],
        [
          ['reviews (manifests + links)', formatNumber(throughput.reviewedPerSecond)],
          ['manifests deleted', formatNumber(throughput.manifestsPerSecond)],
          ['blob links deleted', formatNumber(throughput.linksPerSecond)],
          ['stored objects deleted', formatNumber(throughput.objectsPerSecond)],
        ],
      ),
      '',
      `a collector beside the server working through ${backlog} due reviews in batches of ${batch} (reference: the mean of ${baselines.length} runs without):`,
      ...runs.map((run) => `  pace ${run.pace}: ${run.collected} links deleted while measured, ${run.left} still due after${run.left > 0 ? '' : ' (it ran out of work before the load ended)'}`),
      table(
        ['pace', 'metric', 'without gc', 'with gc', 'ratio', 'goal ≥ 90 %'],
        rows.map((row) => [String(row.pace), row.id === 'small_push' ? 'small image pushes, ops/s' : 'manifest GET, req/s', formatNumber(row.reference), formatNumber(row.withGc), `${formatNumber(row.ratio * 100)} %`, row.ratio >= 0.9 ? 'met' : 'NOT met']),
      ),
    ].join('\n');
    if (bench.json) {
      console.error(text);
      console.log(JSON.stringify(summary, null, 2));
    } else {
      console.log(text);
    }
    return [...baselines, ...runs.map((run) => run.during)].some((result) => result.metrics.some((m) => m.error)) ? 1 : 0;
  } finally {
    await beside.db.destroy();
    await registry.stop();
    registry = undefined;
  }
}

if (process.argv[2] === '--collector-child') {
  const [dataDir, grace, pace, batch] = process.argv.slice(3);
  collectorChild(dataDir as string, Number(grace), Number(pace), Number(batch)).then(
    () => process.exit(0),
    (error: unknown) => {
      console.error('collector:', error instanceof Error ? error.message : error);
      process.exit(1);
    },
  );
} else {
  main().then(
    (code) => (process.exitCode = code),
    (error: unknown) => {
      console.error('gc-bench:', error instanceof Error ? error.message : error);
      process.exitCode = 1;
    },
  );
}
