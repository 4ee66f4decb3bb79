// A garbage collector beside a running test server, as `portcullis gc` runs beside `serve`: the
// server's settings (its data folder, and on the PostgreSQL + S3 pass its database and bucket),
// the same database and blob store opened the way the command opens them (src/cli/gc.ts).
import type { Knex } from 'knex';
import { storageSettings } from '../../src/config/config.js';
import { openExistingDatabase } from '../../src/cli/database.js';
import { loadSettings } from '../../src/cli/settings.js';
import { createCollector, type Collector } from '../../src/gc/index.js';
import type { CollectorOptions } from '../../src/gc/collector.js';
import type { GcSettings } from '../../src/gc/settings.js';
import { openBlobStore } from '../../src/storage/index.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { backendEnvOf, type RunningRegistry } from '../support/server.js';
import { quiet } from './support.js';

export interface BesideServer {
  db: Knex;
  store: BlobStore;
  collector(settings: GcSettings, tuning?: Partial<Omit<CollectorOptions, 'gc' | 'store' | 'settings' | 'log'>>): Collector;
  /** Committed objects in the server's storage: key → size. */
  stored(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

export async function besideServer(server: Pick<RunningRegistry, 'dataDir'>): Promise<BesideServer> {
  const settings = loadSettings(undefined, { PORTCULLIS_DATA_DIR: server.dataDir, PORTCULLIS_LOG_LEVEL: 'silent', ...backendEnvOf(server.dataDir) });
  const db = await openExistingDatabase(settings);
  const blobs = await openBlobStore(storageSettings(settings.config));
  return {
    db,
    store: blobs.store,
    collector: (gc, tuning = {}) => createCollector({ db, store: blobs.store, settings: gc, log: quiet, tuning }),
    async stored() {
      const objects = new Map<string, number>();
      for await (const object of blobs.store.listCommitted()) objects.set(object.key, object.size);
      return objects;
    },
    async close() {
      blobs.close();
      await db.destroy();
    },
  };
}
