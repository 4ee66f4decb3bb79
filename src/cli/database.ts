// The metadata database as the management commands (user, policy, access, keys) see it: it must
// already exist. Only `serve` and `migrate` create a fresh one; a command run with a mistyped
// dataDir would otherwise make an empty database there, report success, and change nothing
// the server sees.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Knex } from 'knex';
import { ConfigError, databaseConfig, sqlitePath } from '../config/config.js';
import { migrateToLatest, openDatabase } from '../metadata/database.js';
import type { CliSettings } from './settings.js';

/** Which setting put the SQLite file where it is, in the words an operator can change. */
function describeOrigin({ config, file, env }: CliSettings): string {
  if (env.PORTCULLIS_METADATA_SQLITE_PATH) return 'metadata.sqlite.path, from PORTCULLIS_METADATA_SQLITE_PATH';
  if (config.metadata.sqlite.path) return `metadata.sqlite.path in ${file ?? 'the configuration'}`;
  if (env.PORTCULLIS_DATA_DIR) return `dataDir ${config.dataDir}, from PORTCULLIS_DATA_DIR`;
  if (file) return `dataDir ${config.dataDir}, from ${file} or the default ./data`;
  return `dataDir ./data in ${resolve('.')}: the default, as no configuration file was given`;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Refuses to go on when the embedded SQLite database does not exist where the settings point,
 * saying where it looked and which settings decide that. PostgreSQL: nothing to check here.
 */
export function requireExistingDatabase(settings: CliSettings): void {
  if (settings.config.metadata.driver !== 'sqlite') return;
  const path = sqlitePath(settings.config);
  if (isFile(path)) return;
  throw new ConfigError(
    `no Portcullis database at ${path} (${describeOrigin(settings)}). Only \`portcullis serve\` and \`portcullis migrate\` create one. ` +
      'To manage an existing registry, point dataDir / PORTCULLIS_DATA_DIR or metadata.sqlite.path / PORTCULLIS_METADATA_SQLITE_PATH ' +
      'at its data, or pass its configuration file with -c FILE / PORTCULLIS_CONFIG.',
  );
}

/** Opens the existing metadata database (see requireExistingDatabase) at the latest schema. */
export async function openExistingDatabase(settings: CliSettings): Promise<Knex> {
  requireExistingDatabase(settings);
  const db = openDatabase(databaseConfig(settings.config));
  try {
    await migrateToLatest(db);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return db;
}
