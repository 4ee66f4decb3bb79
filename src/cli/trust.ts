// portcullis trust apply | check | export — the trust policies (immutable tags, required
// signatures) from the command line, straight against the metadata database (the admin API does
// the same over HTTP: /admin/v1/trust).
import type { Command } from 'commander';
import type { Knex } from 'knex';
import { CLI_ACTOR } from '../audit/events.js';
import { KnexSignatureStore } from '../metadata/knex-signature-store.js';
import { KnexMetadataStore } from '../metadata/knex-store.js';
import { explainImage, formatExplanation, parseImage } from '../trust/explain.js';
import { createTrustPolicies } from '../trust/policies.js';
import type { TrustPolicies, TrustPolicyDiff } from '../trust/policies.js';
import { formatTrustFile, parseTrustFile, TrustPolicyError } from '../trust/policy-file.js';
import { openExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

/** Runs `work` on the trust policies as stored (no cache: a command reads what is there now). */
async function withPolicies<T>(settings: CliSettings, work: (policies: TrustPolicies, db: Knex) => Promise<T>): Promise<T> {
  const db = await openExistingDatabase(settings);
  try {
    return await work(createTrustPolicies(db, 0), db);
  } finally {
    await db.destroy();
  }
}

export function formatTrustDiff(diff: TrustPolicyDiff): string {
  const lines = [...diff.added.map((p) => `+ ${p}`), ...diff.removed.map((p) => `- ${p}`), ...diff.changed.map((p) => `~ ${p}`)];
  return lines.length === 0 ? 'no changes' : lines.join('\n');
}

export function registerTrustCommands(program: Command, settings: LoadSettings): void {
  const trust = program.command('trust').description('manage trust policies (immutable tags, required signatures)');

  trust
    .command('apply')
    .description('make the stored trust policies exactly those of a policy file, showing the difference')
    .requiredOption('-f, --file <trust.yaml>', 'trust policy file (key and trusted-root paths are relative to it)')
    .option('--dry-run', 'show the difference without changing anything')
    .action(async (options: { file: string; dryRun?: boolean }) => {
      // Parse (and read every key) first: a bad file changes nothing.
      const wanted = parseTrustFile(options.file);
      // The change and its trust.changed event commit together (TrustPolicies.apply).
      const diff = await withPolicies(settings(), (policies) =>
        policies.apply(wanted, { dryRun: options.dryRun ?? false, author: { ...CLI_ACTOR, source: options.file } }),
      );
      console.log(formatTrustDiff(diff));
      if (options.dryRun) console.log('(dry run: nothing changed)');
    });

  trust
    .command('check <image>')
    .description('explain what the trust policy says about an image (repository:tag or repository@digest): the policy, each signature found with its outcome, and the verdict')
    .action(async (image: string) => {
      const reference = parseImage(image);
      const explanation = await withPolicies(settings(), (policies, db) =>
        explainImage({ policies, manifests: new KnexMetadataStore(db), verifications: new KnexSignatureStore(db) }, reference),
      );
      if (!explanation) throw new TrustPolicyError(`${image}: no such manifest in ${reference.repository}`);
      console.log(formatExplanation(explanation));
      if (explanation.judgement.verdict === 'refused') process.exitCode = 1;
    });

  trust
    .command('export')
    .description('print the stored trust policies as a policy file (keys inline)')
    .action(async () => {
      process.stdout.write(formatTrustFile(await withPolicies(settings(), (policies) => policies.list())));
    });
}
