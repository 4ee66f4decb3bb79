// Registry core schema. Written for both SQLite (embedded) and PostgreSQL: portable column types,
// timestamps as epoch milliseconds, and byte-order ("C") collation for names that are listed in
// lexical order by the API.
import type { Knex } from 'knex';

export const name = '20261126_001_registry_core';

/** A name column compared byte by byte (knex's collate() is ignored on PostgreSQL, so say it in the type). */
function lexicalName(knex: Knex, table: Knex.CreateTableBuilder, column: string, length: number): Knex.ColumnBuilder {
  return knex.client.config.client === 'pg'
    ? table.specificType(column, `varchar(${length}) COLLATE "C"`)
    : table.string(column, length);
}

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('repositories', (t) => {
    t.increments('id').primary();
    lexicalName(knex, t, 'name', 255).notNullable().unique();
    t.bigInteger('created_at').notNullable();
  });

  // One row per distinct content digest; the storage key carries the upload that produced it
  // (a generation), so deleting one generation never destroys a concurrent re-upload.
  await knex.schema.createTable('blobs', (t) => {
    t.string('digest', 160).primary();
    t.bigInteger('size').notNullable();
    t.string('storage_key', 512).notNullable();
    t.bigInteger('created_at').notNullable();
  });

  // The access boundary: a blob is served through a repository only when linked to it.
  await knex.schema.createTable('repository_blobs', (t) => {
    t.integer('repository_id').notNullable().references('id').inTable('repositories').onDelete('CASCADE');
    t.string('digest', 160).notNullable().references('digest').inTable('blobs').onDelete('RESTRICT');
    t.bigInteger('created_at').notNullable();
    t.primary(['repository_id', 'digest']);
    t.index(['digest']);
  });

  await knex.schema.createTable('manifests', (t) => {
    t.increments('id').primary();
    t.integer('repository_id').notNullable().references('id').inTable('repositories').onDelete('CASCADE');
    t.string('digest', 160).notNullable();
    t.string('media_type', 255).notNullable();
    t.string('artifact_type', 255).nullable();
    t.string('subject_digest', 160).nullable();
    t.text('annotations').nullable();
    t.integer('size').notNullable();
    t.binary('payload').notNullable();
    t.bigInteger('created_at').notNullable();
    t.unique(['repository_id', 'digest']);
    t.index(['repository_id', 'subject_digest']);
  });

  // What each manifest points at (layers, config, child manifests): checked on push; a future
  // garbage collector reads it too.
  await knex.schema.createTable('manifest_references', (t) => {
    t.integer('manifest_id').notNullable().references('id').inTable('manifests').onDelete('CASCADE');
    t.string('digest', 160).notNullable();
    t.string('kind', 16).notNullable();
    t.primary(['manifest_id', 'digest']);
    t.index(['digest']);
  });

  await knex.schema.createTable('tags', (t) => {
    t.integer('repository_id').notNullable().references('id').inTable('repositories').onDelete('CASCADE');
    lexicalName(knex, t, 'name', 128).notNullable();
    t.integer('manifest_id').notNullable().references('id').inTable('manifests').onDelete('CASCADE');
    t.bigInteger('updated_at').notNullable();
    t.primary(['repository_id', 'name']);
    t.index(['manifest_id']);
  });

  await knex.schema.createTable('uploads', (t) => {
    t.string('id', 36).primary();
    t.string('repository', 255).notNullable();
    t.bigInteger('size').notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    // A writer's claim on the session while it streams a chunk: one writer at a time, across
    // replicas, without holding a database connection for the length of an upload.
    t.string('writer', 36).nullable();
    t.bigInteger('writer_until').nullable();
    t.index(['updated_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['uploads', 'tags', 'manifest_references', 'manifests', 'repository_blobs', 'blobs', 'repositories']) {
    await knex.schema.dropTableIfExists(table);
  }
}
