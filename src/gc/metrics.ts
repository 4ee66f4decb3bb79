// The garbage collector's figures for Prometheus, registered on the server's own registry:
// collections run, what they deleted and reclaimed (counters fed after each collection), and the
// queues' depth and review lag, asked of the database when scraped (at most every few seconds).
import { Counter, Gauge, type Registry } from 'prom-client';
import type { GcReport } from './collector.js';

/** The queues as a scrape reads them: depths and how late the oldest due review is. */
export type QueueReader = () => Promise<GcReport['queue']>;

/** A scrape re-reads the queues at most this often. */
const QUEUE_CACHE_MS = 5_000;

export class GcMetrics {
  private readonly runs: Counter<'outcome'>;
  private readonly deleted: Counter<'what'>;
  private readonly reclaimedObjects: Counter<'source'>;
  private readonly reclaimedBytes: Counter<'source'>;
  private readonly lastRun: Gauge;
  private cached?: { at: number; queue: Promise<GcReport['queue']> };

  constructor(registry: Registry, readQueue: QueueReader) {
    this.runs = new Counter({
      name: 'portcullis_gc_runs_total',
      help: 'Garbage collections by outcome (ok; failed: an error ended it, its work is finished by the next)',
      labelNames: ['outcome'],
      registers: [registry],
    });
    this.deleted = new Counter({
      name: 'portcullis_gc_deleted_total',
      help: 'What the garbage collector deleted: manifest (untagged or orphaned referrers), blob_link (a link no manifest of its repository references), blob (a blob no repository links any more)',
      labelNames: ['what'],
      registers: [registry],
    });
    this.reclaimedObjects = new Counter({
      name: 'portcullis_gc_reclaimed_objects_total',
      help: 'Stored objects deleted by the garbage collector: outbox (blobs whose row it deleted) or orphan (bytes no row named)',
      labelNames: ['source'],
      registers: [registry],
    });
    this.reclaimedBytes = new Counter({
      name: 'portcullis_gc_reclaimed_bytes_total',
      help: 'Bytes of the stored objects deleted by the garbage collector, by source (outbox, orphan)',
      labelNames: ['source'],
      registers: [registry],
    });
    this.lastRun = new Gauge({
      name: 'portcullis_gc_last_run_timestamp_seconds',
      help: 'When the last garbage collection of this server ended (Unix time)',
      registers: [registry],
    });
    const queue = () => this.queue(readQueue);
    new Gauge({
      name: 'portcullis_gc_queue_depth',
      help: 'Rows waiting in the garbage collector queues: blob_reviews, manifest_reviews (due or still in their grace), storage_deletes (stored objects whose row is gone)',
      labelNames: ['queue'],
      registers: [registry],
      async collect() {
        const figures = await queue().catch(() => undefined);
        if (!figures) return;
        this.set({ queue: 'blob_reviews' }, figures.blobReviews);
        this.set({ queue: 'manifest_reviews' }, figures.manifestReviews);
        this.set({ queue: 'storage_deletes' }, figures.storageDeletes);
      },
    });
    new Gauge({
      name: 'portcullis_gc_review_lag_seconds',
      help: 'How long the oldest due review has waited past its grace (0: the collector keeps up)',
      registers: [registry],
      async collect() {
        const figures = await queue().catch(() => undefined);
        if (figures) this.set(figures.reviewLagSeconds);
      },
    });
  }

  private queue(read: QueueReader): Promise<GcReport['queue']> {
    if (!this.cached || Date.now() - this.cached.at > QUEUE_CACHE_MS) this.cached = { at: Date.now(), queue: read() };
    return this.cached.queue;
  }

  /** Counts a finished collection. */
  readonly collected = (report: GcReport): void => {
    if (report.dryRun) return;
    this.runs.inc({ outcome: 'ok' });
    this.deleted.inc({ what: 'manifest' }, report.manifests.deleted);
    this.deleted.inc({ what: 'blob_link' }, report.blobLinks.deleted);
    this.deleted.inc({ what: 'blob' }, report.blobs.deleted);
    this.reclaimedObjects.inc({ source: 'outbox' }, report.storage.objects);
    this.reclaimedObjects.inc({ source: 'orphan' }, report.orphans.objects);
    this.reclaimedBytes.inc({ source: 'outbox' }, report.storage.bytes);
    this.reclaimedBytes.inc({ source: 'orphan' }, report.orphans.bytes);
    this.lastRun.set(Date.now() / 1000);
  };

  readonly failed = (): void => {
    this.runs.inc({ outcome: 'failed' });
  };
}
