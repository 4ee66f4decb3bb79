// A fresh PostgreSQL database per test file, on the server this machine already runs on
// 127.0.0.1:5432 (trust auth). Dropped again when the test is done.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const POSTGRES_SERVER = process.env.PORTCULLIS_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432';

export interface TestDatabase {
  /** Connection URL of the new database, for PORTCULLIS_METADATA_POSTGRES_URL. */
  url: string;
  name: string;
  /** Runs one statement on the test database (to inspect or damage what the registry stored). */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  drop(): Promise<void>;
}

async function onServer<T>(database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: `${POSTGRES_SERVER}/${database}` });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `portcullis_test_${Date.now()}_${randomBytes(4).toString('hex')}`;
  await onServer('postgres', (client) => client.query(`CREATE DATABASE ${name}`));
  return {
    url: `${POSTGRES_SERVER}/${name}`,
    name,
    query: (sql, values) => onServer(name, (client) => client.query(sql, values)),
    async drop() {
      await onServer('postgres', (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** Environment for startPortcullis that puts its metadata in this database. */
export function postgresEnv(database: TestDatabase): Record<string, string> {
  return { PORTCULLIS_METADATA_DRIVER: 'postgres', PORTCULLIS_METADATA_POSTGRES_URL: database.url };
}
