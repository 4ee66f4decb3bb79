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

export class AuditLog {
  constructor(
    private readonly db: Knex,
    private readonly log: Logger,
  ) {}

  /** Records an event; a failure to record is logged loudly but does not fail the request. */
  async record(event: AuditEvent): Promise<void> {
    try {
      await this.db('audit_events').insert({
        at: Date.now(),
        type: event.type,
        actor: event.actor ?? null,
        client_ip: event.clientIp ?? null,
        repository: event.repository ?? null,
        details: event.details ? JSON.stringify(event.details) : null,
      });
    } catch (error) {
      this.log.error({ err: error, event: event.type }, 'could not record audit event');
    }
  }

  async recent(filter: { type?: AuditEventType; limit?: number } = {}): Promise<(AuditEvent & { at: number })[]> {
    const query = this.db('audit_events').orderBy('id', 'desc').limit(Math.min(filter.limit ?? 100, 1000));
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
