// The audit trail's writer: an append-only hash chain (see chain.ts for what is hashed, and
// AuditStore.append for how concurrent writers extend one chain). Logins are many and are written
// in batches; a change (administrative now, registry and trust changes as they come) writes its
// events inside its own transaction, so both commit or neither does.
import { verifyStoredChain } from './chain-status.js';
import type { ChainVerdict } from '../metadata/audit-chain.js';
import { isIP } from 'node:net';
import { AUDIT_COLUMNS, type AuditQuery, type AuditRecord, type AuthStores, type ChainedAuditRecord } from '../metadata/auth-stores.js';
import type { Logger } from 'pino';

export type AuditEventType =
  | 'login.success'
  | 'login.failure'
  | 'robot.created'
  | 'robot.revoked'
  | 'rules.changed'
  | 'refresh_token.revoked'
  | 'user.created'
  | 'user.password_changed'
  | 'user.removed'
  // The registry and trust layers' events (issue 7): what changed is in repository, tag and
  // oldDigest → newDigest; a verification's or a refusal's result in outcome and reason.
  | 'manifest.pushed'
  | 'manifest.deleted'
  | 'blob.deleted'
  | 'tag.created'
  | 'tag.moved'
  | 'tag.deleted'
  | 'signature.stored'
  | 'signature.verified'
  | 'pull.denied'
  | 'pull.unsatisfied'
  | 'trust.changed';

/**
 * Who made a change through the API, as the audit log records it: the bearer token's subject ('' or
 * none for anonymous) and the client address.
 */
export interface Author {
  actor?: string | undefined;
  clientIp?: string | undefined;
}

/** Who acted: a person, a robot account, nobody logged in, an operator's command line, or the server itself. */
export type ActorKind = 'user' | 'robot' | 'anonymous' | 'cli' | 'system';

export type AuditOutcome = 'success' | 'failure' | 'denied';

export interface AuditEvent {
  type: AuditEventType;
  /** Derived from `actor` when left out: see actorKindOf. */
  actorKind?: ActorKind | undefined;
  actor?: string | undefined;
  clientIp?: string | undefined;
  repository?: string | undefined;
  tag?: string | undefined;
  oldDigest?: string | undefined;
  newDigest?: string | undefined;
  /** Left out: `failure` for *.failure, `denied` for *.denied, else `success`. */
  outcome?: AuditOutcome | undefined;
  /** Left out: details.reason when that is a string. */
  reason?: string | undefined;
  details?: Record<string, unknown>;
}

/** An event as the admin API shows it: every stored field, its place in the chain and its hash. */
export interface AuditEntry {
  seq: number;
  /** `at` in RFC 3339 (UTC) */
  time: string;
  at: number;
  type: string;
  actorKind?: string;
  actor?: string;
  clientIp?: string;
  repository?: string;
  tag?: string;
  oldDigest?: string;
  newDigest?: string;
  outcome?: string;
  reason?: string;
  /** the stored JSON document, parsed (the stored text itself when it does not parse) */
  details?: unknown;
  prevHash: string;
  hash?: string;
}

/** What the command line records as its actor: the operator on the server's machine. */
export const CLI_ACTOR = { actor: 'cli', actorKind: 'cli' } as const;

const ROBOT_SUBJECT_PREFIX = 'robot$';

/**
 * The kind of actor a token subject or login name stands for: '' or none is anonymous (the
 * token spec's subject for nobody), `robot$…` a robot account, anything else a person.
 */
export function actorKindOf(actor: string | undefined): ActorKind {
  if (actor === undefined || actor === '') return 'anonymous';
  return actor.startsWith(ROBOT_SUBJECT_PREFIX) ? 'robot' : 'user';
}

function defaultOutcome(type: string): AuditOutcome {
  if (type.endsWith('.failure')) return 'failure';
  if (type.endsWith('.denied')) return 'denied';
  return 'success';
}

/** Events are written in small batches: one transaction for many logins instead of one each. */
const FLUSH_DELAY_MS = 20;

/** Rows per batched write; a failed write is retried one event at a time. */
const BATCH_SIZE = 100;

/** Longest details document kept; a larger one is replaced by a note saying how large it was. */
const MAX_DETAILS = 64 * 1024;

/**
 * Makes a value storable in any database: no NUL or other control characters (PostgreSQL refuses
 * NUL in text; the others would forge lines in whatever shows the log), no lone surrogates,
 * at most `max` characters. What a client sent is kept recognisable, not dropped.
 */
export function storable(value: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  if (clean.length <= max) return clean;
  // Never cut a surrogate pair in two: half of one is not text, and would not hash as stored.
  const kept = clean.slice(0, max - 1).replace(/[\ud800-\udbff]$/, '');
  return `${kept}…`;
}

/**
 * A client address as stored: an IP address that fits its column, or nothing. An IPv6 zone
 * (`fe80::1%eth0`) may be any length; when the whole does not fit, the address is kept without it.
 */
function storableAddress(address: string | undefined): string | undefined {
  if (address === undefined || !isIP(address)) return undefined;
  if (address.length <= AUDIT_COLUMNS.clientIp) return address;
  const withoutZone = address.replace(/%.*$/s, '');
  return isIP(withoutZone) && withoutZone.length <= AUDIT_COLUMNS.clientIp ? withoutZone : undefined;
}

const optional = (value: string | undefined, max: number): string | undefined => (value === undefined ? undefined : storable(value, max));

/**
 * An event as the store keeps it: every value made to fit whatever the database accepts. For
 * appending in a transaction of the metadata store (appendAuditEvents), as AuditLog does.
 */
export function auditRecord(event: AuditEvent, at = Date.now()): AuditRecord {
  const details = event.details ? JSON.stringify(event.details) : undefined;
  const detailsReason = event.details?.reason;
  return {
    at,
    type: event.type,
    actorKind: event.actorKind ?? actorKindOf(event.actor),
    actor: optional(event.actor, AUDIT_COLUMNS.actor),
    clientIp: storableAddress(event.clientIp),
    repository: optional(event.repository, AUDIT_COLUMNS.repository),
    tag: optional(event.tag, AUDIT_COLUMNS.tag),
    oldDigest: optional(event.oldDigest, AUDIT_COLUMNS.digest),
    newDigest: optional(event.newDigest, AUDIT_COLUMNS.digest),
    outcome: event.outcome ?? defaultOutcome(event.type),
    reason: optional(event.reason ?? (typeof detailsReason === 'string' ? detailsReason : undefined), AUDIT_COLUMNS.reason),
    // JSON escapes control characters itself; an oversized document is replaced by a note saying so.
    details: details === undefined ? undefined : details.length <= MAX_DETAILS ? storable(details, MAX_DETAILS) : JSON.stringify({ truncated: true, length: details.length }),
  };
}

function parseDetails(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Only a direct write stores text that is not JSON: show it as it is (verify names the row).
    return text;
  }
}

/** Absent values are left undefined, so the JSON answer leaves them out. */
const toEntry = (record: ChainedAuditRecord): AuditEntry => ({
  seq: record.seq,
  time: new Date(record.at).toISOString(),
  at: record.at,
  type: record.type,
  actorKind: record.actorKind,
  actor: record.actor,
  clientIp: record.clientIp,
  repository: record.repository,
  tag: record.tag,
  oldDigest: record.oldDigest,
  newDigest: record.newDigest,
  outcome: record.outcome,
  reason: record.reason,
  details: record.details === undefined ? undefined : parseDetails(record.details),
  prevHash: record.prevHash,
  hash: record.hash,
});

/** One page of events, newest first, and the cursor of the next (older) page when there is one. */
export interface AuditPage {
  events: AuditEntry[];
  nextBeforeSeq?: number;
}

/** The transaction an administrative change and the events recording it share (see AuditLog.transaction). */
export type ChangeTransaction = AuthStores;

/** How long a finished walk of the hash chain answers later requests (the walk reads every event). */
const CHAIN_CHECK_REUSE_MS = 10_000;

interface ChainCheck {
  result: Promise<{ verdict: ChainVerdict; checkedAt: number }>;
  endedAt?: number;
}

export class AuditLog {
  private queue: AuditRecord[] = [];
  /** the timer that writes the queue a few milliseconds after its first event */
  private flushing: Promise<void> | undefined;
  /** the batch being written; batches are written one after another, in the order recorded */
  private writing: Promise<void> = Promise.resolve();
  /** Events that could not be written at all since start (each also logged at error level). */
  lost = 0;
  /** the hash chain walk in progress, or the last one (see verifyChain) */
  private chainCheck: ChainCheck | undefined;

  constructor(
    private readonly stores: AuthStores,
    private readonly log: Logger,
  ) {}

  /**
   * Runs an administrative change and the events that record it as one transaction: pass `tx` to
   * the calls that change something and to `record`. Both commit, or neither does.
   */
  transaction<T>(work: (tx: ChangeTransaction) => Promise<T>): Promise<T> {
    return this.stores.transaction(work);
  }

  /**
   * Walks the hash chain from the first event to the head (see ./chain-status.ts). The walk reads
   * every event, so callers share one: those asking while it runs, or within CHAIN_CHECK_REUSE_MS
   * after it ended, get its verdict and when it was reached.
   */
  verifyChain(): Promise<{ verdict: ChainVerdict; checkedAt: number }> {
    const shared = this.chainCheck;
    if (shared && (shared.endedAt === undefined || Date.now() - shared.endedAt < CHAIN_CHECK_REUSE_MS)) return shared.result;
    const check: ChainCheck = {
      result: verifyStoredChain(this.stores.audit).then((verdict) => ({ verdict, checkedAt: Date.now() })),
    };
    check.result.then(
      () => (check.endedAt = Date.now()),
      () => {
        if (this.chainCheck === check) this.chainCheck = undefined; // a failure is not kept
      },
    );
    this.chainCheck = check;
    return check.result;
  }

  /**
   * Records an event. With `tx` it is written at once in that transaction, and a failure to
   * write fails the change it records. Without, it reaches the database within a few
   * milliseconds together with others (logins), and a failure to write is logged loudly but
   * does not fail the request.
   */
  async record(event: AuditEvent, tx?: ChangeTransaction): Promise<void> {
    if (tx) {
      await tx.audit.append([auditRecord(event)]);
      return;
    }
    this.queue.push(auditRecord(event));
    this.flushing ??= new Promise<void>((resolve) => setTimeout(resolve, FLUSH_DELAY_MS)).then(() => this.write());
  }

  /** Writes whatever is queued, and waits for a batch already being written (on shutdown, before reading). */
  async flush(): Promise<void> {
    await this.flushing;
    if (this.queue.length > 0) await this.write();
    await this.writing;
  }

  private write(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    this.flushing = undefined;
    this.writing = this.writing.then(() => this.writeBatch(batch));
    return this.writing;
  }

  private async writeBatch(batch: AuditRecord[]): Promise<void> {
    for (let i = 0; i < batch.length; i += BATCH_SIZE) {
      const slice = batch.slice(i, i + BATCH_SIZE);
      try {
        await this.stores.audit.append(slice);
      } catch {
        // One bad event must not take the others with it: write them one by one.
        for (const event of slice) await this.writeOne(event);
      }
    }
  }

  private async writeOne(event: AuditRecord): Promise<void> {
    try {
      await this.stores.audit.append([event]);
    } catch (error) {
      this.lost++;
      this.log.error({ err: error, event: { type: event.type, at: event.at }, lost: this.lost }, 'could not record an audit event');
    }
  }

  /** The newest events, at most `limit` (1 to 1000, 100 when left out); with `type`, that type only. */
  async recent(filter: { type?: AuditEventType; limit?: number } = {}): Promise<AuditEntry[]> {
    const limit = Math.max(1, Math.min(filter.limit ?? 100, 1000));
    return (await this.page({ types: filter.type === undefined ? undefined : [filter.type], limit })).events;
  }

  /** Events matching `query`, newest first; the batch in flight is written first. */
  async page(query: AuditQuery): Promise<AuditPage> {
    await this.flush();
    const records = await this.stores.audit.query({ ...query, limit: query.limit + 1 });
    const shown = records.slice(0, query.limit);
    const last = shown[shown.length - 1];
    return { events: shown.map(toEntry), ...(records.length > query.limit && last ? { nextBeforeSeq: last.seq } : {}) };
  }
}
