// What a test server has in its blob storage, whichever backend it runs on: the folder of the
// embedded default, or the bucket test/support/server.ts gave it (PORTCULLIS_TEST_BACKEND).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { backendEnvOf, type RunningRegistry } from './server.js';

/** Whether the server keeps its blobs in S3 (the second pass of test/run.mjs) rather than in its folder. */
export const blobsInS3 = (server: Pick<RunningRegistry, 'dataDir'>): boolean => backendEnvOf(server.dataDir).PORTCULLIS_STORAGE_DRIVER === 's3';

/** Names directly under `path` in the server's blob storage (`_uploads`, `blobs/sha256/ab`, …). */
export async function storedNames(server: Pick<RunningRegistry, 'dataDir'>, path: string): Promise<string[]> {
  if (!blobsInS3(server)) {
    return readdir(join(server.dataDir, 'blobs', path)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [];
      throw error;
    });
  }
  // Named through a variable: see test/support/server.ts.
  const s3Support = './s3.js';
  const { listNames } = (await import(s3Support)) as typeof import('./s3.js');
  return listNames(backendEnvOf(server.dataDir), path);
}

/** Upload areas present (one per session or request in progress). */
export const uploadAreas = (server: Pick<RunningRegistry, 'dataDir'>): Promise<string[]> => storedNames(server, '_uploads');

/** Stored copies of a blob (each a generation of its digest: `<hex>.<generation>`). */
export async function blobCopies(server: Pick<RunningRegistry, 'dataDir'>, digest: string): Promise<string[]> {
  const hex = digest.slice('sha256:'.length);
  return (await storedNames(server, `blobs/sha256/${hex.slice(0, 2)}`)).filter((name) => name.startsWith(`${hex}.`));
}
