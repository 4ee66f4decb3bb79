// S3 BlobStore (AWS S3, Ceph RADOS Gateway, MinIO, …). The layout under the configured prefix:
//
//   _uploads/<id>/_area         an upload session's area (an empty marker object)
//   _uploads/<id>/<part>        each finished part, written whole by one request
//   <key>                       committed blobs (keys chosen by the registry, with a generation:
//                               blobs/<alg>/<xx>/<hex>/<upload id>)
//
// A part is streamed in (multipart when it outgrows one buffer, with part sizes that grow so a
// layer far past 5 GB stays within S3's 10,000 parts) and is readable once written, so a session
// continued on another replica rebuilds its hash from the parts. A commit composes the parts into
// the blob's key inside the object store (CopyObject / UploadPartCopy; only runs shorter than
// S3's 5 MiB part minimum travel through this process), then deletes them. Answering an API
// request never lists the bucket; only the sweeper of abandoned upload areas and the garbage
// collector's sweep of bytes no row names do.
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { UndiciHttpHandler } from '@smithy/undici-http-handler';
import { StorageUnavailableError, UploadAreaMissingError, type BlobStore, type ByteRange, type PartWrite, type StoredObject, type UploadArea, type UploadPart } from './blob-store.js';
import { counted } from '../runtime/streamed-buffers.js';

export interface S3Settings {
  bucket: string;
  /** e.g. `registry/`; every key is written under it */
  prefix: string;
  region: string;
  /** for S3-compatible servers (Ceph RGW, MinIO); AWS S3 when left out */
  endpoint?: string | undefined;
  forcePathStyle: boolean;
  /** static credentials; the AWS SDK's default chain (environment, profile, instance role) when left out */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string | undefined } | undefined;
  /** hand out presigned URLs valid this long for blob reads (readUrl); none when left out */
  redirectSeconds?: number | undefined;
  /**
   * How long the store may stay silent: for an answer once a request is sent (or while it stops
   * taking one), and between the bytes of an object being read, unless the reading is paused
   * because the client reads slowly. undici's own default (300 s) when left out.
   */
  timeoutMs?: number | undefined;
}

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last part of a multipart upload). */
const MIN_PART = 5 * MiB;
/** S3's largest part, and the largest single CopyObject. */
const MAX_PART = 5 * 1024 * MiB;
const MAX_PARTS = 10_000;
/** The first parts of a streamed write; every 1,000 parts the size doubles (8 MiB … 4 GiB: about 8 TB in 10,000). */
const FIRST_PART = 8 * MiB;
const AREA_MARKER = '_area';
/**
 * An empty object's body, with its length said: the SDK sends no Content-Length for an empty body
 * and then prints a warning about streams of unknown length to stderr, once per object.
 */
const EMPTY_BODY = { Body: '', ContentLength: 0 } as const;
const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PART_NAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$/;
const KEY = /^[a-z0-9]+(?:\/[a-zA-Z0-9_.-]+)*$/;
/** Keys per DeleteObjects request (S3's limit). */
const DELETE_BATCH = 1000;
/** Requests at once while composing a blob (server-side copies) or checking its parts. */
const COMPOSE_CONCURRENCY = 8;

/** A byte range of one stored piece, inclusive. */
interface SourceRange {
  key: string;
  start: number;
  end: number;
}

/**
 * The parts of the object composed from `pieces`, in order: each part is copied from one range of
 * one piece inside the store, or (runs shorter than S3's 5 MiB minimum) gathered from several
 * ranges. Every part but the last is at least 5 MiB; none is over 5 GiB.
 */
export function composition(pieces: readonly { key: string; size: number }[]): SourceRange[][] {
  const parts: SourceRange[][] = [];
  let gathering: SourceRange[] = [];
  let gathered = 0;
  const gather = (range: SourceRange) => {
    gathering.push(range);
    gathered += range.end - range.start + 1;
    if (gathered >= MIN_PART) {
      parts.push(gathering);
      gathering = [];
      gathered = 0;
    }
  };
  for (const piece of pieces) {
    if (piece.size === 0) continue;
    let start = 0;
    if (gathered > 0) {
      // Tops up what is being gathered first, so no part in the middle falls below the minimum.
      const take = Math.min(MIN_PART - gathered, piece.size);
      gather({ key: piece.key, start: 0, end: take - 1 });
      start = take;
    }
    const rest = piece.size - start;
    if (rest === 0) continue;
    if (rest < MIN_PART) {
      gather({ key: piece.key, start, end: piece.size - 1 });
      continue;
    }
    // Copied in even runs of at most 5 GiB, none below the minimum.
    const runs = Math.ceil(rest / MAX_PART);
    const run = Math.ceil(rest / runs);
    for (let at = start; at < piece.size; at += run) parts.push([{ key: piece.key, start: at, end: Math.min(at + run, piece.size) - 1 }]);
  }
  if (gathered > 0) parts.push(gathering);
  return parts;
}

/** Maps `items` through `work`, at most `limit` at once, results in order; the first failure wins. */
async function inParallel<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await work(items[index] as T, index);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const workers = Array.from({ length: Math.min(limit, items.length) }, worker);
  const settled = await Promise.allSettled(workers);
  const rejected = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}

/** The size of streamed part `n` (1-based). */
export function streamedPartSize(n: number): number {
  return Math.min(FIRST_PART * 2 ** Math.floor((n - 1) / 1000), 4096 * MiB);
}

function isMissing(error: unknown): boolean {
  if (!(error instanceof S3ServiceException)) return false;
  return error.name === 'NoSuchKey' || error.name === 'NotFound' || error.name === 'NoSuchUpload' || error.$metadata.httpStatusCode === 404;
}

/**
 * Faults of the object store or the way to it (refused connection, timeouts, 5xx, throttling,
 * credentials it no longer accepts) become StorageUnavailableError: the client hears 503 and may
 * retry. Anything else is a bug here and stays what it is.
 */
function unavailable(error: unknown): unknown {
  if (error instanceof StorageUnavailableError || error instanceof UploadAreaMissingError) return error;
  if (error instanceof S3ServiceException) {
    const status = error.$metadata.httpStatusCode ?? 0;
    if (status >= 500 || status === 403 || status === 429 || error.name === 'SlowDown' || error.name === 'NoSuchBucket') {
      return new StorageUnavailableError(`the object store answered ${status} ${error.name}`, error);
    }
    return error;
  }
  const code = (error as { code?: unknown } | undefined)?.code;
  const name = (error as { name?: unknown } | undefined)?.name;
  if (typeof code === 'string' && /^(?:ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_SOCKET|UND_ERR_CLOSED|UND_ERR_CONNECT_TIMEOUT)$/.test(code)) {
    return new StorageUnavailableError(`the object store cannot be reached (${code})`, error);
  }
  // The undici handler names its timeouts (UND_ERR_HEADERS_TIMEOUT, UND_ERR_BODY_TIMEOUT) so.
  if (name === 'TimeoutError' || name === 'RequestTimeout') {
    return new StorageUnavailableError(`the object store did not answer in time${typeof code === 'string' ? ` (${code})` : ''}`, error);
  }
  return error;
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly redirectSeconds: number | undefined;

  constructor(settings: S3Settings, client?: S3Client) {
    this.bucket = settings.bucket;
    this.prefix = settings.prefix;
    this.redirectSeconds = settings.redirectSeconds;
    this.client =
      client ??
      new S3Client({
        region: settings.region,
        ...(settings.endpoint !== undefined ? { endpoint: settings.endpoint } : {}),
        forcePathStyle: settings.forcePathStyle,
        ...(settings.credentials ? { credentials: settings.credentials } : {}),
        // S3-compatible servers do not all accept the SDK's default trailing checksums on streamed bodies.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        // undici instead of node:http: a streamed pull's body arrives as views of the socket's
        // reads, where node:http's parser copies every chunk once more into a new buffer; half
        // the CPU per GiB read from the store here (bench/README.md, s3-compare). Its own
        // connection pool (not the process-wide one), closed with the client.
        requestHandler: new UndiciHttpHandler({
          dispatcher: settings.timeoutMs === undefined ? {} : { headersTimeout: settings.timeoutMs, bodyTimeout: settings.timeoutMs },
        }),
      });
  }

  private async send<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw unavailable(error);
    }
  }

  private areaPrefix(id: string): string {
    if (!UPLOAD_ID.test(id)) throw new Error(`invalid upload id ${JSON.stringify(id)}`);
    return `${this.prefix}_uploads/${id}/`;
  }

  private partKey(id: string, part: string): string {
    if (!PART_NAME.test(part)) throw new Error(`invalid part name ${JSON.stringify(part)}`);
    return `${this.areaPrefix(id)}${part}`;
  }

  private objectKey(key: string): string {
    if (!KEY.test(key) || key.split('/').some((segment) => segment === '..' || segment === '.')) {
      throw new Error(`invalid storage key ${JSON.stringify(key)}`);
    }
    return `${this.prefix}${key}`;
  }

  async createUpload(uploadId: string): Promise<void> {
    await this.send(() => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: `${this.areaPrefix(uploadId)}${AREA_MARKER}`, ...EMPTY_BODY })));
  }

  private async requireArea(uploadId: string): Promise<void> {
    const present = await this.exists(`${this.areaPrefix(uploadId)}${AREA_MARKER}`);
    if (!present) throw new UploadAreaMissingError(uploadId);
  }

  private async exists(key: string): Promise<boolean> {
    return (await this.headSize(key)) !== undefined;
  }

  private async headSize(key: string): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw unavailable(error);
    }
  }

  async writePart(uploadId: string, part: string, source: Readable, observe: (chunk: Buffer) => void, { length }: PartWrite = {}): Promise<number> {
    // A part is durable once S3 acknowledged it: `last` needs nothing more.
    const key = this.partKey(uploadId, part);
    await this.requireArea(uploadId);
    // A declared length that one PUT can hold streams straight through: no buffering, no
    // multipart bookkeeping, and the last byte is acknowledged one round trip after it arrives.
    if (length !== undefined && length <= MAX_PART) return this.send(() => this.putDeclared(key, source, observe, length));
    return this.send(() => new StreamedObject(this.client, this.bucket, key).write(source, observe));
  }

  /**
   * One PutObject of exactly `length` bytes from `source`. A body that ends short or fails aborts
   * the request (S3 keeps nothing). One that runs long gives the store its `length` bytes and no
   * more, and the part is deleted once the store has answered: failing the request on the extra
   * bytes instead would race the store, which may already be committing what it was promised.
   */
  private async putDeclared(key: string, source: Readable, observe: (chunk: Buffer) => void, length: number): Promise<number> {
    const abort = new AbortController();
    let failure: unknown;
    let count = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        const room = length - count;
        count += chunk.length;
        if (room <= 0) return done();
        const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
        observe(kept);
        done(null, kept);
      },
      flush(done) {
        done(count >= length ? null : new Error(`the body ended after ${count} of the ${length} bytes declared`));
      },
    });
    const fail = (error: unknown) => {
      failure ??= error;
      abort.abort();
    };
    // The source's own error (a client that went away) is what the caller hears, not the abort.
    const piped = pipeline(source, counted).catch(fail);
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: counted, ContentLength: length }), { abortSignal: abort.signal });
    } catch (error) {
      // The store gave up: stop reading the body too, rather than leave it half-consumed.
      counted.destroy(error as Error);
      throw failure ?? error;
    }
    // The store has its `length` bytes, and may have answered before the source brought more:
    // only the source's end says whether it ran long. Such a part is removed again.
    counted.resume();
    await piped;
    if (!failure && count > length) failure = new Error(`the body is longer than the ${length} bytes declared`);
    if (failure) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })).catch(() => undefined);
      throw failure;
    }
    return count;
  }

  async readParts(uploadId: string, parts: readonly UploadPart[]): Promise<Readable> {
    // Every part is checked before the first byte is handed out.
    await this.checkParts(uploadId, parts);
    return Readable.from(this.concatenated(uploadId, parts));
  }

  private async *concatenated(uploadId: string, parts: readonly UploadPart[]): AsyncGenerator<Buffer> {
    for (const part of parts) {
      if (part.size === 0) continue;
      const body = await this.get(this.partKey(uploadId, part.name), { start: 0, end: part.size - 1 });
      if (!body) throw new UploadAreaMissingError(uploadId);
      for await (const chunk of body) yield chunk as Buffer;
    }
  }

  /** Each recorded part must exist with exactly its recorded size: anything else is a damaged upload. */
  private async checkParts(uploadId: string, parts: readonly UploadPart[]): Promise<void> {
    await inParallel(parts, COMPOSE_CONCURRENCY, async (part) => {
      if ((await this.headSize(this.partKey(uploadId, part.name))) !== part.size) throw new UploadAreaMissingError(uploadId);
    });
  }

  async commitUpload(uploadId: string, parts: readonly UploadPart[], key: string): Promise<void> {
    const target = this.objectKey(key);
    await this.checkParts(uploadId, parts);
    const pieces = parts.filter((part) => part.size > 0).map((part) => ({ key: this.partKey(uploadId, part.name), size: part.size }));
    await this.send(() => this.compose(pieces, target));
    await this.deleteUpload(uploadId, parts);
  }

  /** Joins pieces, in order, into one object at `target`, inside the object store where it can. */
  private async compose(pieces: { key: string; size: number }[], target: string): Promise<void> {
    const only = pieces[0];
    if (pieces.length === 0) {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: target, ...EMPTY_BODY }));
      return;
    }
    if (pieces.length === 1 && only && only.size <= MAX_PART) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: target, CopySource: this.copySource(only.key), MetadataDirective: 'REPLACE', ContentType: 'application/octet-stream' }));
      return;
    }
    const plan = composition(pieces);
    if (plan.length > MAX_PARTS) {
      const total = pieces.reduce((sum, piece) => sum + piece.size, 0);
      throw new Error(`the upload needs more than ${MAX_PARTS} parts to compose (${total} bytes in ${pieces.length} chunks)`);
    }
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: target, ContentType: 'application/octet-stream' }));
    if (!UploadId) throw new Error('the object store started a multipart upload without an id');
    try {
      // A server-side copy is bound by the store's own reads and writes, not by this process:
      // several at once (each part has its number from the plan) let the store work in parallel.
      const completed = await inParallel(plan, COMPOSE_CONCURRENCY, async (sources, index): Promise<CompletedPart> => {
        const PartNumber = index + 1;
        const [first] = sources;
        if (sources.length === 1 && first && first.end - first.start + 1 >= MIN_PART) {
          const result = await this.client.send(
            new UploadPartCopyCommand({ Bucket: this.bucket, Key: target, UploadId, PartNumber, CopySource: this.copySource(first.key), CopySourceRange: `bytes=${first.start}-${first.end}` }),
          );
          return { PartNumber, ETag: result.CopyPartResult?.ETag };
        }
        // Runs shorter than S3's part minimum travel through this process, gathered into one part.
        const chunks: Buffer[] = [];
        for (const source of sources) {
          const body = await this.get(source.key, { start: source.start, end: source.end });
          if (!body) throw new Error(`part ${source.key} vanished while it was composed`);
          for await (const chunk of body) chunks.push(chunk as Buffer);
        }
        const body = Buffer.concat(chunks);
        const result = await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: target, UploadId, PartNumber, Body: body, ContentLength: body.length }));
        return { PartNumber, ETag: result.ETag };
      });
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: target, UploadId, MultipartUpload: { Parts: completed } }));
    } catch (error) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: target, UploadId })).catch(() => undefined);
      throw error;
    }
  }

  private copySource(key: string): string {
    return `${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }

  /**
   * Removes an upload area. With `parts` (answering a request) exactly those objects and the
   * marker are deleted, without listing anything; without (the sweeper), whatever the area holds,
   * including multipart uploads a crashed writer left behind.
   */
  async deleteUpload(uploadId: string, parts?: readonly UploadPart[]): Promise<void> {
    const area = this.areaPrefix(uploadId);
    if (parts) {
      await this.deleteKeys([`${area}${AREA_MARKER}`, ...parts.map((part) => this.partKey(uploadId, part.name))]);
      return;
    }
    let token: string | undefined;
    do {
      const page = await this.send(() => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: area, ContinuationToken: token })));
      await this.deleteKeys((page.Contents ?? []).map((object) => object.Key).filter((key): key is string => key !== undefined));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    await this.abortMultipartUploads(area);
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      await this.send(() => this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })));
    }
  }

  /** Aborts the multipart uploads under `prefix` (parts a writer never finished). */
  private async abortMultipartUploads(prefix: string): Promise<void> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.send(() =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker })),
      );
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId) continue;
        await this.send(() => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId })));
      }
      if (!page.IsTruncated) return;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async *listUploads(): AsyncIterable<UploadArea> {
    // The sweeper's view: each area with its latest write (a part being streamed in is a
    // multipart upload, whose start counts as a write).
    const root = `${this.prefix}_uploads/`;
    const latest = new Map<string, number>();
    const note = (key: string | undefined, at: Date | undefined) => {
      const id = key?.slice(root.length).split('/')[0];
      if (!id || !UPLOAD_ID.test(id)) return;
      latest.set(id, Math.max(latest.get(id) ?? 0, at?.getTime() ?? 0));
    };
    let token: string | undefined;
    do {
      const page = await this.send(() => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: root, ContinuationToken: token })));
      for (const object of page.Contents ?? []) note(object.Key, object.LastModified);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.send(() =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: root, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker })),
      );
      for (const upload of page.Uploads ?? []) note(upload.Key, upload.Initiated);
      if (!page.IsTruncated) break;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
    for (const [id, at] of latest) yield { id, lastModified: new Date(at) };
  }

  /** The garbage collector's sweep (never a request): every object under `<prefix>blobs/`. */
  async *listCommitted(): AsyncIterable<StoredObject> {
    const root = `${this.prefix}blobs/`;
    let token: string | undefined;
    do {
      const page = await this.send(() => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: root, ContinuationToken: token })));
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        const key = object.Key.slice(this.prefix.length);
        if (KEY.test(key)) yield { key, size: object.Size ?? 0, lastModified: object.LastModified ?? new Date() };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async read(key: string, range: ByteRange): Promise<Readable | undefined> {
    const objectKey = this.objectKey(key);
    if (range.end < range.start) {
      if (!(await this.exists(objectKey))) return undefined;
      return Readable.from([]);
    }
    return this.get(objectKey, range);
  }

  private async get(key: string, range: ByteRange): Promise<Readable | undefined> {
    try {
      const object = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${range.start}-${range.end}` }));
      // The SDK reads the response in 64 KiB buffers, as a request body arrives (streamed-buffers.ts).
      return counted(object.Body as Readable);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw unavailable(error);
    }
  }

  async size(key: string): Promise<number | undefined> {
    return this.headSize(this.objectKey(key));
  }

  async delete(key: string): Promise<void> {
    await this.send(() => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) })));
  }

  /** A short-lived URL that lets whoever holds it read a committed object (a pull's redirect). */
  async readUrl(key: string): Promise<string | undefined> {
    const expiresIn = this.redirectSeconds;
    if (expiresIn === undefined) return undefined;
    return this.send(() => getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { expiresIn }));
  }

  async checkHealth(): Promise<void> {
    await this.send(() => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
  }

  close(): void {
    this.client.destroy();
  }
}

/**
 * One object written from a stream of unknown length: a single PUT when it fits in the first
 * part, else a multipart upload whose parts grow (streamedPartSize), one part uploading while the
 * next is received. A failed write aborts the multipart upload, leaving nothing behind.
 */
class StreamedObject {
  private uploadId: string | undefined;
  private readonly parts: CompletedPart[] = [];
  /** the number the next part gets */
  private nextPart = 1;
  private inFlight: Promise<void> = Promise.resolve();
  private failure: unknown;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly key: string,
  ) {}

  async write(source: Readable, observe: (chunk: Buffer) => void): Promise<number> {
    let buffered: Buffer[] = [];
    let bufferedSize = 0;
    let total = 0;
    try {
      for await (const chunk of source) {
        if (this.failure) throw this.failure;
        const buffer = chunk as Buffer;
        observe(buffer);
        total += buffer.length;
        buffered.push(buffer);
        bufferedSize += buffer.length;
        const size = streamedPartSize(this.nextPart);
        if (bufferedSize >= size) {
          const body = Buffer.concat(buffered, bufferedSize);
          buffered = body.length > size ? [body.subarray(size)] : [];
          bufferedSize = body.length - size;
          await this.sendPart(body.subarray(0, size));
        }
      }
      if (this.uploadId === undefined) {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key, Body: Buffer.concat(buffered, bufferedSize), ContentLength: bufferedSize }));
        return total;
      }
      if (bufferedSize > 0) await this.sendPart(Buffer.concat(buffered, bufferedSize));
      await this.inFlight;
      if (this.failure) throw this.failure;
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: this.key, UploadId: this.uploadId, MultipartUpload: { Parts: this.parts } }));
      return total;
    } catch (error) {
      await this.inFlight;
      if (this.uploadId !== undefined) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.key, UploadId: this.uploadId })).catch(() => undefined);
      }
      throw error;
    }
  }

  /** Hands one part to the object store once the previous one is acknowledged (one in flight at most). */
  private async sendPart(body: Buffer): Promise<void> {
    if (this.uploadId === undefined) {
      const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.key, ContentType: 'application/octet-stream' }));
      if (!created.UploadId) throw new Error('the object store started a multipart upload without an id');
      this.uploadId = created.UploadId;
    }
    await this.inFlight;
    if (this.failure) throw this.failure;
    const PartNumber = this.nextPart++;
    if (PartNumber > MAX_PARTS) throw new Error(`the part is larger than ${MAX_PARTS} parts can hold`);
    const UploadId = this.uploadId;
    this.inFlight = this.client
      .send(new UploadPartCommand({ Bucket: this.bucket, Key: this.key, UploadId, PartNumber, Body: body, ContentLength: body.length }))
      .then((result) => {
        this.parts.push({ PartNumber, ETag: result.ETag });
      })
      .catch((error: unknown) => {
        this.failure ??= error;
      });
  }
}
