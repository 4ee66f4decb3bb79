// The blob store the configuration asks for.
import type { BlobStore } from './blob-store.js';
import { FilesystemBlobStore } from './filesystem.js';
import type { S3Settings } from './s3.js';

export type StorageSettings = { driver: 'filesystem'; root: string } | ({ driver: 's3' } & S3Settings);

/** A ready blob store and how to let go of it at shutdown. */
export interface OpenBlobStore {
  store: BlobStore;
  close(): void;
}

export async function openBlobStore(settings: StorageSettings): Promise<OpenBlobStore> {
  if (settings.driver === 'filesystem') {
    const store = new FilesystemBlobStore(settings.root);
    await store.init();
    return { store, close: () => undefined };
  }
  // Loaded only when asked for: the AWS SDK is large, and the embedded default never needs it.
  const { S3BlobStore } = await import('./s3.js');
  const store = new S3BlobStore(settings);
  return { store, close: () => store.close() };
}
