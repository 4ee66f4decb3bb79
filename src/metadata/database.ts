// Opens the knex connection for the configured metadata driver and applies migrations.
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import knex, { type Knex } from 'knex';
import pg from 'pg';
import { migrationSource } from '../../migrations/index.js';
import { type CommitBarrier, IMMEDIATE_DURABILITY, WalGroupCommit } from './group-commit.js';

export type DatabaseConfig =
  | {
      driver: 'sqlite';
      path: string;
      /**
       * The server's connection: commits are flushed to disk in groups, off the main thread, by
       * `commitBarrier(db)` before each acknowledgement (see group-commit.ts). Without it every
       * COMMIT flushes itself, which suits a CLI command that writes once and exits.
       */
      groupCommit?: boolean;
    }
  | { driver: 'postgres'; url: string; poolMax: number };

// PostgreSQL returns BIGINT as a string; every bigint here (sizes, epoch ms) fits a JS number.
pg.types.setTypeParser(20, (value: string) => Number(value));

/**
 * knex writes its own warnings to the console (stdout, where the JSON log goes); every failure
 * it would mention also reaches us as a rejected query, which is reported where it matters.
 */
const QUIET: Knex.Logger = { warn: () => undefined, error: () => undefined, deprecate: () => undefined, debug: () => undefined };

const CONNECT_TIMEOUT_MS = 10_000;

/** The PostgreSQL URL each database opened here connects to (migrations lock on a connection of their own). */
const postgresUrls = new WeakMap<Knex, string>();

/** The group commit of each SQLite database opened with `groupCommit`. */
const groupCommits = new WeakMap<Knex, WalGroupCommit>();

/** What a request that wrote waits for before it is answered: nothing unless commits are grouped. */
export function commitBarrier(db: Knex): CommitBarrier {
  return groupCommits.get(db) ?? IMMEDIATE_DURABILITY;
}

export function openDatabase(config: DatabaseConfig): Knex {
  inlineLimits();
  if (config.driver === 'postgres') {
    const db = knex({
      client: 'pg',
      log: QUIET,
      connection: config.url,
      pool: { min: 0, max: config.poolMax },
      acquireConnectionTimeout: CONNECT_TIMEOUT_MS,
    });
    postgresUrls.set(db, config.url);
    return db;
  }
  // It holds password hashes and token digests: readable by the registry's user only.
  mkdirSync(dirname(config.path), { recursive: true, mode: 0o700 });
  closeSync(openSync(config.path, 'a', 0o600));
  const group = config.groupCommit ? new WalGroupCommit(`${config.path}-wal`) : undefined;
  const db = knex({
    client: 'better-sqlite3',
    log: QUIET,
    connection: { filename: config.path },
    useNullAsDefault: true,
    // One connection: SQLite has one writer anyway, and this keeps transactions serialised.
    pool: {
      min: 1,
      max: 1,
      afterCreate: (connection: SqliteConnection, done: (error: Error | null) => void) => {
        cacheStatements(connection, group ? () => group.committed() : undefined);
        connection.pragma('journal_mode = WAL');
        // A manifest or blob acknowledged with 201 survives a power loss, not just a crash: FULL
        // flushes the log in each COMMIT; NORMAL leaves that to the group commit.
        connection.pragma(group ? 'synchronous = NORMAL' : 'synchronous = FULL');
        connection.pragma('foreign_keys = ON');
        connection.pragma('busy_timeout = 5000');
        done(null);
      },
    },
  });
  if (group) groupCommits.set(db, group);
  return db;
}

let limitsInlined = false;

/**
 * SQLite prepares a statement again at every run when its LIMIT is a bound parameter (the plan
 * may depend on it): three times the cost of the lookup itself. knex binds every limit, that of
 * `.first()` too. Its limits are integers (it parses them, and drops anything else), so they are
 * written into the SQL instead, for every knex query of the process.
 */
function inlineLimits(): void {
  if (limitsInlined) return;
  limitsInlined = true;
  type Limit = (this: unknown, value: unknown, options?: { skipBinding?: boolean }) => unknown;
  // The class that defines it, shared by every dialect's builder.
  let builder = Object.getPrototypeOf(knex({ client: 'pg' }).queryBuilder()) as { limit: Limit };
  while (!Object.prototype.hasOwnProperty.call(builder, 'limit')) builder = Object.getPrototypeOf(builder) as { limit: Limit };
  const bound = builder.limit;
  builder.limit = function (value, options) {
    return bound.call(this, value, { skipBinding: true, ...options });
  };
}

interface SqliteConnection {
  pragma(statement: string): unknown;
  prepare(sql: string): SqliteStatement;
  readonly inTransaction: boolean;
}

interface SqliteStatement {
  /** False when running it may change the database (BEGIN and COMMIT count as read-only). */
  readonly readonly: boolean;
  run(...params: unknown[]): { changes: number };
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
  iterate(...params: unknown[]): IterableIterator<unknown>;
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * knex prepares every query anew; compiling the SQL costs more than running an indexed lookup.
 * Statements are reusable and this connection runs one at a time, so keep the recent ones.
 * `committed` hears of each commit that changed something (see CommitCounter).
 */
function cacheStatements(connection: SqliteConnection, committed?: () => void): void {
  const prepare = connection.prepare.bind(connection);
  const counter = committed && new CommitCounter(connection, committed);
  const cache = new Map<string, SqliteStatement>();
  connection.prepare = (sql: string) => {
    let statement = cache.get(sql);
    if (statement === undefined) {
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.clear();
      statement = prepare(sql);
      counter?.watch(sql, statement);
      cache.set(sql, statement);
    }
    return statement;
  };
}

const COMMIT = /^\s*(?:COMMIT|END)\b/i;
/** A whole transaction's rollback, not one to a savepoint. */
const ROLLBACK = /^\s*ROLLBACK(?:\s+TRANSACTION)?\s*;?\s*$/i;

/**
 * Tells the group commit of each commit that changed something, once it is done: a write outside
 * a transaction that changed rows, or a COMMIT of a transaction in which one did. A write that
 * changes nothing (a grace period restarted only when it is old) then costs its request no flush.
 * A write that returns rows (INSERT … RETURNING) runs as a reader, without a count: it counts as
 * a change.
 */
class CommitCounter {
  private changedInTransaction = false;

  constructor(
    private readonly connection: SqliteConnection,
    private readonly committed: () => void,
  ) {}

  /** Called once per prepared statement (they are cached and reused). */
  watch(sql: string, statement: SqliteStatement): void {
    if (COMMIT.test(sql)) {
      const run = statement.run.bind(statement);
      statement.run = (...params) => {
        const result = run(...params);
        if (this.changedInTransaction) this.committed();
        this.changedInTransaction = false;
        return result;
      };
    } else if (ROLLBACK.test(sql)) {
      const run = statement.run.bind(statement);
      statement.run = (...params) => {
        const result = run(...params);
        this.changedInTransaction = false;
        return result;
      };
    } else if (!statement.readonly) {
      const { run, all, get, iterate } = statement;
      statement.run = (...params) => {
        const result = run.apply(statement, params);
        if (result.changes > 0) this.changed();
        return result;
      };
      statement.all = (...params) => {
        const rows = all.apply(statement, params);
        this.changed();
        return rows;
      };
      statement.get = (...params) => {
        const row = get.apply(statement, params);
        this.changed();
        return row;
      };
      statement.iterate = (...params) => {
        this.changed();
        return iterate.apply(statement, params);
      };
    }
  }

  private changed(): void {
    if (this.connection.inTransaction) this.changedInTransaction = true;
    else this.committed();
  }
}

/**
 * Brings the schema to the latest migration. Several replicas may do this at once (each `serve`
 * migrates at start, and `portcullis migrate` may run beside them): on PostgreSQL they take turns,
 * so the first applies what is missing and the others then find nothing to do. knex's own lock
 * would instead fail the second one ("Migration table is already locked"), and two creating its
 * bookkeeping tables at once collide. SQLite has one server process per database: no lock.
 */
export async function migrateToLatest(db: Knex): Promise<string[]> {
  const url = postgresUrls.get(db);
  const latest = async () => ((await db.migrate.latest({ migrationSource })) as [number, string[]])[1];
  return url === undefined ? latest() : holdingMigrationLock(url, latest);
}

/** The advisory lock key every Portcullis migrator takes: the ASCII bytes of "PCMIGRAT". */
export const MIGRATION_LOCK_KEY = BigInt('0x50434d4947524154').toString();

/**
 * Runs `work` holding a session-level advisory lock, on a connection outside the pool (which may
 * have room for one connection only, and migrations need one). The lock waits as long as another
 * migrator works; it is released with the session, so a migrator that dies leaves no lock behind.
 */
async function holdingMigrationLock<T>(url: string, work: () => Promise<T>): Promise<T> {
  const session = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // A connection lost while migrations run must not crash the process; the migrations report their own failure.
  session.on('error', () => undefined);
  await session.connect();
  try {
    await session.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    try {
      return await work();
    } finally {
      await session.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    await session.end().catch(() => undefined);
  }
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
  '57P01', // admin_shutdown (also pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
]);

/**
 * What node-postgres and knex say, without a code, about a connection that is gone: pg refuses
 * further queries on a client whose connection failed ("… is not queryable"), which is what a
 * transaction's ROLLBACK meets after its backend was terminated.
 */
const LOST_CONNECTION = /Timeout acquiring a connection|Connection terminated|connection is closed|is not queryable/i;

/** True for errors meaning "the database cannot serve right now", as opposed to a bug. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
  // Class 08, connection exception: unable to connect, connection failure, rejected, gone.
  if (typeof code === 'string' && /^08[0-9A-Z]{3}$/.test(code)) return true;
  return LOST_CONNECTION.test(error.message);
}
