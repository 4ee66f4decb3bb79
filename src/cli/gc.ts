// portcullis gc [--dry-run] [--queue-untagged] [--pace N] [--json] — one garbage collection against the
// registry's database and blob store, then exit. It may run while servers do (PostgreSQL: any number
// of collectors at once; SQLite: beside the one server, pausing between batches so its writes go on).
import type { Command } from 'commander';
import { pino } from 'pino';
import { ConfigError, sqlitePath, storageSettings } from '../config/config.js';
import type { GcReport } from '../gc/collector.js';
import { gcSettingsOf, SERVE_PACE, type GcConfig } from '../gc/settings.js';
import { lockSqliteDatabase } from '../metadata/sqlite-lock.js';
import { openExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

export interface GcCommandOptions {
  dryRun?: boolean;
  queueUntagged?: boolean;
  /** pause after each batch for this multiple of its time (default SERVE_PACE; 0: none) */
  pace?: number;
}

/**
 * One collection with the settings a command runs with (the server's configuration): its
 * database, its blob store, gc.* (the grace, the untagged-manifest policy). Warnings go to stderr
 * as JSON lines; the figures are returned.
 */
export async function collectOnce(settings: CliSettings, options: GcCommandOptions = {}): Promise<GcReport> {
  const config = settings.config as CliSettings['config'] & { gc?: GcConfig };
  const gc = gcSettingsOf(config);
  if (options.pace === 0 && !options.dryRun && config.metadata.driver === 'sqlite' && serverRunningOn(sqlitePath(config))) {
    // SQLite has one writer at a time, and no queue: back-to-back collections would starve the
    // server's own writes (a push, a login) until they give up.
    throw new ConfigError(`a server is using ${sqlitePath(config)}: --pace 0 would keep its writes waiting; leave --pace at its default, or stop the server first`);
  }
  const log = pino({ level: config.log.level === 'silent' ? 'silent' : 'warn', base: { service: 'portcullis', command: 'gc' } }, pino.destination(2));
  // Loaded here: the collector (and the object store's SDK) are more than the other commands need.
  const [{ createCollector }, { openBlobStore }] = await Promise.all([import('../gc/index.js'), import('../storage/index.js')]);
  const db = await openExistingDatabase(settings);
  try {
    const blobs = await openBlobStore(storageSettings(config));
    try {
      // A command asked for by hand sweeps storage whatever the servers' turns say.
      const collector = createCollector({ db, store: blobs.store, settings: gc, log, tuning: { pace: options.pace ?? SERVE_PACE } });
      return await collector.collect({ dryRun: options.dryRun ?? false, queueUntagged: options.queueUntagged ?? false, orphanSweepEveryMs: 0 });
    } finally {
      blobs.close();
    }
  } finally {
    await db.destroy();
  }
}

/** Whether a `portcullis serve` holds the SQLite database (its lock file is taken). */
function serverRunningOn(path: string): boolean {
  try {
    lockSqliteDatabase(path)();
    return false;
  } catch (error) {
    if (error instanceof ConfigError) return true;
    throw error;
  }
}

export function registerGcCommand(program: Command, settings: LoadSettings): void {
  program
    .command('gc')
    .description(
      'collect garbage once and exit: untagged manifests where gc.untagged says so, referrers whose subject is gone, blob links no manifest references ' +
        '(each once unused for gc.graceSeconds), their bytes, and bytes no row names; prints what was reclaimed and what is queued',
    )
    .option('--dry-run', 'report what would be collected; change nothing')
    .option('--queue-untagged', 'first queue every untagged manifest for review, its grace starting now (after gc.untagged changed from keep to delete)')
    .option('--pace <n>', `after each batch, pause this multiple of the time it took, leaving the database to the servers (default ${SERVE_PACE}, as serve collects; 0: as fast as it can)`)
    .option('--json', 'print the figures as JSON')
    .action(async (options: { dryRun?: boolean; queueUntagged?: boolean; pace?: string; json?: boolean }) => {
      const pace = options.pace === undefined ? SERVE_PACE : Number(options.pace);
      if (!Number.isFinite(pace) || pace < 0) throw new ConfigError(`--pace must be a number, 0 or more (got ${options.pace})`);
      const report = await collectOnce(settings(), { dryRun: options.dryRun ?? false, queueUntagged: options.queueUntagged ?? false, pace });
      const { formatGcReport } = await import('../gc/report.js');
      console.log(options.json ? JSON.stringify(report, null, 2) : formatGcReport(report));
    });
}
