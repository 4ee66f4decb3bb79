// Upload sessions become a list of immutable parts (one per request that wrote to the session), so
// a request that lost its claim can only ever write into a part nobody will use; sessions record
// who opened them, for the per-principal cap. Blobs remember whether their stored copy was
// written by the sealed-parts code (`sealed`): copies from before may be longer than their
// recorded size, and are checked before deduplication reuses them.
import type { Knex } from 'knex';

export const name = '20261130_003_upload_parts';

export async function up(knex: Knex): Promise<void> {
  // Sessions in flight used the old single-file layout; clients restart such uploads (404).
  await knex('uploads').delete();
  await knex.schema.alterTable('uploads', (t) => {
    // JSON list of {name, size}, in byte order
    t.text('parts').nullable();
    t.string('owner', 320).nullable();
    t.index(['owner']);
  });
  await knex.schema.alterTable('blobs', (t) => {
    t.boolean('sealed').notNullable().defaultTo(false);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('blobs', (t) => {
    t.dropColumn('sealed');
  });
  await knex.schema.alterTable('uploads', (t) => {
    t.dropIndex(['owner']);
    t.dropColumn('owner');
    t.dropColumn('parts');
  });
}
