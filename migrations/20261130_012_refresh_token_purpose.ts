// What a refresh token is for: `registry` (docker login's offline tokens, the OAuth2 grant) or
// `console` (a web console sign-in in a cookie). Each is redeemed only where it belongs, and
// each has its own newest-N limit per principal, so console sign-ins never push out CI logins.
import type { Knex } from 'knex';

export const name = '20261130_012_refresh_token_purpose';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('refresh_tokens', (t) => {
    t.string('purpose', 16).notNullable().defaultTo('registry');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('refresh_tokens', (t) => {
    t.dropColumn('purpose');
  });
}
