// portcullis audit verify — walks the audit log's hash chain (src/metadata/audit-chain.ts) in the
// metadata database, a page at a time, and says where it first breaks.
import type { Command } from 'commander';
import { verifyChain, type ChainVerdict } from '../metadata/audit-chain.js';
import type { AuditStore } from '../metadata/auth-stores.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { openExistingDatabase } from './database.js';
import type { LoadSettings } from './settings.js';

/** Events read per query while walking: memory stays bounded however long the log is. */
const PAGE = 1000;

/**
 * The verdict on the chain as it stood when the walk began (events appended meanwhile are left
 * for the next run), including rows written beside the chain.
 */
async function verifyStoredChain(audit: AuditStore): Promise<ChainVerdict> {
  const verdict = await verifyChain(await audit.head(), (afterSeq, throughSeq) => audit.chainSlice(afterSeq, throughSeq, PAGE));
  if (!verdict.intact) return verdict;
  const [outside] = await audit.unchained(1);
  if (outside !== undefined) {
    return { intact: false, id: outside, problem: `row id ${outside} has no place in the chain (no seq): it was written into the table directly` };
  }
  return verdict;
}

function describeVerdict(verdict: ChainVerdict): string {
  if (verdict.intact) return `audit chain intact: ${verdict.count} events, head ${verdict.head.hash}`;
  const where = verdict.seq === undefined ? '' : ` at event ${verdict.seq}`;
  const row = verdict.id === undefined ? '' : ` (row id ${verdict.id})`;
  return `audit chain broken${where}${row}: ${verdict.problem}`;
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
}
