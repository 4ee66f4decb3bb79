// Signatures that arrive through the registry signature extension (GPG "simple signing"), and
// the stored result of every signature verification, of any format.
//
// Both hang off the manifest row they are about (manifests.id): the row pins the repository and
// the digest at once, a deleted manifest takes its signatures and results with it, and a
// manifest pushed again later starts with none, so no stale verdict can carry over to it.
import type { Knex } from 'knex';

export const name = '20261130_006_signatures';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('signatures', (t) => {
    t.increments('id').primary();
    t.integer('manifest_id').notNullable().references('id').inTable('manifests').onDelete('CASCADE');
    // The client's `<digest>@<id>`, served back as it came.
    t.string('name', 300).notNullable();
    // sha256 of `content`: an identical signature sent again is recognised without comparing bytes.
    t.string('content_digest', 71).notNullable();
    t.binary('content').notNullable();
    t.bigInteger('created_at').notNullable();
    t.unique(['manifest_id', 'name']);
    t.unique(['manifest_id', 'content_digest']);
  });

  // One current result per signature: verifying again (new keys, a changed policy) replaces it.
  await knex.schema.createTable('signature_verifications', (t) => {
    t.increments('id').primary();
    t.integer('manifest_id').notNullable().references('id').inTable('manifests').onDelete('CASCADE');
    t.string('format', 32).notNullable();
    // Which signature of that format: for GPG the signature's name, for others what identifies it.
    t.string('signature_ref', 300).notNullable();
    t.string('outcome', 16).notNullable();
    t.string('signer', 255).nullable();
    t.string('identity', 1024).nullable();
    t.text('reason').notNullable();
    t.bigInteger('verified_at').notNullable();
    t.unique(['manifest_id', 'format', 'signature_ref']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('signature_verifications');
  await knex.schema.dropTableIfExists('signatures');
}
