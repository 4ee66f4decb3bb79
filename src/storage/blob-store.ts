// The storage seam. A BlobStore keeps bytes and nothing else: it does not know digests,
// repositories or manifests (the metadata store is the truth about what exists where).
// Keys are chosen by the registry and are opaque here; upload ids are server-generated UUIDs.
import type { Readable } from 'node:stream';

export interface ByteRange {
  /** first byte, inclusive */
  start: number;
  /** last byte, inclusive */
  end: number;
}

export interface UploadArea {
  id: string;
  lastModified: Date;
}

export interface BlobStore {
  /** Creates an empty upload area for a new upload session. */
  createUpload(uploadId: string): Promise<void>;
  /**
   * Streams `source` into the upload starting at byte `offset`, handing every chunk to `observe`
   * (e.g. a hash) before it is written. Resolves with the number of bytes written. Bytes past
   * the committed length of a failed write are ignored later, so a failed write needs no undo.
   */
  writeUpload(uploadId: string, offset: number, source: Readable, observe: (chunk: Buffer) => void): Promise<number>;
  /** Reads the first `length` bytes of an upload back (to rebuild a hash after a restart). */
  readUpload(uploadId: string, length: number): Promise<Readable>;
  /** Makes the first `length` bytes of the upload durable and immutable under `key`; the upload area is gone afterwards. */
  commitUpload(uploadId: string, length: number, key: string): Promise<void>;
  deleteUpload(uploadId: string): Promise<void>;
  /** Every upload area present, for sweeping abandoned ones. */
  listUploads(): AsyncIterable<UploadArea>;

  /** Opens a committed object for reading; undefined when it is not there. */
  read(key: string, range?: ByteRange): Promise<Readable | undefined>;
  delete(key: string): Promise<void>;
  /** Throws when the backend cannot serve requests (readiness). */
  checkHealth(): Promise<void>;
}

/** The upload's bytes are gone (expired, or the session was finished elsewhere). */
export class UploadAreaMissingError extends Error {
  constructor(readonly uploadId: string) {
    super(`upload area ${uploadId} does not exist`);
    this.name = 'UploadAreaMissingError';
  }
}
