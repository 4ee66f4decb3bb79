// A collection's figures as people read them (`portcullis gc`) and as the log records them.
import type { GcReport } from './collector.js';

function bytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${count} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The report as a few lines of text: what went (or would go), what is left, how late it is. */
export function formatGcReport(report: GcReport): string {
  const would = report.dryRun ? 'would delete' : 'deleted';
  const { manifests, blobLinks, blobs, storage, orphans, reclaimed, queue } = report;
  const lines = [
    report.dryRun ? 'garbage collection (dry run: nothing was changed)' : 'garbage collection',
    ...(report.queuedUntagged > 0 ? [`  untagged manifests queued for review first: ${report.queuedUntagged} (their grace starts now)`] : []),
    `  manifests reviewed ${manifests.reviewed}: ${would} ${manifests.deleted}, kept ${manifests.kept}, held by clients ${manifests.deferred}`,
    `  blob links reviewed ${blobLinks.reviewed}: ${would} ${blobLinks.deleted}, kept ${blobLinks.kept}, held by clients ${blobLinks.deferred}`,
    `  blobs no repository links: ${blobs.deleted} (${bytes(blobs.bytes)})`,
    `  stored objects ${would}: ${storage.objects} (${bytes(storage.bytes)})${storage.failed > 0 ? `, ${storage.failed} failed (tried again later)` : ''}`,
    orphans.swept
      ? `  unnamed stored objects ${would}: ${orphans.objects} (${bytes(orphans.bytes)}) of ${orphans.listed} listed`
      : '  unnamed stored objects: not swept (another collector swept recently)',
    `  reclaimed: ${reclaimed.objects} objects, ${bytes(reclaimed.bytes)}${report.dryRun ? ' (would be)' : ''}`,
    `  queue: ${queue.blobReviews} blob link reviews (${queue.dueBlobReviews} due), ${queue.manifestReviews} manifest reviews (${queue.dueManifestReviews} due), ${queue.storageDeletes} stored objects to delete`,
    `  review lag: ${queue.reviewLagSeconds.toFixed(1)} s`,
    `  took ${(report.durationMs / 1000).toFixed(2)} s`,
  ];
  return lines.join('\n');
}

/** The report as one log line's fields. */
export function gcLogFields(report: GcReport): Record<string, unknown> {
  return {
    dryRun: report.dryRun,
    durationMs: report.durationMs,
    manifestsDeleted: report.manifests.deleted,
    manifestsReviewed: report.manifests.reviewed,
    blobLinksDeleted: report.blobLinks.deleted,
    blobLinksReviewed: report.blobLinks.reviewed,
    deferred: report.manifests.deferred + report.blobLinks.deferred,
    reclaimedObjects: report.reclaimed.objects,
    reclaimedBytes: report.reclaimed.bytes,
    orphanObjects: report.orphans.objects,
    storageDeleteFailures: report.storage.failed,
    queueBlobReviews: report.queue.blobReviews,
    queueManifestReviews: report.queue.manifestReviews,
    queueStorageDeletes: report.queue.storageDeletes,
    reviewLagSeconds: report.queue.reviewLagSeconds,
  };
}
