// Trust policies: one row per repository pattern, the policy itself (immutable tags, signature
// mode, signers with their keys, trusted root) as a JSON document the trust layer reads.
import type { Knex } from 'knex';

export const name = '20261130_007_trust_policies';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('trust_policies', (t) => {
    t.string('repositories', 255).primary();
    t.text('document').notNullable();
    t.bigInteger('updated_at').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('trust_policies');
}
