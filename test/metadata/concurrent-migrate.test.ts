// Several replicas bring one PostgreSQL database to the latest schema at once, as they do when a
// deployment starts them together: `portcullis migrate` and `serve` take turns on an advisory
// lock, so each succeeds, the first applies every migration exactly once and the others find
// nothing to do. Without it the later ones fail: on a fresh database their creations of knex's
// bookkeeping tables collide; later, knex's own lock refuses them ("Migration table is already locked").
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { migrationSource } from '../../migrations/index.js';
import { MIGRATION_LOCK_KEY } from '../../src/metadata/database.js';
import { getToken } from '../auth/support.js';
import { runCli, type CliResult } from '../support/cli.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

const migrationNames = async (): Promise<string[]> => (await migrationSource.getMigrations([])).map((m) => migrationSource.getMigrationName(m));

describe('migrations run by several replicas at once on PostgreSQL', () => {
  let dataDir: string;
  const databases: TestDatabase[] = [];

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'portcullis-migrate-'));
  });
  after(async () => {
    await Promise.all(databases.map((database) => database.drop()));
    await rm(dataDir, { recursive: true, force: true });
  });

  async function freshDatabase(): Promise<TestDatabase> {
    const database = await createTestDatabase();
    databases.push(database);
    return database;
  }

  const migrate = (database: TestDatabase, env: Record<string, string> = {}): Promise<CliResult> =>
    runCli(['migrate'], { dataDir, env: { ...postgresEnv(database), ...env } });

  /** Every migration is recorded exactly once, in one batch. */
  async function assertMigratedOnce(database: TestDatabase): Promise<void> {
    const { rows } = await database.query<{ name: string; batch: number }>('SELECT name, batch FROM knex_migrations ORDER BY id');
    assert.deepEqual(rows.map((row) => row.name), await migrationNames());
    assert.deepEqual(new Set(rows.map((row) => row.batch)), new Set([1]));
  }

  /** One migrate run applied everything (or none did, when `appliedElsewhere`), every other found the database up to date. */
  function assertOneApplied(results: CliResult[], names: string[], appliedElsewhere = false): void {
    for (const result of results) assert.equal(result.code, 0, `migrate failed: ${result.stderr}`);
    const applied = results.filter((result) => result.stdout.startsWith('applied:'));
    assert.equal(applied.length, appliedElsewhere ? 0 : 1, results.map((result) => result.stdout).join(''));
    if (!appliedElsewhere) assert.equal(applied[0]?.stdout.trim(), `applied: ${names.join(', ')}`);
    assert.equal(results.filter((result) => result.stdout.trim() === 'database is up to date').length, results.length - applied.length);
  }

  it('lets four `portcullis migrate` and two `portcullis serve` started together on a fresh database all succeed, migrating once', async () => {
    const database = await freshDatabase();
    const servers: RunningRegistry[] = [];
    try {
      // One migrator with a pool of one connection: the lock is held on a connection of its own.
      const migrations = Promise.all([migrate(database, { PORTCULLIS_METADATA_POSTGRES_POOL_MAX: '1' }), migrate(database), migrate(database), migrate(database)]);
      const started = await Promise.allSettled([0, 1].map(() => startPortcullis({ env: postgresEnv(database) })));
      for (const result of started) if (result.status === 'fulfilled') servers.push(result.value);
      for (const result of started) if (result.status === 'rejected') throw result.reason;
      const results = await migrations;

      const names = await migrationNames();
      const migratedByServer = servers.filter((server) => server.output().includes('"msg":"database migrated"')).length;
      assert.ok(migratedByServer <= 1, 'at most one server applied migrations');
      assertOneApplied(results, names, migratedByServer === 1);
      await assertMigratedOnce(database);
      const { rows } = await database.query<{ username: string; admin: boolean }>('SELECT username, admin FROM users');
      assert.deepEqual(rows, [{ username: 'admin', admin: true }], 'one bootstrap administrator');
      for (const server of servers) {
        const token = await getToken(server.url, server.admin, ['registry:catalog:*']);
        const catalog = await fetch(`${server.url}/v2/_catalog`, { headers: { Authorization: `Bearer ${token.token}` } });
        assert.equal(catalog.status, 200, await catalog.text());
      }
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
    }
  });

  it('makes a migrator wait while another holds the migration lock, then finds nothing left to do', async () => {
    const database = await freshDatabase();
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
      let finished = 0;
      const waiting = [migrate(database), migrate(database)].map((run) => run.finally(() => finished++));
      // Both queue behind the held lock (or, were there no lock, finish without waiting).
      for (;;) {
        const { rows } = await holder.query<{ waiting: number }>(
          "SELECT count(*)::int AS waiting FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        if (rows[0]?.waiting === 2 || finished > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(finished, 0, 'no migrator went ahead while the lock was held');
      const { rows } = await database.query<{ present: boolean }>("SELECT to_regclass('knex_migrations') IS NOT NULL AS present");
      assert.equal(rows[0]?.present, false, 'nothing was created while the lock was held');
      await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
      assertOneApplied(await Promise.all(waiting), await migrationNames());
      await assertMigratedOnce(database);
    } finally {
      await holder.end();
    }
  });
});
