// The audit trail's writer. For now: logins and administrative changes; the trust and audit
// issues extend it (hash chaining, tag moves, signatures) on the same table.
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

export class AuditLog {
  private queue: Record<string, unknown>[] = [];
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly db: Knex,
    private readonly log: Logger,
  ) {}

  /**
   * Records an event; it reaches the database within a few milliseconds, together with others.
   * A failure to write is logged loudly but does not fail the request.
   */
  async record(event: AuditEvent): Promise<void> {
    this.queue.push({
      at: Date.now(),
      type: event.type,
      actor: event.actor ?? null,
      client_ip: event.clientIp ?? null,
      repository: event.repository ?? null,
      details: event.details ? JSON.stringify(event.details) : null,
    });
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
    try {
      for (let i = 0; i < batch.length; i += 100) await this.db('audit_events').insert(batch.slice(i, i + 100));
    } catch (error) {
      this.log.error({ err: error, events: batch.length }, 'could not record audit events');
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
