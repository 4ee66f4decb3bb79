// The garbage collector as the server and the command line use it: one collection now
// (`portcullis gc`), or collections on a schedule inside `serve`, stopped at shutdown.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { KnexGcStore } from '../metadata/knex-gc-store.js';
import type { BlobStore } from '../storage/blob-store.js';
import { Collector, type CollectorOptions, type GcReport } from './collector.js';
import { gcJournal } from './journal.js';
import { GcMetrics } from './metrics.js';
import { gcLogFields } from './report.js';
import { SERVE_PACE, type GcSettings } from './settings.js';

export { Collector, CollectorCrash, type GcHooks, type GcPoint, type GcReport, type GcStep } from './collector.js';
export { formatGcReport } from './report.js';
export { gcSettingsOf, SERVE_PACE, untaggedPolicy, type GcConfig, type GcSettings } from './settings.js';
export { gcJournal, GC_ACTOR } from './journal.js';

export interface GcWiring {
  /** the metadata database (the server's pool: the collector's transactions are short) */
  db: Knex;
  store: BlobStore;
  settings: GcSettings;
  log: Logger;
  /** anything else a Collector takes (tests: hooks, clock, batch size) */
  tuning?: Omit<Partial<CollectorOptions>, 'gc' | 'store' | 'settings' | 'log'>;
}

/** A collector on this database and store, its deletions audited as `system`/`gc`. */
export function createCollector({ db, store, settings, log, tuning }: GcWiring): Collector {
  return new Collector({ gc: new KnexGcStore(db), store, settings, log, journal: gcJournal, ...tuning });
}

export interface RunningCollector {
  /** Runs a collection now (or joins the one running) and resolves with its report. */
  runNow(): Promise<GcReport>;
  /** Stops the schedule; a collection in progress stops after its current batch. */
  stop(): Promise<void>;
}

/**
 * Collects every `settings.intervalMs` (the first time after a random part of one interval, so
 * replicas started together spread out); intervalMs 0: never on its own (runNow still works).
 * A failed collection is logged and counted; the next one finishes its work.
 */
export function startCollector(wiring: GcWiring & { metrics?: Registry | undefined }): RunningCollector {
  const { settings, log } = wiring;
  const collector = createCollector({ ...wiring, tuning: { pace: SERVE_PACE, ...wiring.tuning } });
  const metrics = wiring.metrics ? new GcMetrics(wiring.metrics, () => collector.figures()) : undefined;
  const abort = new AbortController();
  let running: Promise<GcReport> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const run = (): Promise<GcReport> => {
    running ??= collector
      // Replicas take turns listing storage: one sweep per half interval among them all.
      .collect({ signal: abort.signal, orphanSweepEveryMs: Math.floor(settings.intervalMs / 2) })
      .then((report) => {
        metrics?.collected(report);
        log.info(gcLogFields(report), 'garbage collection');
        return report;
      })
      .catch((error: unknown) => {
        metrics?.failed();
        log.warn({ err: error }, 'garbage collection failed; the next one finishes its work');
        throw error;
      })
      .finally(() => (running = undefined));
    return running;
  };
  const schedule = (delay: number) => {
    if (abort.signal.aborted || settings.intervalMs <= 0) return;
    timer = setTimeout(() => {
      run()
        .catch(() => undefined)
        .finally(() => schedule(settings.intervalMs));
    }, delay);
    timer.unref();
  };
  schedule(Math.floor(Math.random() * settings.intervalMs));

  return {
    runNow: run,
    async stop() {
      abort.abort();
      if (timer) clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
