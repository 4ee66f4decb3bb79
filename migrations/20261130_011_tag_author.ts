// Who last pointed each tag where it points: the console and the signature report show it beside
// when. Nullable: tags set before this migration, and by a pusher without a name, have none.
import type { Knex } from 'knex';

export const name = '20261130_011_tag_author';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tags', (t) => {
    t.string('updated_by', 255).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tags', (t) => {
    t.dropColumn('updated_by');
  });
}
