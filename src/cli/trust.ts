// portcullis trust apply | export — the trust policies (immutable tags, required signatures) from
// the command line, straight against the metadata database.
import type { Command } from 'commander';
import type { Knex } from 'knex';
import { AuditLog, CLI_ACTOR, type ChangeTransaction } from '../audit/events.js';
import { createLogger } from '../log.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { KnexSignatureStore } from '../metadata/knex-signature-store.js';
import { KnexMetadataStore } from '../metadata/knex-store.js';
import { isTag, parseDigest, parseName } from '../registry/reference.js';
import { satisfyingSignature } from '../trust/enforcement.js';
import { createTrustPolicies } from '../trust/index.js';
import type { TrustPolicies, TrustPolicyDiff } from '../trust/policies.js';
import { formatTrustFile, parseTrustFile, TrustPolicyError } from '../trust/policy-file.js';
import { openExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

/**
 * Runs `work` on the trust policies in one database transaction, with the auth stores of that
 * same transaction: a policy change and its audit event commit together or not at all.
 */
async function withPolicies<T>(settings: CliSettings, work: (policies: TrustPolicies, tx: ChangeTransaction, db: Knex) => Promise<T>): Promise<T> {
  const db = await openExistingDatabase(settings);
  try {
    return await db.transaction((trx) => work(createTrustPolicies(trx, 0), new KnexAuthStores(trx), trx));
  } finally {
    await db.destroy();
  }
}

/** `repository:tag` or `repository@sha256:…`, checked against the spec's grammar. */
function parseImage(image: string): { repository: string; lookup: { tag: string } | { digest: string } } {
  const at = image.indexOf('@');
  if (at >= 0) return { repository: parseName(image.slice(0, at)), lookup: { digest: parseDigest(image.slice(at + 1)).value } };
  const colon = image.lastIndexOf(':');
  if (colon < 0) throw new TrustPolicyError(`${image}: name an image as repository:tag or repository@digest`);
  const tag = image.slice(colon + 1);
  if (!isTag(tag)) throw new TrustPolicyError(`${image}: ${JSON.stringify(tag)} is not a valid tag`);
  return { repository: parseName(image.slice(0, colon)), lookup: { tag } };
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
    .command('check <image>')
    .description('explain what the trust policy says about an image (repository:tag or repository@digest): the policy, each signature found with its outcome, and the verdict')
    .action(async (image: string) => {
      const { repository, lookup } = parseImage(image);
      const report = await withPolicies(settings(), async (policies, _tx, db) => {
        const manifest = await new KnexMetadataStore(db).getManifest(repository, lookup);
        if (!manifest) return undefined;
        const policy = await policies.for(repository);
        const results = await new KnexSignatureStore(db).verificationsOf(repository, manifest.digest);
        return { digest: manifest.digest, policy, results };
      });
      if (!report) throw new TrustPolicyError(`${image}: no such manifest in ${repository}`);
      const { digest, policy, results } = report;
      const lines = [`image       ${repository}${'tag' in lookup ? `:${lookup.tag}` : ''}@${digest}`];
      if (!policy) {
        lines.push('policy      none applies: no requirements', 'verdict     served to anyone who may pull');
        console.log(lines.join('\n'));
        return;
      }
      const immutable = policy.immutableTags.length > 0 ? `; immutable tags ${policy.immutableTags.join(', ')}` : '';
      lines.push(`policy      ${policy.repositories} (signatures: ${policy.signatures.mode}${immutable})`);
      lines.push(results.length === 0 ? 'signatures  none' : 'signatures');
      for (const result of results) {
        lines.push(`  ${result.outcome.padEnd(8)}${result.format.padEnd(16)}${(result.signer ?? '-').padEnd(16)}${result.reason}`);
      }
      const satisfying = satisfyingSignature(policy, results);
      const verdict =
        policy.signatures.mode === 'off' || satisfying
          ? `served${satisfying ? ` (valid signature from ${satisfying.signer})` : ''}`
          : policy.signatures.mode === 'audit'
            ? 'served, and each pull recorded as unsatisfied (no valid signature from a policy signer)'
            : 'refused to pull-only principals (no valid signature from a policy signer)';
      lines.push(`verdict     ${verdict}`);
      console.log(lines.join('\n'));
      if (policy.signatures.mode === 'enforce' && !satisfying) process.exitCode = 1;
    });

  trust
    .command('export')
    .description('print the stored trust policies as a policy file (keys inline)')
    .action(async () => {
      process.stdout.write(formatTrustFile(await withPolicies(settings(), (policies) => policies.list())));
    });
}
