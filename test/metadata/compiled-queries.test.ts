// What keeps the hot queries cheap: limits written into the SQL (SQLite prepares a statement
// again at every run when its LIMIT is bound), and queries compiled once with their parameters
// bound in the right places.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { openDatabase } from '../../src/metadata/database.js';
import { CompiledQuery } from '../../src/metadata/compiled-query.js';
import { METADATA_BACKENDS } from '../support/metadata-backends.js';

describe('limits in the SQL', () => {
  it('writes every limit as an integer literal, on both dialects, whatever it was given', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-limits-'));
    const sqlite = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
    const postgres = openDatabase({ driver: 'postgres', url: 'postgres://nobody@127.0.0.1:1/none', poolMax: 1 });
    try {
      for (const db of [sqlite, postgres]) {
        const first = db('tags').where({ name: 'x' }).first('id').toSQL();
        assert.match(first.sql, /limit 1$/);
        assert.deepEqual(first.bindings, ['x']);
        assert.match(db('tags').limit(25).toSQL().sql, /limit 25$/);
        assert.match(db('tags').limit('7; drop table tags' as unknown as number).toSQL().sql, /limit 7$/, 'knex keeps the integer only');
      }
    } finally {
      await sqlite.destroy();
      await postgres.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

for (const backend of METADATA_BACKENDS) {
  describe(`CompiledQuery on ${backend.name}`, () => {
    let opened: { db: Knex; close(): Promise<void> };
    before(async () => {
      opened = await backend.open({ migrate: false });
      await opened.db.schema.createTable('pairs', (table) => {
        table.string('left').notNullable();
        table.string('right').notNullable();
        table.integer('n').notNullable();
      });
      await opened.db('pairs').insert([
        { left: 'a', right: 'b', n: 1 },
        { left: 'b', right: 'a', n: 2 },
        { left: 'a', right: 'a', n: 3 },
      ]);
    });
    after(() => opened?.close());

    it('binds each parameter where the builder placed it, keeps the builder constants, and answers rows', async () => {
      const query = new CompiledQuery<'left' | 'right', { n: number }>(opened.db, `test-pairs-${backend.name}`, ['right', 'left'], (db, slot) =>
        db('pairs').where({ left: slot('left'), right: slot('right') }).where('n', '<', 10).first('n'),
      );
      assert.deepEqual(await query.first({ left: 'a', right: 'b' }), { n: 1 });
      assert.deepEqual(await query.first({ left: 'b', right: 'a' }), { n: 2 });
      assert.deepEqual(await query.first({ left: 'a', right: 'a' }), { n: 3 });
      assert.equal(await query.first({ left: 'z', right: 'a' }), undefined);
      // A value that looks like SQL is a value.
      assert.equal(await query.first({ left: "a' or '1'='1", right: 'a' }), undefined);
    });

    it('refuses a parameter the query does not bind', () => {
      assert.throws(
        () => new CompiledQuery<'left' | 'right', unknown>(opened.db, 'test-unbound', ['left', 'right'], (db, slot) => db('pairs').where({ left: slot('left') })),
        /parameters right are not bound/,
      );
    });
  });
}
