// Filesystem BlobStore: uploads are files under <root>/_uploads, committed blobs are made durable
// (fsync) and moved into place with an atomic rename, so a crash never leaves a partial object
// under a blob key.
import { access, constants, mkdir, open, opendir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { UploadAreaMissingError, type BlobStore, type ByteRange, type UploadArea } from './blob-store.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Keys are made by the registry, but never trust a string that becomes a path.
const KEY = /^[a-z0-9]+(?:\/[a-zA-Z0-9_.-]+)*$/;
const READ_CHUNK = 1024 * 1024;
const WRITE_BATCH = 4 * 1024 * 1024;

export class FilesystemBlobStore implements BlobStore {
  private readonly uploadsDir: string;

  constructor(private readonly root: string) {
    this.uploadsDir = join(root, '_uploads');
  }

  async init(): Promise<void> {
    await mkdir(this.uploadsDir, { recursive: true });
  }

  private uploadPath(id: string): string {
    if (!UPLOAD_ID.test(id)) throw new Error(`invalid upload id ${JSON.stringify(id)}`);
    return join(this.uploadsDir, id);
  }

  private keyPath(key: string): string {
    if (!KEY.test(key) || key.split('/').some((part) => part === '..' || part === '.')) {
      throw new Error(`invalid storage key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }

  async createUpload(uploadId: string): Promise<void> {
    const handle = await open(this.uploadPath(uploadId), 'wx');
    await handle.close();
  }

  async writeUpload(uploadId: string, offset: number, source: Readable, observe: (chunk: Buffer) => void): Promise<number> {
    // 'r+' writes at `offset` without truncating: a retried chunk overwrites what a failed one left.
    const handle = await this.openUpload(uploadId, 'r+');
    // Socket chunks are small (64 KiB); gathering them into large vectored writes, with one write
    // in flight while the next batch is received and hashed, keeps the disk and the CPU both busy.
    // A failed write is recorded at once (never left as an unhandled rejection) and ends the loop.
    let position = offset;
    let batch: Buffer[] = [];
    let batched = 0;
    let failure: unknown;
    let inFlight: Promise<void> = Promise.resolve();
    const flush = async (): Promise<void> => {
      const buffers = batch;
      const length = batched;
      const at = position;
      batch = [];
      batched = 0;
      position += length;
      await inFlight;
      inFlight = handle.writev(buffers, at).then(
        ({ bytesWritten }) => {
          if (bytesWritten !== length) failure ??= new Error(`short write: ${bytesWritten} of ${length} bytes`);
        },
        (error: unknown) => {
          failure ??= error;
        },
      );
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
      await inFlight;
      if (failure) throw failure;
    } finally {
      await inFlight;
      await handle.close();
    }
    return position - offset;
  }

  /** Opens an upload area; a missing one is reported as such, not as a storage fault. */
  private async openUpload(uploadId: string, flags: string) {
    try {
      return await open(this.uploadPath(uploadId), flags);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UploadAreaMissingError(uploadId);
      throw error;
    }
  }

  async readUpload(uploadId: string, length: number): Promise<Readable> {
    const handle = await this.openUpload(uploadId, 'r');
    if (length === 0) {
      await handle.close();
      return Readable.from([]);
    }
    return handle.createReadStream({ start: 0, end: length - 1, highWaterMark: READ_CHUNK });
  }

  async commitUpload(uploadId: string, length: number, key: string): Promise<void> {
    const target = this.keyPath(key);
    const handle = await this.openUpload(uploadId, 'r+');
    try {
      await handle.truncate(length);
      await handle.sync();
    } finally {
      await handle.close();
    }
    // Make the new directory entries durable too, from the blob's directory up to the root.
    const created = await mkdir(dirname(target), { recursive: true });
    await rename(this.uploadPath(uploadId), target);
    for (let dir = dirname(target); ; dir = dirname(dir)) {
      await syncDirectory(dir);
      if (created === undefined || dir === this.root || !dir.startsWith(dirname(created))) break;
    }
  }

  async deleteUpload(uploadId: string): Promise<void> {
    await rm(this.uploadPath(uploadId), { force: true });
  }

  async *listUploads(): AsyncIterable<UploadArea> {
    for await (const entry of await opendir(this.uploadsDir)) {
      if (!entry.isFile() || !UPLOAD_ID.test(entry.name)) continue;
      const info = await stat(join(this.uploadsDir, entry.name)).catch(() => undefined);
      if (info) yield { id: entry.name, lastModified: info.mtime };
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable | undefined> {
    const path = this.keyPath(key);
    // Open first so a missing file is reported before any response header is sent.
    const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (!handle) return undefined;
    return handle.createReadStream({ start: range?.start, end: range?.end, highWaterMark: READ_CHUNK });
  }

  async delete(key: string): Promise<void> {
    const path = this.keyPath(key);
    // The per-digest directory stays: removing it could race a re-upload creating its file there.
    await rm(path, { force: true });
  }

  async checkHealth(): Promise<void> {
    await access(this.uploadsDir, constants.W_OK);
  }
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
