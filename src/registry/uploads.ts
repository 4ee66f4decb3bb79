// Blob upload sessions: monolithic, chunked (Content-Range) and streamed. Bytes go straight to
// storage while being hashed; a blob becomes visible only after its digest is verified, its
// bytes are durable, and one metadata transaction links it.
//
// Every request that changes a session (PATCH, PUT, DELETE, the sweeper) first claims it in the
// metadata store, so exactly one request at a time acts on a session, whichever replica serves it:
// a second one is refused with BLOB_UPLOAD_INVALID and changes nothing. Each write goes into a new
// part that is recorded only after the write finished under a live claim, so a request that lost
// its claim (a stalled replica) can never change bytes that a commit uses.
import { randomUUID } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { UploadSessionLostError } from '../metadata/errors.js';
import type { BlobRecord, FinishedUpload, MetadataStore, UploadRecord } from '../metadata/store.js';
import { streamed } from '../runtime/streamed-buffers.js';
import { UploadAreaMissingError, type BlobStore, type UploadPart } from '../storage/blob-store.js';
import { blobKey } from './blobs.js';
import { digestOfStream, newHash } from './digest.js';
import { errors, RegistryError } from './errors.js';
import { storage, storageFault } from './storage-faults.js';
import type { Digest } from './reference.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Hash states kept for in-flight uploads; beyond this the oldest is dropped and rebuilt if needed. */
const MAX_HASH_STATES = 10_000;
/** How long a claim on a session lasts without renewal (renewed while the request goes on). */
const CLAIM_MS = 60_000;
/** Sessions the sweeper reads per query; it keeps going until none is left. */
const SWEEP_BATCH = 1000;

export interface ChunkRange {
  start: number;
  end: number;
}

/** Blob bytes a request brings: the stream, the range it claims to be, and the length it declared. */
export interface IncomingBytes {
  body: Readable;
  range?: ChunkRange | undefined;
  /** the exact number of bytes `body` brings, when the sender declared it */
  length?: number | undefined;
}

export interface WriteResult {
  upload: UploadRecord;
  written: number;
}

export interface UploadLimits {
  /** Open sessions one principal may hold at once. */
  maxOpenPerOwner: number;
}

interface HashState {
  hash: Hash;
  /** how many bytes of the upload the hash has seen */
  size: number;
}

/** This request's hold on a session. */
interface Claim {
  writer: string;
  /** Stops renewing; the claim itself ends with the request's last metadata write. */
  stop(): void;
}

export class UploadService {
  private readonly hashes = new Map<string, HashState>();

  constructor(
    private readonly metadata: MetadataStore,
    private readonly store: BlobStore,
    private readonly log: Logger,
    private readonly limits: UploadLimits,
  ) {}

  /** Opens a session for `owner` (a token subject, or `anonymous@<address>`). */
  async start(repository: string, owner: string): Promise<UploadRecord> {
    const now = Date.now();
    const upload: UploadRecord = { id: randomUUID(), repository, size: 0, parts: [], owner, createdAt: now, updatedAt: now };
    await storage(() => this.store.createUpload(upload.id));
    let created = false;
    try {
      created = await this.metadata.createUpload(upload, this.limits.maxOpenPerOwner);
    } finally {
      if (!created) await this.store.deleteUpload(upload.id, []).catch(() => undefined);
    }
    if (!created) {
      throw new RegistryError(
        'TOOMANYREQUESTS',
        `too many open upload sessions (at most ${this.limits.maxOpenPerOwner}); finish or cancel some, or wait for them to expire`,
      );
    }
    this.remember(upload.id, { hash: newHash(), size: 0 });
    return upload;
  }

  async status(repository: string, id: string): Promise<UploadRecord> {
    return this.require(repository, id);
  }

  /** PATCH: appends a chunk. With a range, it must start exactly where the upload ends (else RANGE_INVALID). */
  async append(repository: string, id: string, incoming: IncomingBytes): Promise<WriteResult> {
    const upload = await this.require(repository, id);
    checkRange(upload, incoming.range);
    const claim = await this.claim(upload);
    try {
      return await this.write(upload, claim, incoming, 'append');
    } finally {
      claim.stop();
    }
  }

  /**
   * PUT: optionally appends a last chunk, verifies the digest and commits the blob; `written` is
   * the last chunk's bytes (0 without one), for the request log.
   */
  async complete(repository: string, id: string, digest: Digest, incoming?: IncomingBytes): Promise<{ blob: BlobRecord; written: number }> {
    let upload = await this.require(repository, id);
    if (incoming) checkRange(upload, incoming.range);
    const claim = await this.claim(upload);
    // The session as claimed: the commit ends it only if it is still so.
    const claimed = { id: upload.id, writer: claim.writer, size: upload.size };
    try {
      // The last chunk is not recorded on its own: the commit below ends the session anyway.
      let written = 0;
      if (incoming) ({ upload, written } = await this.write(upload, claim, incoming, 'last'));
      const computed = await this.withArea(upload, () => this.computeDigest(upload, digest));
      if (computed !== digest.value) {
        await this.discard(upload); // nothing of a wrong upload is kept
        throw errors.digestInvalid({ expected: digest.value, computed });
      }
      const blob = await this.withArea(upload, () => this.commit(repository, upload.id, upload.parts, upload.size, digest, claimed));
      this.hashes.delete(upload.id);
      return { blob, written };
    } catch (error) {
      await this.metadata.releaseUploadClaim(upload.id, claim.writer).catch(() => undefined);
      throw error;
    } finally {
      claim.stop();
    }
  }

  /**
   * POST ?digest=: the whole blob in one request. No session is recorded: the upload area lives
   * only for this request (the sweeper removes it if the process dies meanwhile).
   */
  async monolithic(repository: string, digest: Digest, { body, length }: IncomingBytes): Promise<BlobRecord> {
    const id = randomUUID();
    const name = 'whole';
    await storage(() => this.store.createUpload(id));
    try {
      const hash = newHash(digest.algorithm);
      let size: number;
      try {
        size = await this.store.writePart(id, name, body, hashing(hash), { length, last: true });
      } catch (error) {
        throw interruptedUpload(error);
      }
      const computed = `${digest.algorithm}:${hash.digest('hex')}`;
      if (computed !== digest.value) throw errors.digestInvalid({ expected: digest.value, computed });
      return await this.commit(repository, id, [{ name, size }], size, digest);
    } finally {
      await this.store.deleteUpload(id, [{ name, size: 0 }]).catch(() => undefined);
    }
  }

  /**
   * Makes verified bytes durable under their generation key, then links the blob in one
   * transaction (which also ends the session). If the link fails the bytes are removed again:
   * nothing half-done stays.
   */
  private async commit(repository: string, id: string, parts: UploadPart[], size: number, digest: Digest, session?: FinishedUpload): Promise<BlobRecord> {
    const key = blobKey(digest, id);
    await storage(() => this.store.commitUpload(id, parts, key));
    let blob: BlobRecord;
    try {
      blob = await this.metadata.commitBlob(repository, { digest: digest.value, size, storageKey: key }, session);
    } catch (error) {
      await this.store.delete(key).catch(() => undefined);
      if (error instanceof UploadSessionLostError) throw errors.uploadInvalid('upload was modified concurrently; check its status and retry');
      throw error;
    }
    return blob.storageKey === key ? blob : this.reuse(blob, key, digest);
  }

  /**
   * The digest was already stored: keep one copy. The existing copy is reused only when it is
   * exactly what its record says (its size, and for copies from before sealed parts, its digest);
   * otherwise the fresh, verified copy replaces it. Either way the client sees the same answer.
   */
  private async reuse(existing: BlobRecord, fresh: string, digest: Digest): Promise<BlobRecord> {
    if (await this.isExact(existing, digest)) {
      await this.store.delete(fresh);
      return existing;
    }
    if (!(await this.metadata.replaceBlobCopy(existing.digest, existing.storageKey, fresh))) {
      await this.store.delete(fresh); // another request already replaced it
      return existing;
    }
    this.log.warn({ digest: existing.digest, damaged: existing.storageKey, replacement: fresh }, 'replaced a damaged stored blob copy');
    await this.store.delete(existing.storageKey).catch(() => undefined);
    return { ...existing, storageKey: fresh, sealed: true };
  }

  private async isExact(blob: BlobRecord, digest: Digest): Promise<boolean> {
    if ((await this.store.size(blob.storageKey)) !== blob.size) return false;
    if (blob.sealed) return true;
    const stream = await this.store.read(blob.storageKey, { start: 0, end: blob.size - 1 });
    if (!stream || (await digestOfStream(stream, digest.algorithm)) !== digest.value) return false;
    await this.metadata.markBlobSealed(blob.digest, blob.storageKey);
    return true;
  }

  async cancel(repository: string, id: string): Promise<void> {
    const upload = await this.require(repository, id);
    const claim = await this.claim(upload);
    try {
      await this.discard(upload);
    } finally {
      claim.stop();
    }
  }

  /**
   * Deletes sessions idle for longer than `maxIdleMs` (however many there are), and upload areas
   * no session owns. A session in use is claimed and therefore skipped.
   */
  async expireIdle(maxIdleMs: number): Promise<number> {
    const cutoff = Date.now() - maxIdleMs;
    let expired = 0;
    for (;;) {
      const batch = await this.metadata.listUploadsIdleSince(cutoff, SWEEP_BATCH);
      let progress = 0;
      for (const candidate of batch) {
        const writer = randomUUID();
        // The claim fails when a request took the session meanwhile (or moved it on).
        if (!(await this.metadata.claimUpload(candidate.id, candidate.size, writer, Date.now() + CLAIM_MS))) continue;
        await this.discard(candidate);
        expired++;
        progress++;
      }
      if (batch.length < SWEEP_BATCH || progress === 0) break;
    }
    for await (const area of this.store.listUploads()) {
      if (area.lastModified.getTime() < cutoff && !(await this.metadata.uploadExists(area.id))) {
        await this.store.deleteUpload(area.id);
        expired++;
      }
    }
    return expired;
  }

  /** Claims a session for this request, or refuses: another request is acting on it. */
  private async claim(upload: UploadRecord): Promise<Claim> {
    const writer = randomUUID();
    if (!(await this.metadata.claimUpload(upload.id, upload.size, writer, Date.now() + CLAIM_MS))) {
      throw errors.uploadInvalid('another request is using this upload session; check its status and retry');
    }
    const renewal = setInterval(() => {
      this.metadata.renewUploadClaim(upload.id, writer, Date.now() + CLAIM_MS).catch(() => undefined);
    }, CLAIM_MS / 3);
    renewal.unref();
    return { writer, stop: () => clearInterval(renewal) };
  }

  /** Runs work on an upload's bytes; if they are gone, the session goes too and the client hears so. */
  private async withArea<T>(upload: UploadRecord, work: () => Promise<T>): Promise<T> {
    try {
      return await storage(work);
    } catch (error) {
      if (!(error instanceof UploadAreaMissingError)) throw error;
      await this.discard(upload);
      throw errors.uploadUnknown(upload.id);
    }
  }

  private async require(repository: string, id: string): Promise<UploadRecord> {
    if (!UPLOAD_ID.test(id)) throw errors.uploadUnknown(id);
    const upload = await this.metadata.getUpload(repository, id);
    if (!upload) throw errors.uploadUnknown(id);
    return upload;
  }

  /**
   * Writes one part under `claim`. An 'append' (PATCH) records it and releases the claim. The
   * 'last' part of a PUT is only returned: the commit that follows under the same claim records
   * the blob and ends the session in one transaction; were it to fail, the unrecorded part is
   * never used, as that of a writer who lost its claim.
   */
  private async write(upload: UploadRecord, claim: Claim, { body, range, length }: IncomingBytes, kind: 'append' | 'last'): Promise<WriteResult> {
    const keepClaim = kind === 'last';
    const part = `${upload.size}-${claim.writer}`;
    // Taken out of the shared map while this request owns it: were the claim lost, a stalled
    // write could otherwise feed bytes into the hash that the next claimant uses.
    const state = await this.withArea(upload, () => this.hashState(upload));
    this.hashes.delete(upload.id);
    try {
      const written = await this.withArea(upload, () =>
        this.store.writePart(upload.id, part, body, hashing(state.hash), { length, last: kind === 'last' }),
      );
      if (range && written !== range.end - range.start + 1) {
        throw errors.uploadInvalid('chunk length does not match Content-Range', { range, received: written });
      }
      const recorded: UploadPart = { name: part, size: written };
      if (kind === 'append') {
        if (!(await this.metadata.advanceUpload(upload.id, claim.writer, upload.size, recorded, false))) {
          throw errors.uploadInvalid('upload was modified concurrently; check its status and retry');
        }
      }
      state.size = upload.size + written;
      this.remember(upload.id, state);
      const parts = [...upload.parts, recorded];
      return { upload: { ...upload, size: state.size, parts, updatedAt: Date.now() }, written };
    } catch (error) {
      if (!keepClaim) await this.metadata.releaseUploadClaim(upload.id, claim.writer).catch(() => undefined);
      throw interruptedUpload(error);
    }
  }

  private async hashState(upload: UploadRecord): Promise<HashState> {
    const known = this.hashes.get(upload.id);
    if (known && known.size === upload.size) return known;
    // Started on another process or before a restart: re-read what was recorded so far.
    const hash = newHash();
    for await (const chunk of await this.store.readParts(upload.id, upload.parts)) hash.update(chunk as Buffer);
    return { hash, size: upload.size };
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
    return digestOfStream(await this.store.readParts(upload.id, upload.parts), digest.algorithm);
  }

  /** Ends a session: its record, then its bytes (what a failed delete leaves, the sweeper finds). */
  private async discard(upload: Pick<UploadRecord, 'id' | 'parts'>): Promise<void> {
    this.hashes.delete(upload.id);
    await this.metadata.deleteUpload(upload.id);
    await this.store
      .deleteUpload(upload.id, upload.parts)
      .catch((error: unknown) => this.log.warn({ err: error, upload: upload.id }, 'could not delete upload area'));
  }
}

/** What the store calls with each chunk of an upload's body as it streams to storage. */
function hashing(hash: Hash): (chunk: Buffer) => void {
  return (chunk) => {
    hash.update(chunk);
    streamed(chunk.length);
  };
}

function checkRange(upload: UploadRecord, range: ChunkRange | undefined): void {
  if (range && range.start !== upload.size) {
    throw new RegistryError(
      'RANGE_INVALID',
      `chunk starts at ${range.start} but the upload has ${upload.size} bytes`,
      { expectedStart: upload.size, start: range.start },
      { upload: { repository: upload.repository, id: upload.id, size: upload.size } },
    );
  }
}

function interruptedUpload(error: unknown): RegistryError {
  if (error instanceof RegistryError) return error;
  return (
    storageFault(error) ??
    errors.uploadInvalid('upload body was interrupted before it was complete', {
      reason: error instanceof Error ? error.message : String(error),
    })
  );
}
