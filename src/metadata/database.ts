// Opens the knex connection for the configured metadata driver and applies migrations.
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import knex, { type Knex } from 'knex';
import pg from 'pg';
import { migrationSource } from '../../migrations/index.js';

export type DatabaseConfig =
  | { driver: 'sqlite'; path: string }
  | { driver: 'postgres'; url: string; poolMax: number };

// PostgreSQL returns BIGINT as a string; every bigint here (sizes, epoch ms) fits a JS number.
pg.types.setTypeParser(20, (value: string) => Number(value));

/**
 * knex writes its own warnings to the console (stdout, where the JSON log goes); every failure
 * it would mention also reaches us as a rejected query, which is reported where it matters.
 */
const QUIET: Knex.Logger = { warn: () => undefined, error: () => undefined, deprecate: () => undefined, debug: () => undefined };

export function openDatabase(config: DatabaseConfig): Knex {
  if (config.driver === 'postgres') {
    return knex({
      client: 'pg',
      log: QUIET,
      connection: config.url,
      pool: { min: 0, max: config.poolMax },
      acquireConnectionTimeout: 10_000,
    });
  }
  // It holds password hashes and token digests: readable by the registry's user only.
  mkdirSync(dirname(config.path), { recursive: true, mode: 0o700 });
  closeSync(openSync(config.path, 'a', 0o600));
  return knex({
    client: 'better-sqlite3',
    log: QUIET,
    connection: { filename: config.path },
    useNullAsDefault: true,
    // One connection: SQLite has one writer anyway, and this keeps transactions serialised.
    pool: {
      min: 1,
      max: 1,
      afterCreate: (connection: SqliteConnection, done: (error: Error | null) => void) => {
        cacheStatements(connection);
        connection.pragma('journal_mode = WAL');
        // FULL: a manifest or blob acknowledged with 201 survives a power loss, not just a crash.
        connection.pragma('synchronous = FULL');
        connection.pragma('foreign_keys = ON');
        connection.pragma('busy_timeout = 5000');
        done(null);
      },
    },
  });
}

interface SqliteConnection {
  pragma(statement: string): unknown;
  prepare(sql: string): unknown;
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * knex prepares every query anew; compiling the SQL costs more than running an indexed lookup.
 * Statements are reusable and this connection runs one at a time, so keep the recent ones.
 */
function cacheStatements(connection: SqliteConnection): void {
  const prepare = connection.prepare.bind(connection);
  const cache = new Map<string, unknown>();
  connection.prepare = (sql: string) => {
    let statement = cache.get(sql);
    if (statement === undefined) {
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.clear();
      statement = prepare(sql);
      cache.set(sql, statement);
    }
    return statement;
  };
}

export async function migrateToLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'EPIPE',
  'SQLITE_BUSY',
  'SQLITE_IOERR',
  'SQLITE_FULL',
  'SQLITE_CANTOPEN',
  '57P01', // admin_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '08006', // connection_failure
  '08001', // unable to connect
]);

/** True for errors meaning "the database cannot serve right now", as opposed to a bug. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
  return /Timeout acquiring a connection|Connection terminated|connection is closed/i.test(error.message);
}
