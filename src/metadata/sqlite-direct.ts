// Statements run straight on the SQLite connection that knex holds, without knex in between.
//
// Through knex a statement costs the event loop ~35 µs (query builder, runner, connection pool,
// a chain of promises), a transaction another ~90 µs, while SQLite itself answers an indexed
// lookup in a few: on the embedded default, knex was over a quarter of the main thread's time in
// a run of small pushes (bench/README.md, "Hot paths"). The busiest store methods therefore run
// their statements here, synchronously, in one go.
//
// The connection is taken from knex's pool like any query's (the pool holds exactly one), so work
// here is serialised with knex's queries and transactions exactly as they are among themselves:
// nothing interleaves with a knex transaction in progress, and vice versa. Statements go through
// the connection's `prepare`, so they share its statement cache and the group commit counts their
// commits (database.ts).
import type { Knex } from 'knex';

/** The statements of one unit of work; parameters are bound in order (`?`). */
export interface DirectSql {
  get<Row>(sql: string, ...params: SqlValue[]): Row | undefined;
  all<Row>(sql: string, ...params: SqlValue[]): Row[];
  /** Runs a statement that writes; how many rows it changed. */
  run(sql: string, ...params: SqlValue[]): number;
}

/** What better-sqlite3 binds (it refuses booleans: SQLite stores them as 0 and 1). */
export type SqlValue = string | number | bigint | Buffer | null;

interface Connection {
  prepare(sql: string): Statement;
  readonly inTransaction: boolean;
}

interface Statement {
  get(...params: SqlValue[]): unknown;
  all(...params: SqlValue[]): unknown[];
  run(...params: SqlValue[]): { changes: number };
}

interface Pool {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
}

/** Another process holds the write lock for longer than busy_timeout: the work runs again. */
const BUSY_ATTEMPTS = 5;

/** SQLite's answers when another process holds the write lock or committed under a reader's feet. */
function isSqliteBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code === 'SQLITE_LOCKED');
}

/** Runs `work` again, after a short pause, while SQLite answers busy (a few times). */
export async function retryWhileBusy<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (!isSqliteBusy(error) || attempt >= BUSY_ATTEMPTS) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt + Math.random() * 30));
    }
  }
}

export class SqliteDirect {
  /** The direct path of an SQLite database opened by knex; undefined for any other database. */
  static of(db: Knex): SqliteDirect | undefined {
    return db.client.config.client === 'better-sqlite3' ? new SqliteDirect(db.client as Pool) : undefined;
  }

  private constructor(private readonly pool: Pool) {}

  /** Statements outside a transaction: reads, or one write (it is its own transaction). */
  run<T>(work: (sql: DirectSql) => T): Promise<T> {
    return this.withConnection((connection) => work(statementsOf(connection)));
  }

  /**
   * A transaction that writes. BEGIN IMMEDIATE takes the write lock first: another process (a
   * `portcullis gc` beside the server) writing meanwhile is waited for (busy_timeout) instead of
   * failing the transaction when it upgrades from reading to writing; should SQLite still refuse,
   * the whole transaction runs again. Anything `work` throws rolls everything back.
   */
  transaction<T>(work: (sql: DirectSql) => T): Promise<T> {
    return retryWhileBusy(() =>
      this.withConnection((connection) => {
        connection.prepare('BEGIN IMMEDIATE').run();
        try {
          const result = work(statementsOf(connection));
          connection.prepare('COMMIT').run();
          return result;
        } catch (error) {
          if (connection.inTransaction) connection.prepare('ROLLBACK').run();
          throw error;
        }
      }),
    );
  }

  private async withConnection<T>(use: (connection: Connection) => T): Promise<T> {
    const connection = (await this.pool.acquireConnection()) as Connection;
    try {
      return use(connection);
    } finally {
      await this.pool.releaseConnection(connection);
    }
  }
}

function statementsOf(connection: Connection): DirectSql {
  return {
    get: <Row>(sql: string, ...params: SqlValue[]) => connection.prepare(sql).get(...params) as Row | undefined,
    all: <Row>(sql: string, ...params: SqlValue[]) => connection.prepare(sql).all(...params) as Row[],
    run: (sql: string, ...params: SqlValue[]) => connection.prepare(sql).run(...params).changes,
  };
}
