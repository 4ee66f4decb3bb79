// The registry domain, assembled from its services. No HTTP in here.
import type { Logger } from 'pino';
import type { MetadataStore } from '../metadata/store.js';
import type { BlobStore } from '../storage/blob-store.js';
import { BlobService } from './blobs.js';
import type { ChangeLog } from './change-log.js';
import { ListingService } from './listing.js';
import { ManifestService } from './manifests.js';
import type { TagGuard } from './tag-guard.js';
import { UploadService, type UploadLimits } from './uploads.js';

export interface Registry {
  blobs: BlobService;
  uploads: UploadService;
  manifests: ManifestService;
  listing: ListingService;
}

export interface RegistryOptions {
  metadata: MetadataStore;
  store: BlobStore;
  log: Logger;
  pageMaxEntries: number;
  uploads: UploadLimits;
  /** Descriptor bytes per referrers page. */
  referrersPageMaxBytes: number;
  /** Which tags may not move or go (the trust policies); none by default. */
  tagGuard?: TagGuard;
  /** Where manifest, tag and blob changes are recorded (the audit log); nowhere by default. */
  changeLog?: ChangeLog;
}

export function createRegistry({ metadata, store, log, pageMaxEntries, uploads, referrersPageMaxBytes, tagGuard, changeLog }: RegistryOptions): Registry {
  return {
    blobs: new BlobService(metadata, store, log, changeLog),
    uploads: new UploadService(metadata, store, log, uploads),
    manifests: new ManifestService(metadata, { maxEntries: pageMaxEntries, maxBytes: referrersPageMaxBytes }, tagGuard, changeLog),
    listing: new ListingService(metadata, pageMaxEntries),
  };
}
