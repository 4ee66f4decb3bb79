// Operating the collector (the embedded default: nothing here depends on the backend): gc.*
// settings and their defaults, the untagged policy's most-specific-pattern rule, the figures in
// Prometheus form, `portcullis gc` (the command's code path on a real data folder: dry run, JSON,
// the text it prints), and the schedule inside `serve` (runs by itself, joins a run asked for,
// stops cleanly).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Command } from 'commander';
import { Registry } from 'prom-client';
import { collectOnce, registerGcCommand } from '../../src/cli/gc.js';
import { loadSettings } from '../../src/cli/settings.js';
import { ConfigError } from '../../src/config/config.js';
import { formatGcReport, gcSettingsOf, startCollector, untaggedPolicy } from '../../src/gc/index.js';
import { GcMetrics } from '../../src/gc/metrics.js';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { lockSqliteDatabase } from '../../src/metadata/sqlite-lock.js';
import { KnexMetadataStore } from '../../src/metadata/knex-store.js';
import { createRegistry } from '../../src/registry/index.js';
import { FilesystemBlobStore } from '../../src/storage/filesystem.js';
import { pushBlob, pushImage, quiet } from './support.js';

describe('gc settings', () => {
  it('defaults: a day of grace, hourly collections, untagged manifests kept', () => {
    assert.deepEqual(gcSettingsOf({ dataDir: '/d' }), { graceMs: 86_400_000, intervalMs: 3_600_000, untagged: { default: 'keep', delete: [], keep: [] } });
    assert.equal(gcSettingsOf({ dataDir: '/d', gc: { graceSeconds: 0, intervalSeconds: 0 } }).graceMs, 0);
  });

  it('refuses a repository pattern that can never match, naming the key', () => {
    assert.throws(() => gcSettingsOf({ dataDir: '/d', gc: { untagged: { delete: ['ok/**', 'team-*'] } } }), (error: unknown) => error instanceof ConfigError && /gc\.untagged\.delete\[1\]/.test(error.message));
    assert.throws(() => gcSettingsOf({ dataDir: '/d', gc: { graceSeconds: -1 } }), /gc\.graceSeconds/);
  });

  it('the most specific pattern decides; keep wins a tie; the default applies elsewhere', () => {
    const decide = untaggedPolicy({ default: 'keep', delete: ['ci/**', 'team/scratch/*'], keep: ['ci/releases/**', 'team/*/*'] });
    assert.equal(decide('ci/builds/app'), 'delete');
    assert.equal(decide('ci/releases/app'), 'keep', 'the longer literal prefix');
    assert.equal(decide('team/scratch/app'), 'delete', 'team/scratch/* is more specific than team/*/*');
    assert.equal(decide('team/other/app'), 'keep');
    assert.equal(decide('elsewhere'), 'keep', 'the default');
    assert.equal(untaggedPolicy({ default: 'delete', delete: ['x/**'], keep: ['x/**'] })('x/y'), 'keep', 'a tie keeps');
  });
});

describe('gc on a data folder', () => {
  let dataDir: string;
  const env = () => ({ PORTCULLIS_DATA_DIR: dataDir, PORTCULLIS_LOG_LEVEL: 'silent' });

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'portcullis-gc-cli-'));
    const db = openDatabase({ driver: 'sqlite', path: join(dataDir, 'portcullis.db') });
    await migrateToLatest(db);
    const store = new FilesystemBlobStore(join(dataDir, 'blobs'));
    await store.init();
    const registry = createRegistry({ metadata: new KnexMetadataStore(db), store, log: quiet, pageMaxEntries: 100, uploads: { maxOpenPerOwner: 100 }, referrersPageMaxBytes: 1 << 20 });
    const image = await pushImage(registry, 'team/app', 'v1');
    await registry.manifests.delete('team/app', image.descriptor.digest);
    await pushBlob(registry, 'team/app', randomBytes(10));
    await db.destroy();
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  it('`portcullis gc` collects with the server settings: within the default grace nothing goes, and it says what waits', async () => {
    const report = await collectOnce(loadSettings(undefined, env()), { dryRun: true });
    assert.equal(report.dryRun, true);
    assert.equal(report.blobLinks.reviewed, 0, 'a day of grace by default');
    assert.equal(report.queue.blobReviews, 3, "the deleted image's config and layer, and a lone blob");
    const text = formatGcReport(report);
    assert.match(text, /dry run: nothing was changed/);
    assert.match(text, /queue: 3 blob link reviews \(0 due\)/);
    assert.match(text, /review lag: 0\.0 s/);
    const real = await collectOnce(loadSettings(undefined, env()), { queueUntagged: true });
    assert.equal(real.orphans.swept, true, 'a collection asked for by hand sweeps storage');
    assert.equal(real.reclaimed.objects, 0);
    assert.equal(real.queuedUntagged, 0, 'the only image was deleted: nothing untagged to queue');
  });

  it('refuses --pace 0 beside a running SQLite server, whose writes it would starve', async () => {
    const unlock = lockSqliteDatabase(join(dataDir, 'portcullis.db')); // what `serve` holds
    try {
      await assert.rejects(collectOnce(loadSettings(undefined, env()), { pace: 0 }), (error: unknown) => error instanceof ConfigError && /a server is using .*--pace 0/.test(error.message));
      assert.equal((await collectOnce(loadSettings(undefined, env()), { pace: 0, dryRun: true })).dryRun, true, 'a dry run writes nothing');
    } finally {
      unlock();
    }
    assert.equal((await collectOnce(loadSettings(undefined, env()), { pace: 0 })).dryRun, false, 'with the server stopped');
  });

  it('registers `gc` with --dry-run, --queue-untagged, --pace and --json', () => {
    const program = new Command();
    registerGcCommand(program, () => loadSettings(undefined, env()));
    const command = program.commands.find((c) => c.name() === 'gc');
    assert.ok(command);
    assert.deepEqual(command.options.map((option) => option.long).sort(), ['--dry-run', '--json', '--pace', '--queue-untagged']);
  });

  it('collects on a schedule inside serve, joins a run asked for meanwhile, stops cleanly; its figures reach Prometheus', async () => {
    const db = openDatabase({ driver: 'sqlite', path: join(dataDir, 'portcullis.db') });
    const store = new FilesystemBlobStore(join(dataDir, 'blobs'));
    const metrics = new Registry();
    const settings = gcSettingsOf({ dataDir, gc: { graceSeconds: 0, intervalSeconds: 1 } });
    const running = startCollector({ db, store, settings: { ...settings, intervalMs: 50 }, log: quiet, metrics });
    try {
      const [first, second] = await Promise.all([running.runNow(), running.runNow()]);
      assert.equal(first, second, 'one run, joined');
      assert.equal(first.blobLinks.deleted, 3);
      assert.equal(first.reclaimed.objects, 3);
      await sleep(200); // the schedule runs by itself meanwhile
      const text = await metrics.metrics();
      assert.match(text, /portcullis_gc_runs_total\{outcome="ok"\} ([2-9]|\d\d+)/, 'scheduled runs counted');
      assert.match(text, /portcullis_gc_deleted_total\{what="blob_link"\} 3/);
      assert.match(text, /portcullis_gc_reclaimed_objects_total\{source="outbox"\} 3/);
      assert.match(text, /portcullis_gc_queue_depth\{queue="blob_reviews"\} 0/);
      assert.match(text, /portcullis_gc_review_lag_seconds 0/);
    } finally {
      await running.stop();
      await db.destroy();
    }
  });

  it('counts a failed collection apart', async () => {
    const metrics = new Registry();
    const gauges = new GcMetrics(metrics, async () => {
      throw new Error('database down');
    });
    gauges.failed();
    const text = await metrics.metrics();
    assert.match(text, /portcullis_gc_runs_total\{outcome="failed"\} 1/);
    assert.doesNotMatch(text, /portcullis_gc_queue_depth\{/, 'no made-up queue figures when the database cannot answer');
  });
});
