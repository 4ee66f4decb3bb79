// The storage seam. A BlobStore keeps bytes and nothing else: it does not know digests,
// repositories or manifests (the metadata store is the truth about what exists where).
// Keys are chosen by the registry and are opaque here; upload ids are server-generated UUIDs.
//
// An upload is a set of parts, each written whole by one request and never touched again once its
// write returned. The metadata store records which parts make up a session; a request that lost its
// claim on the session can therefore only write into a part that no commit will ever use, and a
// committed object is assembled from finished parts only: nothing can write into it afterwards.
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

/** A committed object as a listing of the store shows it. */
export interface StoredObject {
  /** the key it was committed under (as given to commitUpload) */
  key: string;
  size: number;
  /** when it was committed */
  lastModified: Date;
}

/** One finished part of an upload, as the metadata store records it. */
export interface UploadPart {
  /** chosen by the registry: letters, digits, `-` and `.` */
  name: string;
  size: number;
}

/** What the registry knows about a part before its bytes arrive. */
export interface PartWrite {
  /**
   * Exactly how many bytes `source` brings, when the sender declared it: a driver may then stream
   * them on in one piece (a source that ends short or runs long fails the write, nothing is kept).
   */
  length?: number | undefined;
  /**
   * The part ends the upload and its commit follows at once (a PUT's body): a driver may make it
   * durable while it still holds it open, rather than reopen it at the commit.
   */
  last?: boolean;
}

export interface BlobStore {
  /** Creates an empty upload area for a new upload session. */
  createUpload(uploadId: string): Promise<void>;
  /**
   * Streams `source` into a new part of the upload, handing every chunk to `observe` (e.g. a hash)
   * before it is written. Resolves with the part's length once its bytes are written and the part
   * is closed; a part name is written at most once.
   */
  writePart(uploadId: string, part: string, source: Readable, observe: (chunk: Buffer) => void, options?: PartWrite): Promise<number>;
  /** Reads finished parts back in order (to rebuild a hash on another replica or after a restart). */
  readParts(uploadId: string, parts: readonly UploadPart[]): Promise<Readable>;
  /**
   * Makes the parts, in order, one durable and immutable object under `key`; the upload area is
   * gone afterwards, and the object's last-modified time is the time of the commit (not of its
   * parts' writes). Fails with UploadAreaMissingError when a part is missing.
   */
  commitUpload(uploadId: string, parts: readonly UploadPart[], key: string): Promise<void>;
  /**
   * Removes an upload area. Given the session's `parts` (when answering a request), a driver may
   * delete exactly those and list nothing; without, it removes whatever the area holds (the sweeper).
   */
  deleteUpload(uploadId: string, parts?: readonly UploadPart[]): Promise<void>;
  /** Every upload area present, for sweeping abandoned ones. */
  listUploads(): AsyncIterable<UploadArea>;
  /**
   * Every committed object (upload areas excluded), with the time it was committed: for the
   * garbage collector's sweep of bytes no metadata row names. It walks the whole store, so only the
   * collector calls it, never a request.
   */
  listCommitted(): AsyncIterable<StoredObject>;

  /**
   * Opens exactly `range` of a committed object for reading; undefined when it is not there. Reads
   * are always bounded by the caller (by the size the metadata records), never by the object's end.
   */
  read(key: string, range: ByteRange): Promise<Readable | undefined>;
  /** The stored size of a committed object; undefined when it is not there. */
  size(key: string): Promise<number | undefined>;
  delete(key: string): Promise<void>;
  /**
   * Like `read`, but the caller supplies the memory: exactly `range`, read in order into buffers
   * it hands over and gets back (a streamed pull then allocates nothing per chunk). Optional: a
   * driver whose bytes arrive as a stream of its own (S3) leaves it out and `read` is used.
   */
  openReader?(key: string, range: ByteRange): Promise<RangeReader | undefined>;
  /**
   * Where a client may fetch a committed object itself (a short-lived presigned URL), when the
   * driver is set up to hand such URLs out; undefined to stream it through the registry.
   */
  readUrl?(key: string): Promise<string | undefined>;
  /** Throws when the backend cannot serve requests (readiness). */
  checkHealth(): Promise<void>;
}

export interface RangeReader {
  /** Reads the next bytes of the range into `into` (from its start); 0 once the range is done. */
  read(into: Buffer): Promise<number>;
  close(): Promise<void>;
}

/** The upload's bytes are gone (expired, or the session was finished elsewhere). */
export class UploadAreaMissingError extends Error {
  constructor(readonly uploadId: string) {
    super(`upload area ${uploadId} does not exist`);
    this.name = 'UploadAreaMissingError';
  }
}

/** The storage backend cannot serve now (unreachable, failing, throttling): a 503, nothing half-written. */
export class StorageUnavailableError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'StorageUnavailableError';
  }
}

/** The backend has no room left (disk full, quota): a 503 for the client, nothing half-written. */
export function isStorageFull(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
