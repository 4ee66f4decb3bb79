// SQLite's direct path around knex (src/metadata/sqlite-direct.ts). Its statements share knex's
// one connection: they must never run inside a knex transaction that is in progress (they would
// commit or roll back with it), a knex query must never run inside one of theirs, a failure must
// roll everything back, and the group commit must count their commits like any other.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { commitBarrier, openDatabase } from '../../src/metadata/database.js';
import { SqliteDirect } from '../../src/metadata/sqlite-direct.js';

describe('SQLite direct path', () => {
  let dir: string;
  let db: Knex;
  let direct: SqliteDirect;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-sqlite-direct-'));
    db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db'), groupCommit: true });
    await db.raw('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)');
    const found = SqliteDirect.of(db);
    assert.ok(found, 'an SQLite database has the direct path');
    direct = found;
  });
  after(async () => {
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  const names = async () => ((await db('items').orderBy('id').select('name')) as { name: string }[]).map((row) => row.name);

  it('is offered for SQLite only', () => {
    const postgres = openDatabase({ driver: 'postgres', url: 'postgres://127.0.0.1:1/none', poolMax: 1 });
    try {
      assert.equal(SqliteDirect.of(postgres), undefined);
    } finally {
      void postgres.destroy();
    }
  });

  it('waits for a knex transaction in progress, and is not part of it', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const order: string[] = [];
    const knexSide = db
      .transaction(async (trx) => {
        await trx('items').insert({ name: 'knex-rolled-back' });
        entered();
        await held;
        order.push('knex transaction ends');
        throw new Error('roll back');
      })
      .catch(() => undefined);
    await inside;
    const directSide = direct.transaction((sql) => {
      order.push('direct transaction runs');
      sql.run('insert into items (name) values (?)', 'direct');
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(order, [], 'the direct transaction waits for the connection');
    release();
    await Promise.all([knexSide, directSide]);
    assert.deepEqual(order, ['knex transaction ends', 'direct transaction runs']);
    assert.deepEqual(await names(), ['direct'], "the knex rollback did not take the direct path's insert with it");
  });

  it('rolls a failed transaction back whole, and goes on serving', async () => {
    await assert.rejects(
      direct.transaction((sql) => {
        sql.run('insert into items (name) values (?)', 'half');
        sql.run('insert into items (name) values (?)', 'direct'); // UNIQUE: fails
      }),
      /UNIQUE/,
    );
    assert.deepEqual(await names(), ['direct'], 'nothing of the failed transaction stays');
    assert.equal(await direct.run((sql) => sql.get<{ n: number }>('select count(*) as n from items')?.n), 1);
    await db('items').insert({ name: 'knex-after' });
    assert.deepEqual(await names(), ['direct', 'knex-after'], 'knex is not left inside a transaction');
  });

  it('runs a knex query issued meanwhile after its transaction, never inside it', async () => {
    const knexQuery = db('items').insert({ name: 'queued' });
    const directSide = direct.transaction((sql) => {
      sql.run('insert into items (name) values (?)', 'first');
      return sql.all<{ name: string }>('select name from items order by id').map((row) => row.name);
    });
    const [, seen] = await Promise.all([knexQuery, directSide]);
    assert.ok(!seen.includes('queued'), 'the knex insert did not run inside the direct transaction');
    assert.ok((await names()).includes('queued'));
  });

  it('has its commits counted by the group commit, reads not', async () => {
    const barrier = commitBarrier(db);
    const start = barrier.mark();
    await direct.run((sql) => sql.all('select * from items'));
    assert.equal(barrier.mark(), start, 'a read commits nothing');
    assert.equal(await direct.run((sql) => sql.run('update items set name = name where name = ?', 'nobody')), 0);
    assert.equal(barrier.mark(), start, 'a write that changed nothing');
    await direct.run((sql) => sql.run('insert into items (name) values (?)', 'autocommit'));
    assert.equal(barrier.mark(), start + 1, 'an autocommit write');
    await direct.transaction((sql) => {
      sql.run('insert into items (name) values (?)', 'in-transaction-1');
      sql.run('insert into items (name) values (?)', 'in-transaction-2');
    });
    assert.equal(barrier.mark(), start + 2, 'one COMMIT');
    await direct.transaction(() => {
      throw new Error('nothing written');
    }).catch(() => undefined);
    assert.equal(barrier.mark(), start + 2, 'a rollback commits nothing');
    await barrier.durable(start);
  });
});
