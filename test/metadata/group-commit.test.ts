// The embedded database's group commit: the server's SQLite connection leaves flushing its log
// to a barrier that each request which committed something waits on before it is answered.
// It must count exactly the commits (a barrier that misses one acknowledges a change that a power
// loss could take back), let concurrent waiters share a flush, and report a failed flush.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { commitBarrier, openDatabase } from '../../src/metadata/database.js';
import { WalGroupCommit } from '../../src/metadata/group-commit.js';
import { durableAcknowledgement } from '../../src/http/middleware/durable-acknowledgement.js';
import { RegistryError } from '../../src/registry/errors.js';

describe('SQLite group commit', () => {
  let dir: string;
  let db: Knex;
  let barrier: WalGroupCommit;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-group-commit-'));
    db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db'), groupCommit: true });
    await db.raw('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)');
    const found = commitBarrier(db);
    assert.ok(found instanceof WalGroupCommit);
    barrier = found;
  });
  after(async () => {
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs the connection with synchronous = NORMAL, and FULL without group commit', async () => {
    assert.deepEqual(await db.raw('PRAGMA synchronous'), [{ synchronous: 1 }]);
    const plain = openDatabase({ driver: 'sqlite', path: join(dir, 'plain.db') });
    try {
      assert.deepEqual(await plain.raw('PRAGMA synchronous'), [{ synchronous: 2 }]);
      assert.equal(commitBarrier(plain).mark(), 0, 'no barrier: COMMIT itself is durable');
    } finally {
      await plain.destroy();
    }
  });

  it('counts each autocommit write and each COMMIT, never a read or a rollback', async () => {
    const start = barrier.mark();
    await db('items').select('*');
    await db('items').where({ id: 1 }).first();
    assert.equal(barrier.mark(), start, 'reads commit nothing');

    await db('items').insert({ name: 'a' });
    assert.equal(barrier.mark(), start + 1, 'an autocommit insert');

    await db.transaction(async (trx) => {
      await trx('items').insert({ name: 'b' });
      await trx('items').insert({ name: 'c' });
      assert.equal(barrier.mark(), start + 1, 'nothing is committed before COMMIT');
    });
    assert.equal(barrier.mark(), start + 2, 'one COMMIT');

    await assert.rejects(
      db.transaction(async (trx) => {
        await trx('items').insert({ name: 'd' });
        throw new Error('changed my mind');
      }),
      /changed my mind/,
    );
    assert.equal(barrier.mark(), start + 2, 'a rollback commits nothing');
    assert.equal((await db('items').where({ name: 'd' })).length, 0);
  });

  it('counts a write that changed rows, never one that changed nothing', async () => {
    const start = barrier.mark();
    await db('items').where({ name: 'no such item' }).update({ name: 'x' });
    await db('items').where({ name: 'no such item' }).delete();
    await db('items').insert({ name: 'a' }).onConflict('name').ignore();
    assert.equal(barrier.mark(), start, 'no row changed');
    await db.transaction(async (trx) => {
      await trx('items').where({ name: 'no such item' }).update({ name: 'x' });
    });
    assert.equal(barrier.mark(), start, 'a transaction that changed nothing commits nothing worth a flush');

    await db('items').where({ name: 'a' }).update({ name: 'a2' });
    assert.equal(barrier.mark(), start + 1, 'an update that changed a row');
    const [returned] = (await db('items').insert({ name: 'r1' }).returning('id')) as { id: number }[];
    assert.ok(returned && returned.id > 0);
    assert.equal(barrier.mark(), start + 2, 'INSERT … RETURNING (run as a reader) counts');
    await db.transaction(async (trx) => {
      await trx('items').where({ name: 'no such item' }).delete();
      await trx('items').insert({ name: 'r2' }).returning('id');
    });
    assert.equal(barrier.mark(), start + 3, 'a transaction whose only change returned rows');
    await db.transaction(async (trx) => {
      await trx('items').insert({ name: 'r3' });
      await trx.transaction(async (inner) => {
        await inner('items').where({ name: 'no such item' }).delete();
        throw new Error('inner rolled back to its savepoint');
      }).catch(() => undefined);
    });
    assert.equal(barrier.mark(), start + 4, 'a rollback to a savepoint keeps the outer change');
    assert.equal((await db('items').where({ name: 'r3' })).length, 1);
  });

  it('resolves at once when nothing was committed since the mark', async () => {
    await barrier.durable(barrier.mark()); // settle earlier commits
    const flushes = barrier.flushes;
    const since = barrier.mark();
    await db('items').select('*');
    await barrier.durable(since);
    assert.equal(barrier.flushes, flushes);
  });

  it('lets concurrent writers share flushes, and answers each only after one that began after its commit', async () => {
    await barrier.durable(barrier.mark());
    const flushes = barrier.flushes;
    const writers = 24;
    const order: string[] = [];
    await Promise.all(
      Array.from({ length: writers }, async (_, i) => {
        const since = barrier.mark();
        await db.transaction(async (trx) => {
          await trx('items').insert({ name: `w${i}` });
        });
        const committedAt = barrier.mark();
        await barrier.durable(since);
        // Every commit counted when this writer committed is covered by a finished flush.
        assert.ok(barrierCovers(barrier, committedAt), `writer ${i} answered before its commit was flushed`);
        order.push(`w${i}`);
      }),
    );
    assert.equal(order.length, writers);
    const used = barrier.flushes - flushes;
    assert.ok(used >= 1, 'at least one flush');
    assert.ok(used < writers, `${used} flushes for ${writers} writers: they were not grouped`);
  });

  it('rejects a waiter when the log cannot be flushed, and the HTTP layer answers UNAVAILABLE', async () => {
    const broken = new WalGroupCommit(join(dir, 'portcullis.db', 'not-a-directory-wal'));
    broken.committed();
    await assert.rejects(broken.durable(0), { code: 'ENOTDIR' });

    const middleware = durableAcknowledgement(broken);
    broken.committed();
    const next = async () => broken.committed();
    await assert.rejects(
      middleware({} as never, next),
      (error: unknown) => error instanceof RegistryError && error.code === 'UNAVAILABLE' && /metadata database/.test(error.message),
    );
  });
});

/** Whether every commit up to `position` has been flushed (reads the barrier's private record). */
function barrierCovers(barrier: WalGroupCommit, position: number): boolean {
  return (barrier as unknown as { flushedUpTo: number }).flushedUpTo >= position;
}
