// A fresh, migrated metadata database on each backend, for tests of the stores themselves: SQLite
// in a temp folder, and a new database on the PostgreSQL server this machine runs.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { createTestDatabase } from './postgres.js';

export interface MetadataBackend {
  name: 'SQLite' | 'PostgreSQL';
  /** A new database, migrated unless `migrate` is false; `close` destroys the pool and the data. */
  open(options?: { migrate?: boolean }): Promise<{ db: Knex; close(): Promise<void> }>;
}

export const METADATA_BACKENDS: MetadataBackend[] = [
  {
    name: 'SQLite',
    async open({ migrate = true } = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'portcullis-metadata-'));
      const db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
      if (migrate) await migrateToLatest(db);
      return {
        db,
        async close() {
          await db.destroy();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    async open({ migrate = true } = {}) {
      const database = await createTestDatabase();
      const db = openDatabase({ driver: 'postgres', url: database.url, poolMax: 4 });
      if (migrate) await migrateToLatest(db);
      return {
        db,
        async close() {
          await db.destroy();
          await database.drop();
        },
      };
    },
  },
];
