// Rows of the tables on a push's path as both database drivers return them, and the records
// the store hands out.
import type { UploadPart } from '../storage/blob-store.js';
import type { BlobRecord, UploadRecord } from './store.js';

export interface BlobRow {
  digest: string;
  size: number | string;
  storage_key: string;
  sealed?: number | boolean;
}

export interface UploadRow {
  id: string;
  repository: string;
  size: number | string;
  parts: string | null;
  owner: string | null;
  created_at: number | string;
  updated_at: number | string;
}

export const toBlob = (row: BlobRow): BlobRecord => ({
  digest: row.digest,
  size: Number(row.size),
  storageKey: row.storage_key,
  sealed: Boolean(row.sealed),
});

export const toUpload = (row: UploadRow): UploadRecord => ({
  id: row.id,
  repository: row.repository,
  size: Number(row.size),
  parts: row.parts ? (JSON.parse(row.parts) as UploadPart[]) : [],
  owner: row.owner ?? '',
  createdAt: Number(row.created_at),
  updatedAt: Number(row.updated_at),
});
