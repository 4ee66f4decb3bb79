// The registry domain, assembled from its services. No HTTP in here.
import type { Logger } from 'pino';
import type { MetadataStore } from '../metadata/store.js';
import type { BlobStore } from '../storage/blob-store.js';
import { BlobService } from './blobs.js';
import { ListingService } from './listing.js';
import { ManifestService } from './manifests.js';
import { UploadService } from './uploads.js';

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
}

export function createRegistry({ metadata, store, log, pageMaxEntries }: RegistryOptions): Registry {
  return {
    blobs: new BlobService(metadata, store, log),
    uploads: new UploadService(metadata, store, log),
    manifests: new ManifestService(metadata),
    listing: new ListingService(metadata, pageMaxEntries),
  };
}
