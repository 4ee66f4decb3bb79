// portcullis trust apply | export — the trust policies (immutable tags, required signatures) from
// the command line, straight against the metadata database.
import type { Command } from 'commander';
import { AuditLog, CLI_ACTOR, type ChangeTransaction } from '../audit/events.js';
import { createLogger } from '../log.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { createTrustPolicies } from '../trust/index.js';
import type { TrustPolicies, TrustPolicyDiff } from '../trust/policies.js';
import { formatTrustFile, parseTrustFile } from '../trust/policy-file.js';
import { openExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

/**
 * Runs `work` on the trust policies in one database transaction, with the auth stores of that
 * same transaction: a policy change and its audit event commit together or not at all.
 */
async function withPolicies<T>(settings: CliSettings, work: (policies: TrustPolicies, tx: ChangeTransaction) => Promise<T>): Promise<T> {
  const db = await openExistingDatabase(settings);
  try {
    return await db.transaction((trx) => work(createTrustPolicies(trx, 0), new KnexAuthStores(trx)));
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
      const diff = await withPolicies(settings(), async (policies, tx) => {
        const result = await policies.apply(wanted, { dryRun: options.dryRun ?? false });
        const changed = result.added.length + result.removed.length + result.changed.length > 0;
        if (!options.dryRun && changed) {
          await new AuditLog(tx, createLogger('warn')).record({ type: 'trust.changed', ...CLI_ACTOR, details: { file: options.file, ...result } }, tx);
        }
        return result;
      });
      console.log(formatTrustDiff(diff));
      if (options.dryRun) console.log('(dry run: nothing changed)');
    });

  trust
    .command('export')
    .description('print the stored trust policies as a policy file (keys inline)')
    .action(async () => {
      process.stdout.write(formatTrustFile(await withPolicies(settings(), (policies) => policies.list())));
    });
}
