// Reading, mounting and deleting blobs. A blob is only ever reachable through a repository it
// is linked to: there is deliberately no global lookup by digest (zot CVE-2024-39897).
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Author } from '../audit/events.js';
import type { BlobRecord, MetadataStore } from '../metadata/store.js';
import type { BlobStore, ByteRange, RangeReader } from '../storage/blob-store.js';
import { NO_CHANGE_LOG, type ChangeLog } from './change-log.js';
import { errors, RegistryError } from './errors.js';
import { storage } from './storage-faults.js';
import { parseDigest, type Digest } from './reference.js';

/**
 * Storage key of one stored copy: the upload id makes each generation of a digest distinct. The
 * copies of every digest that starts with the same two hex digits are siblings: a folder per
 * digest cost each new blob on the filesystem a mkdir and one more folder flush. Copies stored
 * under the earlier `<hex>/<generation>` keys keep them: a key is opaque once it is recorded.
 */
export function blobKey(digest: Digest, generation: string): string {
  return `blobs/${digest.algorithm}/${digest.hex.slice(0, 2)}/${digest.hex}.${generation}`;
}

/** The range asked for, else the whole blob, never past its recorded size. */
function bounded(blob: BlobRecord, range?: ByteRange): ByteRange {
  const end = blob.size - 1;
  return range ? { start: range.start, end: Math.min(range.end, end) } : { start: 0, end };
}

/** A digest to read or delete: one that is not a valid digest names no blob. */
export function readableDigest(text: string): Digest {
  try {
    return parseDigest(text);
  } catch (error) {
    if (error instanceof RegistryError) throw errors.blobUnknown(text.slice(0, 255));
    throw error;
  }
}

export class BlobService {
  constructor(
    private readonly metadata: MetadataStore,
    private readonly store: BlobStore,
    private readonly log: Logger,
    private readonly changes: ChangeLog = NO_CHANGE_LOG,
  ) {}

  /**
   * The blob as linked in the repository. A client asking (HEAD before it pushes a manifest that
   * uses the blob) restarts the garbage collector's grace for it.
   */
  async stat(repository: string, digest: Digest): Promise<BlobRecord> {
    const blob = await this.metadata.findRepositoryBlob(repository, digest.value, { touch: true });
    if (!blob) throw errors.blobUnknown(digest.value);
    return blob;
  }

  /** Opens a blob's bytes: the range asked for, else all of them, never past the recorded size. */
  async open(blob: BlobRecord, range?: ByteRange): Promise<Readable> {
    return this.found(blob, await storage(() => this.store.read(blob.storageKey, bounded(blob, range))));
  }

  /**
   * The same bytes, read into the caller's buffers, when the store can do that (see
   * BlobStore.openReader); undefined when it cannot, and `open` is the way.
   */
  async openReader(blob: BlobRecord, range?: ByteRange): Promise<RangeReader | undefined> {
    const openReader = this.store.openReader?.bind(this.store);
    if (!openReader) return undefined;
    return this.found(blob, await storage(() => openReader(blob.storageKey, bounded(blob, range))));
  }

  private found<T>(blob: BlobRecord, bytes: T | undefined): T {
    if (bytes === undefined) {
      // The metadata says it exists but the bytes are gone: storage was damaged behind our back.
      this.log.error({ digest: blob.digest, key: blob.storageKey }, 'blob bytes missing from storage');
      throw errors.blobUnknown(blob.digest);
    }
    return bytes;
  }

  /** Where the client may fetch the blob from the store itself, when the store hands out such URLs. */
  async readUrl(blob: BlobRecord): Promise<string | undefined> {
    const readUrl = this.store.readUrl?.bind(this.store);
    return readUrl ? storage(() => readUrl(blob.storageKey)) : undefined;
  }

  /** Links a blob from another repository; undefined when `from` does not hold it. */
  mount(repository: string, from: string, digest: Digest): Promise<BlobRecord | undefined> {
    return this.metadata.mountBlob(repository, from, digest.value);
  }

  async delete(repository: string, digest: Digest, author: Author = {}): Promise<void> {
    const { unlinked, orphan } = await this.metadata.unlinkBlob(repository, digest.value, this.changes.journal(author));
    if (!unlinked) throw errors.blobUnknown(digest.value);
    if (orphan) {
      // The record is already gone and its key is in the storage-delete outbox: free the bytes
      // now rather than at the next collection, and only then forget the key.
      try {
        await this.store.delete(orphan.storageKey);
        await this.metadata.finishStorageDelete(orphan.storageKey);
      } catch (error) {
        this.log.warn({ err: error, key: orphan.storageKey }, 'could not delete the bytes of a deleted blob now; the garbage collector will');
      }
    }
  }
}
