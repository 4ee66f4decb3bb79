// portcullis policy apply | export, and portcullis access check — the access rules from the
// command line, straight against the metadata database (the admin API does the same over HTTP).
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { Knex } from 'knex';
import { CLI_ACTOR } from '../audit/events.js';
import { createIdentities, type Identities } from '../auth/index.js';
import { formatRulesFile, parseRulesFile } from '../auth/policy/file.js';
import { formatSubject, personalNamespaceWarnings, type AccessRule, type Principal } from '../auth/policy/rules.js';
import type { RuleDiff } from '../auth/policy/store.js';
import { createLogger } from '../log.js';
import { parseName } from '../registry/reference.js';
import { openExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

async function withIdentities<T>(settings: CliSettings, work: (identities: Identities, db: Knex) => Promise<T>): Promise<T> {
  const db = await openExistingDatabase(settings);
  const identities = createIdentities(settings.config, db, createLogger('warn'));
  try {
    return await work(identities, db);
  } finally {
    await identities.close();
    await db.destroy();
  }
}

const describeRule = (rule: AccessRule) => `${formatSubject(rule.subject)}  ${rule.repositories}  [${rule.actions.join(', ')}]`;

export function formatDiff(diff: RuleDiff): string {
  const lines = [
    ...diff.added.map((rule) => `+ ${describeRule(rule)}`),
    ...diff.removed.map((rule) => `- ${describeRule(rule)}`),
    ...diff.changed.map(({ before, after }) => `~ ${describeRule(before)}  ->  [${after.actions.join(', ')}]`),
  ];
  return lines.length === 0 ? 'no changes' : lines.join('\n');
}

export function registerPolicyCommands(program: Command, settings: LoadSettings): void {
  const policy = program.command('policy').description('manage access rules (LDAP group / user / robot → repositories → actions)');

  policy
    .command('apply')
    .description('make the stored rules exactly those of a rules file, showing the difference')
    .requiredOption('-f, --file <rules.yaml>', 'rules file')
    .option('--dry-run', 'show the difference without changing anything')
    .action(async (options: { file: string; dryRun?: boolean }) => {
      // Parse first: a bad file changes nothing.
      const wanted = parseRulesFile(await readFile(options.file, 'utf8'), options.file);
      for (const warning of personalNamespaceWarnings(wanted)) console.error(`portcullis: warning: ${warning}`);
      const diff = await withIdentities(settings(), ({ rules, audit }) =>
        audit.transaction(async (tx) => {
          const result = await rules.replaceAll(wanted, { dryRun: options.dryRun ?? false }, tx);
          if (!options.dryRun) await audit.record({ type: 'rules.changed', ...CLI_ACTOR, details: { file: options.file, added: result.added.length, removed: result.removed.length, changed: result.changed.length } }, tx);
          return result;
        }),
      );
      console.log(formatDiff(diff));
      if (options.dryRun) console.log('(dry run: nothing changed)');
    });

  policy
    .command('export')
    .description('print the stored rules as a rules file')
    .action(async () => {
      const rules = await withIdentities(settings(), ({ rules: store }) => store.list());
      process.stdout.write(formatRulesFile(rules));
    });

  program
    .command('access')
    .description('explain access')
    .command('check <subject> <repository>')
    .description('show what a user (or robot$name, or anonymous) may do on a repository, and which rules say so')
    .action(async (subject: string, repository: string) => {
      parseName(repository);
      const report = await withIdentities(settings(), async ({ authenticator, policy: access }) => {
        const principal: Principal | undefined = subject === 'anonymous' ? { kind: 'anonymous' } : await authenticator.resolve(subject);
        if (!principal) return undefined;
        return {
          principal,
          allowed: [...(await access.allowed(principal, repository))].sort(),
          rules: await access.explain(principal, repository),
        };
      });
      if (!report) {
        console.log(`${subject}: no such user or robot`);
        process.exitCode = 1;
        return;
      }
      const { principal, allowed, rules } = report;
      if (principal.kind === 'user') {
        console.log(`${subject} (${principal.identity.provider}${principal.identity.admin ? ', administrator' : ''})`);
        console.log(`groups: ${principal.identity.groups.map((g) => g.dn ?? g.name).join('; ') || '(none)'}`);
      } else {
        console.log(`${subject} (${principal.kind})`);
      }
      console.log(`${repository}: ${allowed.length > 0 ? allowed.join(', ') : 'no access (denied by default)'}`);
      for (const rule of rules) console.log(`  granted by: ${describeRule(rule)}`);
      if (principal.kind === 'user' && principal.identity.admin) console.log('  granted by: administrator');
    });
}
