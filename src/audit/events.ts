// The audit trail's writer. For now: logins and administrative changes; the trust and audit
// issues extend it (hash chaining, tag moves, signatures) on the same table. Logins are many and
// are written in batches; an administrative change writes its event in its own transaction.
import { isIP } from 'node:net';
import { AUDIT_COLUMNS, type AuditRecord, type AuthStores } from '../metadata/auth-stores.js';
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
  | 'user.removed';

export interface AuditEvent {
  type: AuditEventType;
  actor?: string | undefined;
  clientIp?: string | undefined;
  repository?: string | undefined;
  details?: Record<string, unknown>;
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
  return clean.length <= max ? clean : `${clean.slice(0, max - 1)}…`;
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

/** An event as the store keeps it: every value made to fit whatever the database accepts. */
function toRecord(event: AuditEvent): AuditRecord {
  const details = event.details ? JSON.stringify(event.details) : undefined;
  return {
    at: Date.now(),
    type: event.type,
    actor: event.actor === undefined ? undefined : storable(event.actor, AUDIT_COLUMNS.actor),
    clientIp: storableAddress(event.clientIp),
    repository: event.repository === undefined ? undefined : storable(event.repository, AUDIT_COLUMNS.repository),
    // JSON escapes control characters itself; an oversized document is replaced by a note saying so.
    details: details === undefined ? undefined : details.length <= MAX_DETAILS ? storable(details, MAX_DETAILS) : JSON.stringify({ truncated: true, length: details.length }),
  };
}

/** The transaction an administrative change and the events recording it share (see AuditLog.transaction). */
export type ChangeTransaction = AuthStores;

export class AuditLog {
  private queue: AuditRecord[] = [];
  private flushing: Promise<void> | undefined;
  /** Events that could not be written at all since start (each also logged at error level). */
  lost = 0;

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
   * Records an event. With `tx` it is written at once in that transaction, and a failure to
   * write fails the change it records. Without, it reaches the database within a few
   * milliseconds together with others (logins), and a failure to write is logged loudly but
   * does not fail the request.
   */
  async record(event: AuditEvent, tx?: ChangeTransaction): Promise<void> {
    if (tx) {
      await tx.audit.append([toRecord(event)]);
      return;
    }
    this.queue.push(toRecord(event));
    this.flushing ??= new Promise<void>((resolve) => setTimeout(resolve, FLUSH_DELAY_MS)).then(() => this.write());
  }

  /** Writes whatever is queued (also on shutdown and before reading). */
  async flush(): Promise<void> {
    await this.flushing;
    if (this.queue.length > 0) await this.write();
  }

  private async write(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    this.flushing = undefined;
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

  async recent(filter: { type?: AuditEventType; limit?: number } = {}): Promise<(AuditEvent & { at: number })[]> {
    await this.flush();
    const records = await this.stores.audit.recent({ type: filter.type, limit: Math.max(1, Math.min(filter.limit ?? 100, 1000)) });
    return records.map((record) => ({
      at: record.at,
      type: record.type as AuditEventType,
      actor: record.actor,
      clientIp: record.clientIp,
      repository: record.repository,
      ...(record.details ? { details: JSON.parse(record.details) as Record<string, unknown> } : {}),
    }));
  }
}
