// Filesystem BlobStore: an upload is a directory of part files under <root>/_uploads/<id>/; a
// committed blob is made durable (fsync) and moved into place with an atomic rename, so a crash
// never leaves a partial object under a blob key.
//
// An object of one part is that part's file, renamed to its key. An object of several parts (a
// chunked upload) is not copied into one file: its upload directory, with a list of its recorded
// parts in order (PART_LIST), is renamed to `<key>.parts`, and reads follow the list. Copying
// would write every byte a second time, which costs as much as receiving it. A part's file is
// written whole by one request and closed before the part is recorded, so nothing can write into
// a listed part; a request that lost its claim can only have written an unlisted file, never read.
import { createReadStream } from 'node:fs';
import { access, constants, mkdir, open, opendir, readFile, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { UploadAreaMissingError, type BlobStore, type ByteRange, type PartWrite, type RangeReader, type StoredObject, type UploadArea, type UploadPart } from './blob-store.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PART_NAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$/;
/** Where an empty upload's object is created; not a valid part name. */
const ASSEMBLY = '_assembly';
/** The recorded parts of an object of several parts, in order; not a valid part name. */
const PART_LIST = '_parts';
/** What follows the key of an object of several parts: its directory's name. */
const SEGMENTED = '.parts';
// Keys are made by the registry, but never trust a string that becomes a path.
const KEY = /^[a-z0-9]+(?:\/[a-zA-Z0-9_.-]+)*$/;
const READ_CHUNK = 1024 * 1024;
const WRITE_BATCH = 1024 * 1024;
/** Bytes of a part written between the flushes started while it still arrives. */
const SYNC_STRIDE = 4 * 1024 * 1024;

export class FilesystemBlobStore implements BlobStore {
  private readonly uploadsDir: string;
  /**
   * The last part of each upload that this process wrote, flushed and closed (a PUT's body), so
   * that its commit, which follows at once, need not reopen it to flush it again. Only a shortcut:
   * an upload missing here is sealed at its commit as any other.
   */
  private readonly flushedLastParts = new Map<string, UploadPart>();

  constructor(private readonly root: string) {
    this.uploadsDir = join(root, '_uploads');
  }

  async init(): Promise<void> {
    await mkdir(this.uploadsDir, { recursive: true });
    // Upload areas of the single-file layout (before parts): their sessions are gone with them.
    for (const entry of await readdir(this.uploadsDir, { withFileTypes: true })) {
      if (entry.isFile() && UPLOAD_ID.test(entry.name)) await rm(join(this.uploadsDir, entry.name), { force: true });
    }
  }

  private uploadPath(id: string): string {
    if (!UPLOAD_ID.test(id)) throw new Error(`invalid upload id ${JSON.stringify(id)}`);
    return join(this.uploadsDir, id);
  }

  private partPath(id: string, part: string): string {
    if (!PART_NAME.test(part)) throw new Error(`invalid part name ${JSON.stringify(part)}`);
    return join(this.uploadPath(id), part);
  }

  private keyPath(key: string): string {
    if (!KEY.test(key) || key.endsWith(SEGMENTED) || key.split('/').some((part) => part === '..' || part === '.')) {
      throw new Error(`invalid storage key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }

  async createUpload(uploadId: string): Promise<void> {
    await mkdir(this.uploadPath(uploadId));
  }

  async writePart(uploadId: string, part: string, source: Readable, observe: (chunk: Buffer) => void, { length, last = false }: PartWrite = {}): Promise<number> {
    // 'wx': a part is created by exactly one request, and a name is never written twice.
    const path = this.partPath(uploadId, part);
    // Created read-only: once written, a part is never written again (this descriptor still may).
    const handle = await openOrMissing(uploadId, path, 'wx', 0o444);
    // Socket chunks are small (64 KiB); gathering them into large vectored writes, with one write
    // in flight while the next batch is received and hashed, keeps the disk and the CPU both busy.
    // A failed write is recorded at once (never left as an unhandled rejection) and ends the loop.
    let position = 0;
    let batch: Buffer[] = [];
    let batched = 0;
    let failure: unknown;
    let inFlight: Promise<void> = Promise.resolve();
    // A large part is flushed to the disk while it still arrives, so the flush that makes it durable
    // finds little left to write: otherwise all of it is written back only then, while the client
    // waits (half a second for 512 MiB here). One flush at a time, started after a write.
    let syncedUpTo = 0;
    let syncing: Promise<void> | undefined;
    const syncIfDue = (written: number): void => {
      if (syncing || written - syncedUpTo < SYNC_STRIDE) return;
      syncedUpTo = written;
      syncing = handle
        .datasync()
        .catch((error: unknown) => {
          failure ??= error;
        })
        .finally(() => {
          syncing = undefined;
        });
    };
    const flush = async (): Promise<void> => {
      const buffers = batch;
      const length = batched;
      const at = position;
      batch = [];
      batched = 0;
      position += length;
      await inFlight;
      inFlight = writevAll(handle, buffers, at).then(
        () => syncIfDue(at + length),
        (error: unknown) => {
          failure ??= error;
        },
      );
    };
    const settled = async (): Promise<void> => {
      await inFlight;
      await syncing;
    };
    try {
      for await (const chunk of source) {
        if (failure) throw failure;
        const buffer = chunk as Buffer;
        observe(buffer);
        batch.push(buffer);
        batched += buffer.length;
        if (batched >= WRITE_BATCH) await flush();
      }
      if (batched > 0) await flush();
      await settled();
      if (failure) throw failure;
      if (length !== undefined && position !== length) throw new Error(`the body brought ${position} of the ${length} bytes declared`);
      // The last part is made durable here (its commit follows at once); so is a large one whose
      // flushing has begun, so that sealing it at the commit finds nothing left to write.
      if (last || syncedUpTo > 0) await handle.sync();
    } catch (error) {
      // A part that was not written whole is never used: give its space back at once.
      await settled();
      await handle.close();
      await rm(path, { force: true });
      throw error;
    }
    await handle.close();
    if (last) this.flushedLastParts.set(uploadId, { name: part, size: position });
    return position;
  }

  async readParts(uploadId: string, parts: readonly UploadPart[]): Promise<Readable> {
    // Check every part is there before the first byte is handed out.
    for (const part of parts) await this.checkPart(uploadId, part);
    const paths = parts.map((part) => ({ path: this.partPath(uploadId, part.name), size: part.size }));
    return Readable.from(concatenated(paths));
  }

  /** A recorded part must exist with exactly its recorded size: anything else is a damaged upload. */
  private async checkPart(uploadId: string, part: UploadPart): Promise<void> {
    const info = await stat(this.partPath(uploadId, part.name)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (!info || info.size !== part.size) throw new UploadAreaMissingError(uploadId);
  }

  async commitUpload(uploadId: string, parts: readonly UploadPart[], key: string): Promise<void> {
    const target = this.keyPath(key);
    const flushed = this.flushedLastParts.get(uploadId);
    this.flushedLastParts.delete(uploadId);
    // A part of no bytes adds nothing to the object, but a recorded one must be there all the same.
    for (const part of parts) if (part.size === 0) await this.checkPart(uploadId, part);
    const written = parts.filter((part) => part.size > 0);
    if (written.length > 1) return this.commitSegmented(uploadId, written, target, flushed);
    let source: string;
    if (written.length === 1) {
      const part = written[0] as UploadPart;
      source = this.partPath(uploadId, part.name);
      // Written, flushed and closed just now by this process, at the size recorded: nothing to check.
      if (flushed?.name !== part.name || flushed.size !== part.size) await this.seal(uploadId, part, true);
    } else {
      source = join(this.uploadPath(uploadId), ASSEMBLY);
      await rm(source, { force: true }); // a crashed earlier attempt
      await writeFile(source, '', { flag: 'wx', mode: 0o444 });
      await syncFile(source);
    }
    await this.moveIntoPlace(uploadId, source, target);
    await this.removeArea(uploadId);
  }

  /** Several parts: list them, make everything durable, and move the whole area under the key. */
  private async commitSegmented(uploadId: string, parts: readonly UploadPart[], target: string, flushed: UploadPart | undefined): Promise<void> {
    const area = this.uploadPath(uploadId);
    const unsealed = parts.filter((part) => part.name !== flushed?.name || part.size !== flushed.size);
    await inParallel(unsealed, FLUSHES_IN_FLIGHT, (part) => this.seal(uploadId, part, false));
    const list = join(area, PART_LIST);
    await rm(list, { force: true }); // a crashed earlier attempt
    await writeFile(list, JSON.stringify(parts.map(({ name, size }) => ({ name, size }))), { flag: 'wx', mode: 0o444 });
    await syncFile(list);
    await syncDirectory(area);
    await this.moveIntoPlace(uploadId, area, `${target}${SEGMENTED}`);
  }

  /**
   * Checks a recorded part (there, and of its recorded size) and flushes it to disk. `dated`: it
   * becomes an object's file, whose time the collector's sweep reads as the commit time, so a part
   * written a while ago is dated now. Parts are created read-only (see writePart).
   */
  private async seal(uploadId: string, part: UploadPart, dated: boolean): Promise<void> {
    const handle = await openOrMissing(uploadId, this.partPath(uploadId, part.name), 'r');
    try {
      const info = await handle.stat();
      if (info.size !== part.size) throw new UploadAreaMissingError(uploadId);
      if (dated && Date.now() - info.mtimeMs > FRESH_MS) {
        const now = new Date();
        await handle.utimes(now, now);
      }
      if (info.mode & 0o222) await handle.chmod(0o444); // a part written by an earlier version
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /** Removes an upload area after its only part became an object: usually empty by then. */
  private async removeArea(uploadId: string): Promise<void> {
    try {
      await rmdir(this.uploadPath(uploadId));
    } catch (error) {
      const { code } = error as NodeJS.ErrnoException;
      if (code === 'ENOENT') return;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      await this.deleteUpload(uploadId); // files a writer that lost its claim left behind
    }
  }

  /**
   * Renames a durable file or directory of an upload area to `target`, and makes the new directory
   * entries durable too. A source that is gone (the area was swept) is reported as a missing area.
   */
  private async moveIntoPlace(uploadId: string, source: string, target: string): Promise<void> {
    // The folder is there but for the first blob of its prefix: rename first, make it only if missing.
    let folderWasMissing = false;
    try {
      await rename(source, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      folderWasMissing = true;
      await mkdir(dirname(target), { recursive: true });
      await rename(source, target).catch((again: NodeJS.ErrnoException) => {
        throw again.code === 'ENOENT' ? new UploadAreaMissingError(uploadId) : again;
      });
    }
    // New entries: the target in its folder and, when folders were made (by this request or by
    // one racing it, which may not have flushed them yet), each in its parent, up to the root.
    const topmost = folderWasMissing ? this.root : dirname(target);
    for (let dir = dirname(target); ; dir = dirname(dir)) {
      await syncDirectory(dir);
      if (dir === topmost || dir === this.root || !dir.startsWith(this.root)) break;
    }
  }

  /** The recorded parts of an object of several parts, or undefined when there is no such object. */
  private async segments(path: string): Promise<{ dir: string; parts: UploadPart[]; committedAt: Date } | undefined> {
    const dir = `${path}${SEGMENTED}`;
    const list = join(dir, PART_LIST);
    const text = await readFile(list, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined;
      throw error;
    });
    if (text === undefined) return undefined;
    const parts = parsePartList(text, list);
    const { mtime } = await stat(list);
    return { dir, parts, committedAt: mtime };
  }

  /** The whole area goes, whatever it holds (a directory removal costs the same either way). */
  async deleteUpload(uploadId: string): Promise<void> {
    this.flushedLastParts.delete(uploadId);
    await rm(this.uploadPath(uploadId), { recursive: true, force: true });
  }

  async *listUploads(): AsyncIterable<UploadArea> {
    for await (const entry of await opendir(this.uploadsDir)) {
      if (!entry.isDirectory() || !UPLOAD_ID.test(entry.name)) continue;
      const lastModified = await this.lastWrite(join(this.uploadsDir, entry.name));
      if (lastModified) yield { id: entry.name, lastModified };
    }
  }

  /** The latest change to an upload area: a part being streamed into keeps it fresh. */
  private async lastWrite(dir: string): Promise<Date | undefined> {
    const info = await stat(dir).catch(() => undefined);
    if (!info) return undefined;
    let latest = info.mtimeMs;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const part = await stat(join(dir, name)).catch(() => undefined);
      if (part && part.mtimeMs > latest) latest = part.mtimeMs;
    }
    return new Date(latest);
  }

  async *listCommitted(): AsyncIterable<StoredObject> {
    yield* this.walk(join(this.root, 'blobs'), 'blobs');
  }

  private async *walk(dir: string, prefix: string): AsyncGenerator<StoredObject> {
    const entries = await readdir(dir, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [];
      throw error;
    });
    for (const entry of entries) {
      const key = `${prefix}/${entry.name}`;
      if (entry.isDirectory() && entry.name.endsWith(SEGMENTED)) {
        const objectKey = key.slice(0, -SEGMENTED.length);
        const object = KEY.test(objectKey) ? await this.segments(join(this.root, objectKey)).catch(() => undefined) : undefined;
        if (object) yield { key: objectKey, size: totalSize(object.parts), lastModified: object.committedAt };
      } else if (entry.isDirectory()) {
        yield* this.walk(join(dir, entry.name), key);
      } else if (entry.isFile() && KEY.test(key)) {
        const info = await stat(join(dir, entry.name)).catch(() => undefined); // deleted meanwhile
        if (info) yield { key, size: info.size, lastModified: new Date(info.mtimeMs) };
      }
    }
  }

  async read(key: string, range: ByteRange): Promise<Readable | undefined> {
    const path = this.keyPath(key);
    // Open first so a missing file is reported before any response header is sent.
    const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (!handle) {
      const object = await this.segments(path);
      return object && Readable.from(slices(object.dir, object.parts, range), { objectMode: false });
    }
    if (range.end < range.start) {
      await handle.close();
      return Readable.from([]);
    }
    return handle.createReadStream({ start: range.start, end: range.end, highWaterMark: READ_CHUNK });
  }

  async openReader(key: string, range: ByteRange): Promise<RangeReader | undefined> {
    const path = this.keyPath(key);
    const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (handle) return new FileRangeReader([{ handle, start: range.start, end: range.end }]);
    const object = await this.segments(path);
    if (!object) return undefined;
    // Parts are opened as the reading reaches them (an object may have thousands).
    return new FileRangeReader(pieces(object.dir, object.parts, range));
  }

  async size(key: string): Promise<number | undefined> {
    const path = this.keyPath(key);
    const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (info) return info.size;
    const object = await this.segments(path);
    return object && totalSize(object.parts);
  }

  async delete(key: string): Promise<void> {
    const path = this.keyPath(key);
    // A folder the key names stays (keys of the earlier layout had one per digest): removing it
    // could race a re-upload creating its file there.
    await rm(path, { force: true });
    await rm(`${path}${SEGMENTED}`, { recursive: true, force: true });
  }

  async checkHealth(): Promise<void> {
    await access(this.uploadsDir, constants.W_OK);
  }
}

/** Opens a file in an upload area; a missing area is reported as such, not as a storage fault. */
async function openOrMissing(uploadId: string, path: string, flags: string, mode?: number): Promise<FileHandle> {
  try {
    return await open(path, flags, mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UploadAreaMissingError(uploadId);
    throw error;
  }
}

async function* concatenated(parts: { path: string; size: number }[]): AsyncGenerator<Buffer> {
  for (const part of parts) {
    if (part.size === 0) continue;
    for await (const chunk of createReadStream(part.path, { start: 0, end: part.size - 1, highWaterMark: READ_CHUNK })) {
      yield chunk as Buffer;
    }
  }
}

/** Where the bytes of `range` lie in an object's parts: in each part file touched, from where to where. */
function* pieces(dir: string, parts: readonly UploadPart[], range: ByteRange): Generator<{ path: string; start: number; end: number }> {
  let offset = 0;
  for (const part of parts) {
    const first = Math.max(range.start, offset);
    const last = Math.min(range.end, offset + part.size - 1);
    offset += part.size;
    if (first > last) continue;
    const from = first - (offset - part.size);
    yield { path: join(dir, part.name), start: from, end: from + (last - first) };
  }
}

/** The bytes of `range` of an object whose parts, in order, are files in `dir`. */
async function* slices(dir: string, parts: readonly UploadPart[], range: ByteRange): AsyncGenerator<Buffer> {
  for (const piece of pieces(dir, parts, range)) {
    for await (const chunk of createReadStream(piece.path, { start: piece.start, end: piece.end, highWaterMark: READ_CHUNK })) {
      yield chunk as Buffer;
    }
  }
}

type Piece = { handle: FileHandle; start: number; end: number } | { path: string; start: number; end: number };

/** Reads pieces of files in order, each from `start` to `end` inclusive, into the caller's buffers. */
class FileRangeReader implements RangeReader {
  private readonly pieces: Iterator<Piece>;
  private current: { handle: FileHandle; position: number; end: number } | undefined;
  private done = false;

  constructor(pieces: Iterable<Piece>) {
    this.pieces = pieces[Symbol.iterator]();
  }

  async read(into: Buffer): Promise<number> {
    while (!this.done) {
      if (!this.current) {
        const next = this.pieces.next();
        if (next.done) {
          this.done = true;
          break;
        }
        const piece = next.value;
        const handle = 'handle' in piece ? piece.handle : await open(piece.path, 'r');
        this.current = { handle, position: piece.start, end: piece.end };
      }
      const { handle, position, end } = this.current;
      const wanted = Math.min(into.length, end - position + 1);
      const { bytesRead } = wanted > 0 ? await handle.read(into, 0, wanted, position) : { bytesRead: 0 };
      if (bytesRead > 0) {
        this.current.position += bytesRead;
        return bytesRead;
      }
      // This piece is done (or its file is shorter than recorded: the caller counts the bytes).
      this.current = undefined;
      await handle.close();
      if (wanted > 0) {
        this.done = true;
        break;
      }
    }
    return 0;
  }

  async close(): Promise<void> {
    this.done = true;
    const current = this.current;
    this.current = undefined;
    await current?.handle.close();
  }
}

function parsePartList(text: string, path: string): UploadPart[] {
  const parsed: unknown = JSON.parse(text);
  const valid = (part: unknown): part is UploadPart =>
    typeof part === 'object' && part !== null &&
    typeof (part as UploadPart).name === 'string' && PART_NAME.test((part as UploadPart).name) &&
    Number.isSafeInteger((part as UploadPart).size) && (part as UploadPart).size > 0;
  if (!Array.isArray(parsed) || !parsed.every(valid)) throw new Error(`damaged part list ${path}`);
  return parsed;
}

const totalSize = (parts: readonly UploadPart[]): number => parts.reduce((sum, part) => sum + part.size, 0);

/** A part written within this long counts as written at its commit (the sweep's grace is hours). */
const FRESH_MS = 60_000;

/** Parts flushed at once: libuv's threads, which the flushes would otherwise queue for. */
const FLUSHES_IN_FLIGHT = 4;

async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Writes every byte of `buffers` at `position`. A short write (the disk filling up, a signal) is
 * continued; the next attempt then reports the real cause (ENOSPC) instead of a vague shortfall.
 */
async function writevAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let pending = buffers;
  let at = position;
  while (pending.length > 0) {
    const { bytesWritten } = await handle.writev(pending, at);
    if (bytesWritten === 0) throw Object.assign(new Error('the disk accepted no bytes'), { code: 'EIO' });
    at += bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const buffer of pending) {
      if (skip >= buffer.length) {
        skip -= buffer.length;
        continue;
      }
      rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
      skip = 0;
    }
    pending = rest;
  }
}

/** Flushes a file or a directory to the disk (a descriptor opened for reading will do). */
async function sync(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const syncFile = sync;
const syncDirectory = sync;
