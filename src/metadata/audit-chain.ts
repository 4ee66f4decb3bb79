// The audit log's hash chain: the exact bytes each event's SHA-256 is taken over, and the walk
// that checks a chain. In metadata/ because the store computes the hashes under its lock on the
// chain head (and the migration chains old rows); what is hashed can be read in one place.
//
// An event's hash is SHA-256, in lowercase hex, of the UTF-8 bytes of this JSON array, written with
// no spaces (JSON.stringify in JavaScript; json.dumps(…, ensure_ascii=False, separators=(",", ":"))
// in Python), every absent value as null:
//
//   ["portcullis.audit.v1", seq, prevHash, at, type, actorKind, actor, clientIp, repository, tag,
//    oldDigest, newDigest, outcome, reason, details]
//
// seq is the event's position in the chain (1, 2, 3, … with no gaps), prevHash the previous
// event's hash (64 zeros before the first event), at epoch milliseconds, details the stored JSON
// text as it is (not re-encoded). Every value is exactly what the audit_events row holds, so
// anyone can re-check a copy of the table with a few lines of code.
import { createHash } from 'node:crypto';
import type { AuditRecord } from './auth-stores.js';

/** Names the canonical form; a different form would get a different name, never a changed meaning. */
export const CHAIN_FORMAT = 'portcullis.audit.v1';

/** The previous hash of the first event. */
export const GENESIS_HASH = '0'.repeat(64);

/** Every value of an event that its hash covers, as stored: the record, its place and the link before it. */
export type ChainedFields = AuditRecord & { seq: number; prevHash: string };

const orNull = <T>(value: T | undefined): T | null => (value === undefined ? null : value);

/** The bytes an event's hash is taken over (see the top of this file). */
export function canonicalBytes(event: ChainedFields): Buffer {
  const fields = [
    CHAIN_FORMAT,
    event.seq,
    event.prevHash,
    event.at,
    event.type,
    orNull(event.actorKind),
    orNull(event.actor),
    orNull(event.clientIp),
    orNull(event.repository),
    orNull(event.tag),
    orNull(event.oldDigest),
    orNull(event.newDigest),
    orNull(event.outcome),
    orNull(event.reason),
    orNull(event.details),
  ];
  return Buffer.from(JSON.stringify(fields), 'utf8');
}

export function eventHash(event: ChainedFields): string {
  return createHash('sha256').update(canonicalBytes(event)).digest('hex');
}

/** An event as read back for checking: what was hashed, the hash stored with it, and its row. */
export interface StoredLink extends ChainedFields {
  /** the row's id (a storage detail: not hashed), to find the row */
  id: number;
  /** the stored hash; undefined when the row has none */
  hash: string | undefined;
}

/** The one-row record of the newest event: where the chain must end. */
export interface ChainHead {
  seq: number;
  hash: string;
}

export type ChainVerdict =
  | { intact: true; count: number; head: ChainHead }
  | {
      intact: false;
      /** the chain position where the first problem is (the event expected there), when it has one */
      seq?: number;
      /** the row found there, when there is one */
      id?: number;
      problem: string;
    };

const short = (hash: string | undefined) => (hash === undefined ? 'none' : `${hash.slice(0, 16)}…`);

/**
 * Walks a chain in order and returns the first broken link, or the count and the head. `read`
 * returns up to a page of events with seq greater than `afterSeq` and at most `throughSeq`,
 * ordered by seq: the chain is streamed, never loaded whole. Events appended after `head` was
 * read are not looked at.
 */
export async function verifyChain(
  head: ChainHead | undefined,
  read: (afterSeq: number, throughSeq: number) => Promise<readonly StoredLink[]>,
): Promise<ChainVerdict> {
  if (!head) return { intact: false, problem: 'the chain head (table audit_chain_head) is missing: the chain cannot be checked' };
  let expectedSeq = 1;
  let previous = GENESIS_HASH;
  for (;;) {
    const page = await read(expectedSeq - 1, head.seq);
    if (page.length === 0) break;
    for (const event of page) {
      const at = { seq: expectedSeq, id: event.id };
      if (event.seq !== expectedSeq) {
        const missing = event.seq === expectedSeq + 1 ? `event ${expectedSeq} is missing` : `events ${expectedSeq} to ${event.seq - 1} are missing`;
        return { intact: false, seq: expectedSeq, problem: `${missing}: the next event found is ${event.seq} (row id ${event.id})` };
      }
      if (event.prevHash !== previous) {
        const before = expectedSeq === 1 ? 'the start of the chain' : `the hash of event ${expectedSeq - 1}`;
        return { ...at, intact: false, problem: `its prev_hash ${short(event.prevHash)} does not match ${before} (${short(previous)}): an event before it was changed or removed` };
      }
      const computed = eventHash(event);
      if (event.hash !== computed) {
        return { ...at, intact: false, problem: `its contents do not match its hash: stored ${short(event.hash)}, computed ${short(computed)}: the row was changed` };
      }
      previous = computed;
      expectedSeq++;
    }
  }
  const count = expectedSeq - 1;
  if (count < head.seq) {
    const missing = count + 1 === head.seq ? `event ${head.seq} is missing` : `events ${count + 1} to ${head.seq} are missing`;
    return { intact: false, seq: count + 1, problem: `${missing}: the chain ends at event ${count} but its head records ${head.seq} events` };
  }
  if (head.hash !== previous) {
    return { intact: false, seq: head.seq, problem: `the chain head records hash ${short(head.hash)} for event ${head.seq}, but the event's hash is ${short(previous)}` };
  }
  return { intact: true, count, head: { seq: count, hash: previous } };
}
