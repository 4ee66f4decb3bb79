// The login throttle's counters (src/auth/login-throttle.ts), in the database every replica
// shares, so failures counted by one server hold back the next attempt on another and survive a
// restart. The rows are written by rate-limiter-flexible (RateLimiterPostgres, RateLimiterSQLite):
// its layout, column for column in its order (its PostgreSQL upsert inserts VALUES by position).
// It is told the table exists and never creates one itself. Keys are digests: no user name or
// address is stored in clear.
import type { Knex } from 'knex';

export const name = '20261130_009_login_throttle';

/** The table rate-limiter-flexible is given as `tableName`. */
export const LOGIN_THROTTLE_TABLE = 'login_throttle';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable(LOGIN_THROTTLE_TABLE, (t) => {
    t.string('key', 255).primary();
    t.integer('points').notNullable().defaultTo(0);
    /** epoch milliseconds after which the row no longer counts */
    t.bigInteger('expire').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists(LOGIN_THROTTLE_TABLE);
}
