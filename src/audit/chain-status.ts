// The verdict on the stored audit chain, as `portcullis audit verify` prints it and the admin API
// (GET /admin/v1/audit/chain) answers it: every event from the first to the head, in pages.
import { verifyChain, type ChainVerdict } from '../metadata/audit-chain.js';
import type { AuditStore } from '../metadata/auth-stores.js';

/** Events read per query while walking: memory stays bounded however long the log is. */
const PAGE = 1000;

/**
 * The verdict on the chain as it stood when the walk began (events appended meanwhile are left
 * for the next run), including rows written beside the chain.
 */
export async function verifyStoredChain(audit: AuditStore): Promise<ChainVerdict> {
  const verdict = await verifyChain(await audit.head(), (afterSeq, throughSeq) => audit.chainSlice(afterSeq, throughSeq, PAGE));
  if (!verdict.intact) return verdict;
  const [outside] = await audit.unchained(1);
  if (outside !== undefined) {
    return { intact: false, id: outside, problem: `row id ${outside} has no place in the chain (no seq): it was written into the table directly` };
  }
  return verdict;
}

export function describeVerdict(verdict: ChainVerdict): string {
  if (verdict.intact) return `audit chain intact: ${verdict.count} events, head ${verdict.head.hash}`;
  const where = verdict.seq === undefined ? '' : ` at event ${verdict.seq}`;
  const row = verdict.id === undefined ? '' : ` (row id ${verdict.id})`;
  return `audit chain broken${where}${row}: ${verdict.problem}`;
}
