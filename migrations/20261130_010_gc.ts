// Online garbage collection (src/gc): review queues instead of mark-and-sweep, and an outbox of
// storage keys whose rows are gone.
//
// - gc_blob_reviews: a repository↔blob link that may have lost its last reference in that
//   repository (a new link nothing references yet, a deleted manifest's layers). `touched_at` is
//   when its grace (re)started; the collector reviews rows older than its grace, so the grace is a
//   setting of the collector alone and a change of it applies to rows already queued.
// - gc_manifest_reviews: a manifest that may have lost its last tag, its index or its subject.
// - gc_storage_deletes: storage keys of blob rows deleted in the same transaction, removed from
//   the store afterwards (a crash in between leaks bytes but never leaves a row pointing at
//   nothing). `not_before` is a lease: a collector that claimed a key and died is retried later.
// - gc_state: when the (bucket-listing) orphan sweep last ran, so replicas take turns.
//
// An existing database gets its backlog queued once: every link nothing in its repository
// references, and every untagged manifest (the collector decides per repository whether that
// matters), with their grace starting now.
import type { Knex } from 'knex';

export const name = '20261130_010_gc';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('gc_blob_reviews', (t) => {
    t.integer('repository_id').notNullable().references('id').inTable('repositories').onDelete('CASCADE');
    t.string('digest', 160).notNullable();
    t.bigInteger('touched_at').notNullable();
    t.primary(['repository_id', 'digest']);
    // restarting a digest's grace (HEAD, upload, mount, manifest PUT) is an indexed update
    t.index(['digest']);
    t.index(['touched_at']);
  });
  await knex.schema.createTable('gc_manifest_reviews', (t) => {
    t.integer('repository_id').notNullable().references('id').inTable('repositories').onDelete('CASCADE');
    t.string('digest', 160).notNullable();
    t.bigInteger('touched_at').notNullable();
    t.primary(['repository_id', 'digest']);
    t.index(['touched_at']);
  });
  await knex.schema.createTable('gc_storage_deletes', (t) => {
    t.string('storage_key', 512).primary();
    t.string('digest', 160).notNullable();
    t.bigInteger('size').notNullable();
    t.bigInteger('enqueued_at').notNullable();
    t.bigInteger('not_before').notNullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.index(['not_before']);
  });
  await knex.schema.createTable('gc_state', (t) => {
    t.string('name', 64).primary();
    t.bigInteger('value').notNullable();
  });
  await knex('gc_state').insert({ name: 'orphan_sweep_at', value: 0 });
  // The orphan sweep asks, per listed key, whether a row still names it.
  await knex.schema.alterTable('blobs', (t) => {
    t.index(['storage_key']);
  });

  const now = Date.now();
  await knex.raw(
    `insert into gc_blob_reviews (repository_id, digest, touched_at)
     select rb.repository_id, rb.digest, ? from repository_blobs rb
     where not exists (
       select 1 from manifest_references mr join manifests m on m.id = mr.manifest_id
       where mr.digest = rb.digest and m.repository_id = rb.repository_id)`,
    [now],
  );
  await knex.raw(
    `insert into gc_manifest_reviews (repository_id, digest, touched_at)
     select m.repository_id, m.digest, ? from manifests m
     where not exists (select 1 from tags t where t.manifest_id = m.id)`,
    [now],
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('blobs', (t) => {
    t.dropIndex(['storage_key']);
  });
  for (const table of ['gc_state', 'gc_storage_deletes', 'gc_manifest_reviews', 'gc_blob_reviews']) {
    await knex.schema.dropTableIfExists(table);
  }
}
