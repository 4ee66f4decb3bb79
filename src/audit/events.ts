// The audit trail's writer. For now: logins and administrative changes; the trust and audit
// issues extend it (hash chaining, tag moves, signatures) on the same table.
import { isIP } from 'node:net';
import type { Knex } from 'knex';
import type { Logger } from 'pino';

export type AuditEventType =
  | 'login.success'
  | 'login.failure'
  | 'robot.created'
  | 'robot.revoked'
  | 'rules.changed'
  | 'refresh_token.revoked';

export interface AuditEvent {
  type: AuditEventType;
  actor?: string | undefined;
  clientIp?: string | undefined;
  repository?: string | undefined;
  details?: Record<string, unknown>;
}

interface Row {
  at: number | string;
  type: AuditEventType;
  actor: string | null;
  client_ip: string | null;
  repository: string | null;
  details: string | null;
}

/** Events are written in small batches: one transaction for many logins instead of one each. */
const FLUSH_DELAY_MS = 20;

/** Column sizes of audit_events (migrations/20261126_002_auth.ts); values are cut to fit. */
const LIMITS = { actor: 255, client_ip: 64, repository: 255, details: 64 * 1024 } as const;

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

/** A client address as stored: an IP address, or nothing. */
function storableAddress(address: string | undefined): string | null {
  if (address === undefined) return null;
  return isIP(address) ? address : null;
}

interface AuditRow {
  at: number;
  type: AuditEventType;
  actor: string | null;
  client_ip: string | null;
  repository: string | null;
  details: string | null;
}

function toRow(event: AuditEvent): AuditRow {
  const details = event.details ? JSON.stringify(event.details) : null;
  return {
    at: Date.now(),
    type: event.type,
    actor: event.actor === undefined ? null : storable(event.actor, LIMITS.actor),
    client_ip: storableAddress(event.clientIp),
    repository: event.repository === undefined ? null : storable(event.repository, LIMITS.repository),
    // JSON escapes control characters itself; an oversized document is replaced by a note saying so.
    details: details === null ? null : details.length <= LIMITS.details ? storable(details, LIMITS.details) : JSON.stringify({ truncated: true, length: details.length }),
  };
}

export class AuditLog {
  private queue: AuditRow[] = [];
  private flushing: Promise<void> | undefined;
  /** Events that could not be written at all since start (each also logged at error level). */
  lost = 0;

  constructor(
    private readonly db: Knex,
    private readonly log: Logger,
  ) {}

  /**
   * Records an event; it reaches the database within a few milliseconds, together with others.
   * A failure to write is logged loudly but does not fail the request.
   */
  async record(event: AuditEvent): Promise<void> {
    this.queue.push(toRow(event));
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
    for (let i = 0; i < batch.length; i += 100) {
      const slice = batch.slice(i, i + 100);
      try {
        await this.db('audit_events').insert(slice);
      } catch {
        // One bad event must not take the others with it: write them one by one.
        for (const row of slice) await this.writeOne(row);
      }
    }
  }

  private async writeOne(row: AuditRow): Promise<void> {
    try {
      await this.db('audit_events').insert(row);
    } catch (error) {
      this.lost++;
      this.log.error({ err: error, event: { type: row.type, at: row.at }, lost: this.lost }, 'could not record an audit event');
    }
  }

  async recent(filter: { type?: AuditEventType; limit?: number } = {}): Promise<(AuditEvent & { at: number })[]> {
    await this.flush();
    const query = this.db('audit_events').orderBy('id', 'desc').limit(Math.max(1, Math.min(filter.limit ?? 100, 1000)));
    if (filter.type) query.where({ type: filter.type });
    return ((await query) as Row[]).map((row) => ({
      at: Number(row.at),
      type: row.type,
      actor: row.actor ?? undefined,
      clientIp: row.client_ip ?? undefined,
      repository: row.repository ?? undefined,
      ...(row.details ? { details: JSON.parse(row.details) as Record<string, unknown> } : {}),
    }));
  }
}
