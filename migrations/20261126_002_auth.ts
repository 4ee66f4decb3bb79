// Token auth: local users, access rules, robot accounts, refresh tokens, and the audit events
// table that later issues extend (append-only).
import type { Knex } from 'knex';

export const name = '20261126_002_auth';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('users', (t) => {
    t.string('username', 128).primary();
    t.string('password_hash', 255).notNullable();
    t.boolean('admin').notNullable().defaultTo(false);
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  await knex.schema.createTable('access_rules', (t) => {
    t.increments('id').primary();
    t.string('subject', 512).notNullable();
    t.string('repositories', 255).notNullable();
    // comma-separated actions: pull,push,delete,admin
    t.string('actions', 64).notNullable();
    t.bigInteger('created_at').notNullable();
    t.unique(['subject', 'repositories']);
  });

  await knex.schema.createTable('robot_accounts', (t) => {
    t.string('name', 128).primary();
    t.string('secret_hash', 255).notNullable();
    t.string('description', 512).nullable();
    t.string('created_by', 255).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').nullable();
    t.bigInteger('revoked_at').nullable();
  });

  await knex.schema.createTable('refresh_tokens', (t) => {
    t.string('id', 64).primary();
    t.string('secret_hash', 128).notNullable();
    t.string('principal_kind', 16).notNullable();
    t.string('principal_name', 255).notNullable();
    t.string('provider', 16).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('last_used_at').nullable();
    t.bigInteger('revoked_at').nullable();
    t.index(['principal_kind', 'principal_name']);
  });

  await knex.schema.createTable('audit_events', (t) => {
    t.bigIncrements('id').primary();
    t.bigInteger('at').notNullable();
    t.string('type', 64).notNullable();
    t.string('actor', 255).nullable();
    t.string('client_ip', 64).nullable();
    t.string('repository', 255).nullable();
    t.text('details').nullable();
    t.index(['type', 'at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['audit_events', 'refresh_tokens', 'robot_accounts', 'access_rules', 'users']) {
    await knex.schema.dropTableIfExists(table);
  }
}
