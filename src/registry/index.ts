// The registry domain, assembled from its services. No HTTP in here.
import type { Logger } from 'pino';
import type { MetadataStore } from '../metadata/store.js';
import type { BlobStore } from '../storage/blob-store.js';
import { BlobService } from './blobs.js';
import { ListingService } from './listing.js';
import { ManifestService } from './manifests.js';
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
}

export function createRegistry({ metadata, store, log, pageMaxEntries, uploads, referrersPageMaxBytes }: RegistryOptions): Registry {
  return {
    blobs: new BlobService(metadata, store, log),
    uploads: new UploadService(metadata, store, log, uploads),
    manifests: new ManifestService(metadata, { maxEntries: pageMaxEntries, maxBytes: referrersPageMaxBytes }),
    listing: new ListingService(metadata, pageMaxEntries),
  };
}
