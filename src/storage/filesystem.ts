// Filesystem BlobStore: uploads are files under <root>/_uploads, committed blobs are made durable
// (fsync) and moved into place with an atomic rename, so a crash never leaves a partial object
// under a blob key.
import { createReadStream, createWriteStream } from 'node:fs';
import { access, constants, mkdir, open, opendir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore, ByteRange, UploadArea } from './blob-store.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Keys are made by the registry, but never trust a string that becomes a path.
const KEY = /^[a-z0-9]+(?:\/[a-zA-Z0-9_.-]+)*$/;
const READ_CHUNK = 512 * 1024;

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
    let written = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        observe(chunk);
        written += chunk.length;
        callback(null, chunk);
      },
    });
    // 'r+' writes at `start` without truncating: a retried chunk overwrites what a failed one left.
    const sink = createWriteStream(this.uploadPath(uploadId), { flags: 'r+', start: offset });
    await pipeline(source, tap, sink);
    return written;
  }

  async readUpload(uploadId: string, length: number): Promise<Readable> {
    if (length === 0) return Readable.from([]);
    return createReadStream(this.uploadPath(uploadId), { start: 0, end: length - 1, highWaterMark: READ_CHUNK });
  }

  async commitUpload(uploadId: string, length: number, key: string): Promise<void> {
    const source = this.uploadPath(uploadId);
    const target = this.keyPath(key);
    const handle = await open(source, 'r+');
    try {
      await handle.truncate(length);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await mkdir(dirname(target), { recursive: true });
    await rename(source, target);
    await syncDirectory(dirname(target));
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
    await rm(path, { force: true });
    // Remove the now empty per-digest directory; ignore when another generation still lives there.
    await rmdir(dirname(path)).catch(() => undefined);
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
