// Facts recorded once in the life of a database, starting with "the bootstrap administrator has
// been created": deleting every local user must not make the next start create `admin` again
// with a password from the environment that may be long known.
import type { Knex } from 'knex';

export const name = '20261130_004_admin_state';

/** The fact LocalUsers checks before it creates the bootstrap administrator (its queries live in src/metadata/knex-auth-stores.ts). */
const BOOTSTRAP_KEY = 'bootstrap_admin';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('admin_state', (t) => {
    t.string('key', 64).primary();
    t.string('value', 255).notNullable();
    t.bigInteger('recorded_at').notNullable();
  });
  // A database already in use had its bootstrap (or its own users) before this table existed:
  // only one with nothing in it is fresh.
  for (const table of ['users', 'access_rules', 'robot_accounts', 'audit_events', 'repositories']) {
    if (await knex(table).first()) {
      await knex('admin_state').insert({ key: BOOTSTRAP_KEY, value: `before ${name} (${table} in use)`, recorded_at: Date.now() });
      return;
    }
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('admin_state');
}
