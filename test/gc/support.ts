// The garbage collector's test bench: the registry domain and a collector in one process, on the
// two backend pairs Portcullis runs on (SQLite + a folder, PostgreSQL + S3 on the run's Ceph
// gateway), with the helpers a test needs to push images and to look at what is stored.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Knex } from 'knex';
import { pino } from 'pino';
import { Collector, createCollector, type GcHooks, type GcPoint } from '../../src/gc/index.js';
import type { CollectorOptions, GcReport } from '../../src/gc/collector.js';
import type { GcSettings } from '../../src/gc/settings.js';
import { KnexMetadataStore } from '../../src/metadata/knex-store.js';
import { createRegistry, type Registry } from '../../src/registry/index.js';
import { parseDigest } from '../../src/registry/reference.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { FilesystemBlobStore } from '../../src/storage/filesystem.js';
import { S3BlobStore } from '../../src/storage/s3.js';
import { METADATA_BACKENDS } from '../support/metadata-backends.js';
import { freshBucket } from '../support/s3.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const quiet = pino({ level: 'silent' });
export const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** A grace of 0 and no untagged deletion: what each test then changes. */
export const SETTINGS: GcSettings = { graceMs: 0, intervalMs: 0, untagged: { default: 'keep', delete: [], keep: [] } };

export interface Bench {
  db: Knex;
  store: BlobStore;
  registry: Registry;
  metadata: KnexMetadataStore;
  /** A collector on this bench (grace 0 unless the settings say otherwise). */
  collector(settings?: Partial<GcSettings>, tuning?: Partial<Omit<CollectorOptions, 'gc' | 'store' | 'settings' | 'log'>>): Collector;
  /** Committed objects in storage: key → size. */
  stored(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

export interface BackendPair {
  name: string;
  postgres: boolean;
  open(): Promise<Bench>;
}

function bench(db: Knex, store: BlobStore, close: () => Promise<void>): Bench {
  const metadata = new KnexMetadataStore(db);
  const registry = createRegistry({ metadata, store, log: quiet, pageMaxEntries: 1000, uploads: { maxOpenPerOwner: 1000 }, referrersPageMaxBytes: 1 << 20 });
  return {
    db,
    store,
    registry,
    metadata,
    collector: (settings = {}, tuning = {}) => createCollector({ db, store, settings: { ...SETTINGS, ...settings }, log: quiet, tuning }),
    async stored() {
      const objects = new Map<string, number>();
      for await (const object of store.listCommitted()) objects.set(object.key, object.size);
      return objects;
    },
    close,
  };
}

const [sqlite, postgres] = METADATA_BACKENDS as [(typeof METADATA_BACKENDS)[0], (typeof METADATA_BACKENDS)[0]];

export const BACKEND_PAIRS: BackendPair[] = [
  {
    name: 'SQLite + filesystem',
    postgres: false,
    async open() {
      const { db, close } = await sqlite.open();
      const root = await mkdtemp(join(tmpdir(), 'portcullis-gc-'));
      const store = new FilesystemBlobStore(root);
      await store.init();
      return bench(db, store, async () => {
        await close();
        await rm(root, { recursive: true, force: true });
      });
    },
  },
  {
    name: 'PostgreSQL + S3',
    postgres: true,
    async open() {
      const [{ db, close }, bucket] = await Promise.all([postgres.open(), freshBucket('gc')]);
      const store = new S3BlobStore({ ...bucket.settings, prefix: 'registry/' });
      return bench(db, store, async () => {
        store.close();
        await close();
        await bucket.remove();
      });
    },
  },
];

export const randomRepository = (prefix = 'gc'): string => `${prefix}/${randomBytes(4).toString('hex')}`;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** Uploads bytes as a client does (monolithic POST ?digest=). */
export async function pushBlob(registry: Registry, repository: string, bytes: Buffer, mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip'): Promise<Descriptor> {
  const digest = sha256(bytes);
  await registry.uploads.monolithic(repository, parseDigest(digest), { body: Readable.from([bytes]), length: bytes.length });
  return { mediaType, digest, size: bytes.length };
}

export interface PushedImage {
  descriptor: Descriptor;
  payload: Buffer;
  config: Descriptor;
  layers: Descriptor[];
}

/** An image manifest over a config and `layers` (pushed first unless `pushLayers` is false). */
export async function pushImage(
  registry: Registry,
  repository: string,
  reference: string | undefined,
  options: { layers?: Buffer[]; pushLayers?: boolean; subject?: Descriptor; artifactType?: string } = {},
): Promise<PushedImage> {
  const layerBytes = options.layers ?? [randomBytes(300)];
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomUUID() }));
  const config: Descriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(configBytes), size: configBytes.length };
  const layers = layerBytes.map((bytes) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(bytes), size: bytes.length }));
  if (options.pushLayers !== false) {
    await pushBlob(registry, repository, configBytes, config.mediaType);
    for (const bytes of layerBytes) await pushBlob(registry, repository, bytes);
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    ...(options.artifactType ? { artifactType: options.artifactType } : {}),
    config,
    layers,
    ...(options.subject ? { subject: options.subject } : {}),
  };
  const payload = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(payload);
  await putManifest(registry, repository, reference ?? digest, payload, OCI_MANIFEST);
  return { descriptor: { mediaType: OCI_MANIFEST, digest, size: payload.length }, payload, config, layers };
}

export async function putManifest(registry: Registry, repository: string, reference: string, payload: Buffer, mediaType: string): Promise<void> {
  await registry.manifests.put(repository, reference, mediaType, payload);
}

/** An index over `children` (already in the repository). */
export async function pushIndex(registry: Registry, repository: string, reference: string | undefined, children: Descriptor[]): Promise<Descriptor> {
  const payload = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }));
  const digest = sha256(payload);
  await putManifest(registry, repository, reference ?? digest, payload, OCI_INDEX);
  return { mediaType: OCI_INDEX, digest, size: payload.length };
}

/** Reads a blob through the registry, whole, and checks it is what its digest says. */
export async function pull(registry: Registry, repository: string, digest: string): Promise<Buffer> {
  const blob = await registry.blobs.stat(repository, parseDigest(digest));
  const chunks: Buffer[] = [];
  for await (const chunk of await registry.blobs.open(blob)) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  assert.equal(sha256(bytes), digest, `the bytes of ${digest} in ${repository}`);
  return bytes;
}

/** Pulls an image whole: the manifest by digest, then its config and every layer. */
export async function pullImage(registry: Registry, repository: string, image: Pick<PushedImage, 'descriptor' | 'config' | 'layers'>): Promise<void> {
  const manifest = await registry.manifests.get(repository, image.descriptor.digest);
  assert.equal(manifest.digest, image.descriptor.digest);
  for (const blob of [image.config, ...image.layers]) await pull(registry, repository, blob.digest);
}

/** Whether a repository links a blob (the only way it is readable there). */
export async function linked(bench: Pick<Bench, 'metadata'>, repository: string, digest: string): Promise<boolean> {
  return (await bench.metadata.findRepositoryBlob(repository, digest)) !== undefined;
}

/** The storage key of a digest's row, if there is one. */
export async function storageKeyOf(db: Knex, digest: string): Promise<string | undefined> {
  const row = (await db('blobs').where({ digest }).first('storage_key')) as { storage_key: string } | undefined;
  return row?.storage_key;
}

/** Moves the grace start of every queued review back, so it is due under `graceMs`. */
export async function ageReviews(db: Knex, byMs: number): Promise<void> {
  for (const table of ['gc_blob_reviews', 'gc_manifest_reviews']) await db(table).update({ touched_at: db.raw('touched_at - ?', [byMs]) });
}

/**
 * The whole database and store are consistent: every blob a manifest references is linked in the
 * manifest's repository, has its row and its bytes (of the recorded size); every child manifest
 * is there; every row's key is stored; everything stored is named by a row or waits in the outbox
 * (the bytes of deleted rows wait out the backup window when the grace is not 0), and no outbox
 * key is a row's.
 */
export async function assertConsistent(bench: Pick<Bench, 'db' | 'stored'>): Promise<void> {
  const { db } = bench;
  const missingLinks = (await db('manifest_references as mr')
    .join('manifests as m', 'm.id', 'mr.manifest_id')
    .leftJoin('repository_blobs as rb', (on) => on.on('rb.repository_id', 'm.repository_id').andOn('rb.digest', 'mr.digest'))
    .where('mr.kind', 'blob')
    .whereNull('rb.digest')
    .select('m.digest as manifest', 'mr.digest as blob')) as unknown[];
  assert.deepEqual(missingLinks, [], 'every referenced blob is linked where it is referenced');
  const missingChildren = (await db('manifest_references as mr')
    .join('manifests as m', 'm.id', 'mr.manifest_id')
    .leftJoin('manifests as c', (on) => on.on('c.repository_id', 'm.repository_id').andOn('c.digest', 'mr.digest'))
    .where('mr.kind', 'manifest')
    .whereNull('c.id')
    .select('m.digest as manifest', 'mr.digest as child')) as unknown[];
  assert.deepEqual(missingChildren, [], 'every child manifest is there');
  const rows = (await db('blobs').select('digest', 'storage_key', 'size')) as { digest: string; storage_key: string; size: number | string }[];
  const stored = await bench.stored();
  for (const row of rows) assert.equal(stored.get(row.storage_key), Number(row.size), `the bytes of ${row.digest} are stored whole`);
  const named = new Set(rows.map((row) => row.storage_key));
  const outbox = (await db('gc_storage_deletes').pluck('storage_key')) as string[];
  assert.deepEqual(outbox.filter((key) => named.has(key)), [], 'no row names a key whose bytes are to be deleted');
  for (const key of outbox) named.add(key);
  assert.deepEqual([...stored.keys()].filter((key) => !named.has(key)), [], 'nothing stored that no row names');
}

/** Collects until a collection changes nothing more (cascades take one run per level). */
export async function collectAll(collector: Collector): Promise<GcReport[]> {
  const reports: GcReport[] = [];
  for (let i = 0; i < 10; i++) {
    const report = await collector.collect();
    reports.push(report);
    if (report.manifests.reviewed === 0 && report.blobLinks.reviewed === 0 && report.storage.objects === 0) return reports;
  }
  throw new Error('garbage collection did not settle in 10 runs');
}

/** A hook point a test waits for, then releases: an interleaving made deterministic. */
export class Gate {
  private reached!: () => void;
  private release!: () => void;
  readonly arrived = new Promise<void>((resolve) => (this.reached = resolve));
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));

  /** Called from the hook: tells the test, then waits for it. */
  async pass(): Promise<void> {
    this.reached();
    await this.released;
  }

  open(): void {
    this.release();
  }
}

/** Hooks that pause once at the first point `matches` accepts. */
export function pauseAt(matches: (point: GcPoint) => boolean, gate: Gate): GcHooks {
  let paused = false;
  return {
    async at(point) {
      if (paused || !matches(point)) return;
      paused = true;
      await gate.pass();
    },
  };
}
