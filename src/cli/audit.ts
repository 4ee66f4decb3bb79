// portcullis audit verify — walks the audit log's hash chain (src/metadata/audit-chain.ts) in the
// metadata database, a page at a time, and says where it first breaks.
// portcullis audit signatures — the signature report (src/trust/report.ts) as a table, JSON or CSV.
import { once } from 'node:events';
import { Option, type Command } from 'commander';
import { describeVerdict, verifyStoredChain } from '../audit/chain-status.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { KnexSignatureReport } from '../metadata/knex-signature-report.js';
import { createTrustPolicies } from '../trust/policies.js';
import { CSV_HEADER, reportEntryCsv, reportEntryJson, reportEntryTableLine, SignatureReport, TABLE_HEADER, type ReportEntry } from '../trust/report.js';
import { openExistingDatabase } from './database.js';
import type { LoadSettings } from './settings.js';

type ReportFormat = 'table' | 'json' | 'csv';

/** Writes the report as it is read, a page at a time: a JSON array, CSV with a header row, or a table. */
async function writeReport(entries: AsyncIterable<ReportEntry>, format: ReportFormat, write: (text: string) => Promise<void>): Promise<void> {
  let count = 0;
  if (format === 'csv') await write(CSV_HEADER);
  if (format === 'table') await write(`${TABLE_HEADER}\n`);
  for await (const entry of entries) {
    if (format === 'json') await write(`${count === 0 ? '[\n' : ',\n'}  ${JSON.stringify(reportEntryJson(entry))}`);
    else await write(format === 'csv' ? reportEntryCsv(entry) : `${reportEntryTableLine(entry)}\n`);
    count++;
  }
  if (format === 'json') await write(count === 0 ? '[]\n' : '\n]\n');
}

/** Writes to stdout, waiting while a slow reader (a pipe) has not taken the last of it. */
async function toStdout(text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain');
}

export function registerAuditCommands(program: Command, settings: LoadSettings): void {
  const audit = program.command('audit').description('the audit log');

  audit
    .command('verify')
    .description('check the audit log\'s hash chain: prints the event count and head hash (exit 0), or the first broken link (exit 1)')
    .action(async () => {
      const db = await openExistingDatabase(settings());
      try {
        const verdict = await verifyStoredChain(new KnexAuthStores(db).audit);
        console.log(describeVerdict(verdict));
        if (!verdict.intact) process.exitCode = 1;
      } finally {
        await db.destroy();
      }
    });

  audit
    .command('signatures')
    .description('the signature report: every tag → digest with its signature status, signer, time, the trust policy that applies and its verdict')
    .option('--repo <glob>', 'only repositories this glob matches (the access rules\' syntax: prod/**)')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'csv']).default('table'))
    .action(async (options: { repo?: string; format: ReportFormat }) => {
      const db = await openExistingDatabase(settings());
      try {
        // The policies are read once: every page is judged against the same set.
        const report = new SignatureReport(createTrustPolicies(db, Number.POSITIVE_INFINITY), new KnexSignatureReport(db));
        await writeReport(report.entries(options.repo), options.format, toStdout);
      } finally {
        await db.destroy();
      }
    });
}
