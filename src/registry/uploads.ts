// Blob upload sessions: monolithic, chunked (Content-Range) and streamed. Bytes go straight to
// storage while being hashed; a blob becomes visible only after its digest is verified, its
// bytes are durable, and one metadata transaction links it.
import { randomUUID } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobRecord, MetadataStore, UploadRecord } from '../metadata/store.js';
import { UploadAreaMissingError, type BlobStore } from '../storage/blob-store.js';
import { blobKey } from './blobs.js';
import { digestOfStream, newHash } from './digest.js';
import { BackendUnavailableError, errors, RegistryError } from './errors.js';
import type { Digest } from './reference.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Hash states kept for in-flight uploads; beyond this the oldest is dropped and rebuilt if needed. */
const MAX_HASH_STATES = 10_000;
/** How long a writer's claim on a session lasts without renewal (renewed while the body streams). */
const CLAIM_MS = 60_000;

export interface ChunkRange {
  start: number;
  end: number;
}

export interface WriteResult {
  upload: UploadRecord;
  written: number;
}

interface HashState {
  hash: Hash;
  /** how many bytes of the upload the hash has seen */
  size: number;
}

export class UploadService {
  private readonly hashes = new Map<string, HashState>();
  private readonly locks = new Map<string, Promise<void>>();

  constructor(
    private readonly metadata: MetadataStore,
    private readonly store: BlobStore,
    private readonly log: Logger,
  ) {}

  async start(repository: string): Promise<UploadRecord> {
    const now = Date.now();
    const upload: UploadRecord = { id: randomUUID(), repository, size: 0, createdAt: now, updatedAt: now };
    await this.store.createUpload(upload.id);
    await this.metadata.createUpload(upload);
    this.remember(upload.id, { hash: newHash(), size: 0 });
    return upload;
  }

  async status(repository: string, id: string): Promise<UploadRecord> {
    return this.require(repository, id);
  }

  /** PATCH: appends a chunk. With a range, it must start exactly where the upload ends (else 416). */
  async append(repository: string, id: string, body: Readable, range?: ChunkRange): Promise<WriteResult> {
    return this.exclusive(id, async () => this.write(await this.require(repository, id), body, range));
  }

  /** PUT: optionally appends a last chunk, verifies the digest and commits the blob. */
  async complete(repository: string, id: string, digest: Digest, body?: Readable, range?: ChunkRange): Promise<BlobRecord> {
    return this.exclusive(id, async () => {
      let upload = await this.require(repository, id);
      if (body) upload = (await this.write(upload, body, range)).upload;
      const computed = await this.withArea(upload.id, () => this.computeDigest(upload, digest));
      if (computed !== digest.value) {
        await this.discard(upload.id); // nothing of a wrong upload is kept
        throw errors.digestInvalid({ expected: digest.value, computed });
      }
      const blob = await this.withArea(upload.id, () => this.commit(repository, upload.id, upload.size, digest));
      await this.discard(upload.id);
      return blob;
    });
  }

  /**
   * POST ?digest=: the whole blob in one request. No session is recorded: the upload area lives
   * only for this request (the sweeper removes it if the process dies meanwhile).
   */
  async monolithic(repository: string, digest: Digest, body: Readable): Promise<BlobRecord> {
    const id = randomUUID();
    await this.store.createUpload(id);
    try {
      const hash = newHash(digest.algorithm);
      let size: number;
      try {
        size = await this.store.writeUpload(id, 0, body, (chunk) => hash.update(chunk));
      } catch (error) {
        throw interruptedUpload(error);
      }
      const computed = `${digest.algorithm}:${hash.digest('hex')}`;
      if (computed !== digest.value) throw errors.digestInvalid({ expected: digest.value, computed });
      return await this.commit(repository, id, size, digest);
    } finally {
      await this.store.deleteUpload(id).catch(() => undefined);
    }
  }

  /**
   * Makes verified bytes durable under their generation key, then links the blob in one
   * transaction. If the link fails the bytes are removed again: nothing half-done stays.
   */
  private async commit(repository: string, id: string, size: number, digest: Digest): Promise<BlobRecord> {
    const key = blobKey(digest, id);
    await this.store.commitUpload(id, size, key);
    let blob: BlobRecord;
    try {
      blob = await this.metadata.commitBlob(repository, { digest: digest.value, size, storageKey: key });
    } catch (error) {
      await this.store.delete(key).catch(() => undefined);
      throw error;
    }
    if (blob.storageKey !== key) await this.store.delete(key); // the digest was already stored: keep one copy
    return blob;
  }

  async cancel(repository: string, id: string): Promise<void> {
    await this.exclusive(id, async () => {
      await this.require(repository, id);
      await this.discard(id);
    });
  }

  /** Deletes sessions idle for longer than `maxIdleMs`, and upload areas no session owns. */
  async expireIdle(maxIdleMs: number): Promise<number> {
    const cutoff = Date.now() - maxIdleMs;
    let expired = 0;
    for (const candidate of await this.metadata.listUploadsIdleSince(cutoff)) {
      await this.exclusive(candidate.id, async () => {
        // Look again under the lock: a request may have used the session meanwhile.
        const current = await this.metadata.getUpload(candidate.repository, candidate.id);
        if (!current || current.updatedAt >= cutoff) return;
        await this.discard(current.id);
        expired++;
      });
    }
    for await (const area of this.store.listUploads()) {
      if (area.lastModified.getTime() < cutoff && !(await this.metadata.uploadExists(area.id))) {
        await this.store.deleteUpload(area.id);
        expired++;
      }
    }
    return expired;
  }

  /** Runs work on an upload's bytes; if they are gone, the session goes too and the client hears so. */
  private async withArea<T>(id: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof UploadAreaMissingError)) throw error;
      await this.discard(id);
      throw errors.uploadUnknown(id);
    }
  }

  private async require(repository: string, id: string): Promise<UploadRecord> {
    if (!UPLOAD_ID.test(id)) throw errors.uploadUnknown(id);
    const upload = await this.metadata.getUpload(repository, id);
    if (!upload) throw errors.uploadUnknown(id);
    return upload;
  }

  private async write(upload: UploadRecord, body: Readable, range?: ChunkRange): Promise<WriteResult> {
    if (range && range.start !== upload.size) {
      throw new RegistryError(
        'RANGE_INVALID',
        `chunk starts at ${range.start} but the upload has ${upload.size} bytes`,
        { expectedStart: upload.size, start: range.start },
        416,
        uploadProgressHeaders(upload),
      );
    }
    // One writer at a time, across processes: a retried PATCH on another replica cannot
    // overwrite bytes that this one is writing (they share the upload area).
    const writer = randomUUID();
    if (!(await this.metadata.claimUpload(upload.id, upload.size, writer, Date.now() + CLAIM_MS))) {
      throw errors.uploadInvalid('another request is writing to this upload; check its status and retry');
    }
    const renewal = setInterval(() => {
      this.metadata.renewUploadClaim(upload.id, writer, Date.now() + CLAIM_MS).catch(() => undefined);
    }, CLAIM_MS / 3);
    renewal.unref();
    let written: number;
    try {
      const state = await this.withArea(upload.id, () => this.hashState(upload));
      written = await this.withArea(upload.id, () =>
        this.store.writeUpload(upload.id, upload.size, body, (chunk) => state.hash.update(chunk)),
      );
      if (range && written !== range.end - range.start + 1) {
        throw errors.uploadInvalid('chunk length does not match Content-Range', { range, received: written });
      }
      const size = upload.size + written;
      if (!(await this.metadata.advanceUpload(upload.id, writer, upload.size, size))) {
        throw errors.uploadInvalid('upload was modified concurrently; check its status and retry');
      }
      state.size = size;
      return { upload: { ...upload, size, updatedAt: Date.now() }, written };
    } catch (error) {
      this.hashes.delete(upload.id); // it may have seen bytes that were not committed
      await this.metadata.releaseUploadClaim(upload.id, writer).catch(() => undefined);
      throw interruptedUpload(error);
    } finally {
      clearInterval(renewal);
    }
  }

  private async hashState(upload: UploadRecord): Promise<HashState> {
    const known = this.hashes.get(upload.id);
    if (known && known.size === upload.size) return known;
    // Started on another process or before a restart: re-read what was committed so far.
    const hash = newHash();
    for await (const chunk of await this.store.readUpload(upload.id, upload.size)) hash.update(chunk as Buffer);
    const state = { hash, size: upload.size };
    this.remember(upload.id, state);
    return state;
  }

  /** Keeps a hash state, dropping the oldest beyond the bound (it can be rebuilt from storage). */
  private remember(id: string, state: HashState): void {
    if (this.hashes.size >= MAX_HASH_STATES) {
      const oldest = this.hashes.keys().next().value;
      if (oldest !== undefined) this.hashes.delete(oldest);
    }
    this.hashes.set(id, state);
  }

  private async computeDigest(upload: UploadRecord, digest: Digest): Promise<string> {
    if (digest.algorithm === 'sha256') {
      const state = await this.hashState(upload);
      return `sha256:${state.hash.copy().digest('hex')}`;
    }
    return digestOfStream(await this.store.readUpload(upload.id, upload.size), digest.algorithm);
  }

  private async discard(id: string): Promise<void> {
    this.hashes.delete(id);
    await this.metadata.deleteUpload(id);
    await this.store.deleteUpload(id).catch((error: unknown) => this.log.warn({ err: error, upload: id }, 'could not delete upload area'));
  }

  /** Serialises work on one upload within this process. */
  private async exclusive<T>(id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release = (): void => undefined;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.locks.set(id, tail);
    await previous;
    try {
      return await work();
    } finally {
      release();
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }
}

/** Location and Range headers describing an upload's progress, as the spec defines them. */
export function uploadProgressHeaders(upload: UploadRecord): Record<string, string> {
  return {
    Location: `/v2/${upload.repository}/blobs/uploads/${upload.id}`,
    Range: `0-${Math.max(upload.size - 1, 0)}`,
    'Docker-Upload-UUID': upload.id,
  };
}

const STORAGE_FAULTS = new Set(['ENOSPC', 'EIO', 'EROFS', 'EDQUOT', 'EMFILE', 'ENFILE']);

function interruptedUpload(error: unknown): RegistryError {
  if (error instanceof RegistryError) return error;
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && STORAGE_FAULTS.has(code)) return new BackendUnavailableError('blob storage', error);
  return errors.uploadInvalid('upload body was interrupted before it was complete', {
    reason: error instanceof Error ? error.message : String(error),
  });
}
