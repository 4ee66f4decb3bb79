// Faults of the blob storage as a client hears them: a full disk, an I/O error or an object store
// that cannot answer is UNAVAILABLE (503, retry later), whatever the driver; anything else is a
// bug and stays what it is.
import { isStorageFull, StorageUnavailableError } from '../storage/blob-store.js';
import { BackendUnavailableError, type RegistryError } from './errors.js';

const FILESYSTEM_FAULTS = new Set(['ENOSPC', 'EIO', 'EROFS', 'EDQUOT', 'EMFILE', 'ENFILE']);

/** A storage fault as the client should hear it (UNAVAILABLE), or undefined for anything else. */
export function storageFault(error: unknown): RegistryError | undefined {
  if (isStorageFull(error)) return new BackendUnavailableError('blob storage', error, 'it is full');
  if (error instanceof StorageUnavailableError) return new BackendUnavailableError('blob storage', error, error.message);
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && FILESYSTEM_FAULTS.has(code)) return new BackendUnavailableError('blob storage', error);
  return undefined;
}

/** Runs a storage operation, turning its faults into 503s. */
export async function storage<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw storageFault(error) ?? error;
  }
}
