// Which trust policy each stored verification result was judged under: `sha256:<hex>` of the
// policy's JSON document, or NULL for a result judged where no policy applied (and for every
// result stored before this column existed). Enforcement counts only results judged under the
// policy in force, so a result never outlives the keys it was judged with; the server judges the
// others again (trust/reverify.ts).
import type { Knex } from 'knex';

export const name = '20261130_008_verification_policy';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('signature_verifications', (t) => {
    t.string('policy_digest', 71).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('signature_verifications', (t) => {
    t.dropColumn('policy_digest');
  });
}
