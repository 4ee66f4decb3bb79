// The audit log becomes a hash chain (src/audit/chain.ts): every event stores its position
// (`seq`), the previous event's hash and its own, plus the fields the trust layer records
// (actor kind, tag, old → new digest, outcome, reason). A one-row table holds the chain's head;
// appends lock it (PostgreSQL: SELECT … FOR UPDATE), so concurrent writers, on several replicas
// too, extend one chain.
//
// Events already recorded are chained as they are, deterministically: in the order of their id,
// seq = 1, 2, 3, …, the new fields left null (they were not recorded then), each hashed in the
// canonical form of src/audit/chain.ts. The same table therefore always gets the same chain.
import type { Knex } from 'knex';
import { eventHash, GENESIS_HASH } from '../src/metadata/audit-chain.js';

export const name = '20261130_005_audit_chain';

/** Rows read and chained at a time. */
const CHUNK = 1000;

interface ExistingRow {
  id: number | string;
  at: number | string;
  type: string;
  actor: string | null;
  client_ip: string | null;
  repository: string | null;
  details: string | null;
}

const orUndefined = (value: string | null): string | undefined => value ?? undefined;

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('audit_events', (t) => {
    t.bigInteger('seq').nullable();
    t.string('actor_kind', 16).nullable();
    t.string('tag', 128).nullable();
    t.string('old_digest', 160).nullable();
    t.string('new_digest', 160).nullable();
    t.string('outcome', 16).nullable();
    t.string('reason', 512).nullable();
    t.string('prev_hash', 64).nullable();
    t.string('hash', 64).nullable();
  });

  await knex.schema.createTable('audit_chain_head', (t) => {
    // Always 1: one chain, one row to lock.
    t.integer('id').primary();
    t.bigInteger('seq').notNullable();
    t.string('hash', 64).notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  let seq = 0;
  let previous = GENESIS_HASH;
  let lastId = 0;
  for (;;) {
    const rows = (await knex('audit_events')
      .where('id', '>', lastId)
      .orderBy('id')
      .limit(CHUNK)
      .select('id', 'at', 'type', 'actor', 'client_ip', 'repository', 'details')) as ExistingRow[];
    if (rows.length === 0) break;
    for (const row of rows) {
      seq++;
      const hash = eventHash({
        seq,
        prevHash: previous,
        at: Number(row.at),
        type: row.type,
        actor: orUndefined(row.actor),
        clientIp: orUndefined(row.client_ip),
        repository: orUndefined(row.repository),
        details: orUndefined(row.details),
      });
      await knex('audit_events').where({ id: row.id }).update({ seq, prev_hash: previous, hash });
      previous = hash;
      lastId = Number(row.id);
    }
  }
  await knex('audit_chain_head').insert({ id: 1, seq, hash: previous, updated_at: Date.now() });

  await knex.schema.alterTable('audit_events', (t) => {
    t.unique(['seq']);
    // The admin API's filters, newest first.
    t.index(['type', 'seq']);
    t.index(['repository', 'seq']);
    t.index(['actor', 'seq']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('audit_chain_head');
  await knex.schema.alterTable('audit_events', (t) => {
    t.dropIndex(['actor', 'seq']);
    t.dropIndex(['repository', 'seq']);
    t.dropIndex(['type', 'seq']);
    t.dropUnique(['seq']);
    for (const column of ['hash', 'prev_hash', 'reason', 'outcome', 'new_digest', 'old_digest', 'tag', 'actor_kind', 'seq']) t.dropColumn(column);
  });
}
