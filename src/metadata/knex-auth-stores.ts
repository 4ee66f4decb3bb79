// AuthStores on knex: the same code serves SQLite (embedded) and PostgreSQL. Every query on the
// users, access_rules, robot_accounts, refresh_tokens, audit_events, audit_chain_head and
// admin_state tables is here. The audit chain's canonical form is ./audit-chain.ts (the store
// takes each hash here, under the lock on the chain head).
import type { Knex } from 'knex';
import { withDatabase } from './errors.js';
import { eventHash } from './audit-chain.js';
import type {
  AuditQuery,
  AuditRecord,
  AuditStore,
  AuthStores,
  ChainedAuditRecord,
  NewRule,
  PrincipalKind,
  PrincipalProvider,
  RefreshTokenPurpose,
  RefreshTokenRecord,
  RefreshTokenStore,
  RobotRecord,
  RobotStore,
  RuleRecord,
  RuleStore,
  UserRecord,
  UserStore,
  UserSummary,
} from './auth-stores.js';

/** The admin_state row that says the bootstrap administrator was dealt with (migrations/…_004_admin_state.ts). */
const BOOTSTRAP_KEY = 'bootstrap_admin';

/** Rows per INSERT: well below every driver's limit on bound parameters. */
const INSERT_CHUNK = 100;

/** access_rules.id is a 32-bit serial: PostgreSQL refuses a larger value in a comparison instead of finding nothing. */
const MAX_RULE_ID = 2_147_483_647;

type Timestamp = number | string;
const optionalTime = (value: Timestamp | null): number | undefined => (value === null ? undefined : Number(value));

/** Where the stores send their queries: the pool, or one transaction. */
class Connection {
  readonly isPostgres: boolean;

  constructor(readonly db: Knex) {
    this.isPostgres = db.client.config.client === 'pg';
  }

  /** One statement, failures reported as the metadata errors (unavailable, unstorable value). */
  run<T>(work: (db: Knex) => Promise<T>): Promise<T> {
    return withDatabase(() => work(this.db));
  }

  /** Several statements as one: a transaction, or a savepoint inside the transaction we are in. */
  atomic<T>(work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return withDatabase(() => this.db.transaction(work));
  }
}

interface UserRow {
  username: string;
  password_hash: string;
  admin: number | boolean;
  created_at: Timestamp;
}

const toUserSummary = (row: Omit<UserRow, 'password_hash'>): UserSummary => ({
  username: row.username,
  admin: Boolean(row.admin),
  createdAt: Number(row.created_at),
});

class KnexUserStore implements UserStore {
  constructor(private readonly connection: Connection) {}

  get(username: string): Promise<UserRecord | undefined> {
    return this.connection.run(async (db) => {
      const row = (await db('users').where({ username }).first('username', 'password_hash', 'admin', 'created_at')) as UserRow | undefined;
      return row && { ...toUserSummary(row), passwordHash: row.password_hash };
    });
  }

  insert(user: UserRecord): Promise<boolean> {
    return this.connection.run(async (db) => {
      const row = { username: user.username, password_hash: user.passwordHash, admin: user.admin, created_at: user.createdAt, updated_at: user.createdAt };
      const inserted = (await db('users').insert(row).onConflict('username').ignore().returning('username')) as unknown[];
      return inserted.length > 0;
    });
  }

  setPasswordHash(username: string, passwordHash: string): Promise<boolean> {
    return this.connection.run(async (db) => (await db('users').where({ username }).update({ password_hash: passwordHash, updated_at: Date.now() })) > 0);
  }

  delete(username: string): Promise<boolean> {
    return this.connection.run(async (db) => (await db('users').where({ username }).delete()) > 0);
  }

  lockAdministrators(): Promise<string[]> {
    return this.connection.run(async (db) => {
      const query = db('users').where({ admin: true }).orderBy('username');
      // SQLite has one writer at a time: a transaction that writes is alone anyway.
      if (this.connection.isPostgres) query.forUpdate();
      return (await query.pluck('username')) as string[];
    });
  }

  count(): Promise<number> {
    return this.connection.run(async (db) => {
      const row = (await db('users').count({ n: '*' }).first()) as { n: number | string } | undefined;
      return Number(row?.n ?? 0);
    });
  }

  list(): Promise<UserSummary[]> {
    return this.connection.run(async (db) => {
      const rows = (await db('users').orderBy('username').select('username', 'admin', 'created_at')) as Omit<UserRow, 'password_hash'>[];
      return rows.map(toUserSummary);
    });
  }

  bootstrapRecorded(): Promise<boolean> {
    return this.connection.run(async (db) => (await db('admin_state').where({ key: BOOTSTRAP_KEY }).first('key')) !== undefined);
  }

  recordBootstrap(note: string): Promise<void> {
    return this.connection.run(async (db) => {
      await db('admin_state').insert({ key: BOOTSTRAP_KEY, value: note, recorded_at: Date.now() });
    });
  }
}

interface RuleRow {
  id: number | string;
  subject: string;
  repositories: string;
  actions: string;
}

const toRuleRecord = (row: RuleRow): RuleRecord => ({
  id: Number(row.id),
  subject: row.subject,
  repositories: row.repositories,
  actions: row.actions.split(',').filter((action) => action.length > 0),
});

class KnexRuleStore implements RuleStore {
  constructor(private readonly connection: Connection) {}

  list(options: { lock?: boolean } = {}): Promise<RuleRecord[]> {
    return this.connection.run(async (db) => {
      // Outside a transaction the lock ends with the statement; SQLite serialises writers itself.
      if (options.lock && this.connection.isPostgres) await db.raw('select pg_advisory_xact_lock(hashtext(?))', ['access_rules']);
      return ((await db('access_rules').orderBy('id').select('id', 'subject', 'repositories', 'actions')) as RuleRow[]).map(toRuleRecord);
    });
  }

  put(rule: NewRule): Promise<RuleRecord> {
    return this.connection.atomic(async (trx) => {
      const row = { subject: rule.subject, repositories: rule.repositories, actions: rule.actions.join(','), created_at: Date.now() };
      await trx('access_rules').insert(row).onConflict(['subject', 'repositories']).merge(['actions']);
      const stored = (await trx('access_rules').where({ subject: rule.subject, repositories: rule.repositories }).first('id', 'subject', 'repositories', 'actions')) as
        | RuleRow
        | undefined;
      if (!stored) throw new Error(`rule for ${rule.subject} on ${rule.repositories} vanished inside its own transaction`);
      return toRuleRecord(stored);
    });
  }

  delete(id: number): Promise<boolean> {
    if (!Number.isSafeInteger(id) || id < 1 || id > MAX_RULE_ID) return Promise.resolve(false);
    return this.connection.run(async (db) => (await db('access_rules').where({ id }).delete()) > 0);
  }

  deleteRule(subject: string, repositories: string): Promise<boolean> {
    return this.connection.run(async (db) => (await db('access_rules').where({ subject, repositories }).delete()) > 0);
  }

  deleteSubject(subject: string): Promise<number> {
    return this.connection.run(async (db) => db('access_rules').where({ subject }).delete());
  }
}

interface RobotRow {
  name: string;
  secret_hash: string;
  description: string | null;
  created_by: string;
  created_at: Timestamp;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

const toRobotRecord = (row: RobotRow): RobotRecord => ({
  name: row.name,
  secretHash: row.secret_hash,
  description: row.description ?? undefined,
  createdBy: row.created_by,
  createdAt: Number(row.created_at),
  expiresAt: optionalTime(row.expires_at),
  revokedAt: optionalTime(row.revoked_at),
});

class KnexRobotStore implements RobotStore {
  constructor(private readonly connection: Connection) {}

  insert(robot: RobotRecord): Promise<boolean> {
    return this.connection.run(async (db) => {
      const row: RobotRow = {
        name: robot.name,
        secret_hash: robot.secretHash,
        description: robot.description ?? null,
        created_by: robot.createdBy,
        created_at: robot.createdAt,
        expires_at: robot.expiresAt ?? null,
        revoked_at: robot.revokedAt ?? null,
      };
      const inserted = (await db('robot_accounts').insert(row).onConflict('name').ignore().returning('name')) as unknown[];
      return inserted.length > 0;
    });
  }

  get(name: string): Promise<RobotRecord | undefined> {
    return this.connection.run(async (db) => {
      const row = (await db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
      return row && toRobotRecord(row);
    });
  }

  list(): Promise<RobotRecord[]> {
    return this.connection.run(async (db) => ((await db('robot_accounts').orderBy('name')) as RobotRow[]).map(toRobotRecord));
  }

  revoke(name: string): Promise<boolean> {
    return this.connection.run(async (db) => (await db('robot_accounts').where({ name }).whereNull('revoked_at').update({ revoked_at: Date.now() })) > 0);
  }
}

interface RefreshTokenRow {
  id: string;
  secret_hash: string;
  purpose: RefreshTokenPurpose;
  principal_kind: PrincipalKind;
  principal_name: string;
  provider: PrincipalProvider;
  created_at: Timestamp;
  expires_at: Timestamp;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

const toRefreshTokenRecord = (row: RefreshTokenRow): RefreshTokenRecord => ({
  id: row.id,
  purpose: row.purpose,
  secretHash: row.secret_hash,
  principalKind: row.principal_kind,
  principalName: row.principal_name,
  provider: row.provider,
  createdAt: Number(row.created_at),
  expiresAt: Number(row.expires_at),
  lastUsedAt: optionalTime(row.last_used_at),
  revokedAt: optionalTime(row.revoked_at),
});

class KnexRefreshTokenStore implements RefreshTokenStore {
  constructor(private readonly connection: Connection) {}

  insert(token: RefreshTokenRecord, keepNewest: number): Promise<void> {
    return this.connection.atomic(async (trx) => {
      const row: RefreshTokenRow = {
        id: token.id,
        purpose: token.purpose,
        secret_hash: token.secretHash,
        principal_kind: token.principalKind,
        principal_name: token.principalName,
        provider: token.provider,
        created_at: token.createdAt,
        expires_at: token.expiresAt,
        last_used_at: token.lastUsedAt ?? null,
        revoked_at: token.revokedAt ?? null,
      };
      await trx('refresh_tokens').insert(row);
      const principal = { principal_kind: token.principalKind, principal_name: token.principalName, purpose: token.purpose };
      await trx('refresh_tokens').where(principal).andWhere('expires_at', '<=', token.createdAt).delete();
      const keep = (await trx('refresh_tokens').where(principal).orderBy('created_at', 'desc').orderBy('id').limit(keepNewest).pluck('id')) as string[];
      await trx('refresh_tokens').where(principal).whereNotIn('id', keep).delete();
    });
  }

  get(id: string): Promise<RefreshTokenRecord | undefined> {
    return this.connection.run(async (db) => {
      const row = (await db('refresh_tokens').where({ id }).first()) as RefreshTokenRow | undefined;
      return row && toRefreshTokenRecord(row);
    });
  }

  markUsed(id: string): Promise<void> {
    return this.connection.run(async (db) => {
      await db('refresh_tokens').where({ id }).update({ last_used_at: Date.now() });
    });
  }

  list(filter: { principalName?: string } = {}): Promise<RefreshTokenRecord[]> {
    return this.connection.run(async (db) => {
      const query = db('refresh_tokens').orderBy('created_at').orderBy('id');
      if (filter.principalName !== undefined) query.where({ principal_name: filter.principalName });
      return ((await query) as RefreshTokenRow[]).map(toRefreshTokenRecord);
    });
  }

  revoke(id: string): Promise<boolean> {
    return this.connection.run(async (db) => (await db('refresh_tokens').where({ id }).whereNull('revoked_at').update({ revoked_at: Date.now() })) > 0);
  }

  revokeAll(kind: PrincipalKind, name: string): Promise<number> {
    return this.connection.run(async (db) =>
      db('refresh_tokens').where({ principal_kind: kind, principal_name: name }).whereNull('revoked_at').update({ revoked_at: Date.now() }),
    );
  }
}

interface AuditRow {
  at: Timestamp;
  type: string;
  actor_kind: string | null;
  actor: string | null;
  client_ip: string | null;
  repository: string | null;
  tag: string | null;
  old_digest: string | null;
  new_digest: string | null;
  outcome: string | null;
  reason: string | null;
  details: string | null;
}

interface ChainedAuditRow extends AuditRow {
  id: number | string;
  seq: Timestamp;
  prev_hash: string | null;
  hash: string | null;
}

const CHAINED_AUDIT_COLUMNS = [
  'id',
  'seq',
  'at',
  'type',
  'actor_kind',
  'actor',
  'client_ip',
  'repository',
  'tag',
  'old_digest',
  'new_digest',
  'outcome',
  'reason',
  'details',
  'prev_hash',
  'hash',
] as const;

/** The one row of audit_chain_head (migrations/…_005_audit_chain.ts). */
const CHAIN_HEAD_ID = 1;

const toAuditRow = (event: AuditRecord): AuditRow => ({
  at: event.at,
  type: event.type,
  actor_kind: event.actorKind ?? null,
  actor: event.actor ?? null,
  client_ip: event.clientIp ?? null,
  repository: event.repository ?? null,
  tag: event.tag ?? null,
  old_digest: event.oldDigest ?? null,
  new_digest: event.newDigest ?? null,
  outcome: event.outcome ?? null,
  reason: event.reason ?? null,
  details: event.details ?? null,
});

const toChainedAuditRecord = (row: ChainedAuditRow): ChainedAuditRecord => ({
  id: Number(row.id),
  seq: Number(row.seq),
  at: Number(row.at),
  type: row.type,
  actorKind: row.actor_kind ?? undefined,
  actor: row.actor ?? undefined,
  clientIp: row.client_ip ?? undefined,
  repository: row.repository ?? undefined,
  tag: row.tag ?? undefined,
  oldDigest: row.old_digest ?? undefined,
  newDigest: row.new_digest ?? undefined,
  outcome: row.outcome ?? undefined,
  reason: row.reason ?? undefined,
  details: row.details ?? undefined,
  prevHash: row.prev_hash ?? '',
  hash: row.hash ?? undefined,
});

/**
 * Locks the chain head for the rest of the transaction and reads it. PostgreSQL: the row lock
 * makes every other appender, on any replica, wait until this transaction ends, and the read
 * then sees the head it committed. SQLite has one writer: a write comes first, so the
 * transaction holds the write lock (waiting for it as long as busy_timeout allows) before it
 * reads a head nobody else can move.
 */
async function lockChainHead(trx: Knex.Transaction, isPostgres: boolean): Promise<{ seq: number; hash: string }> {
  const head = trx('audit_chain_head').where({ id: CHAIN_HEAD_ID });
  if (isPostgres) head.forUpdate();
  else await trx('audit_chain_head').where({ id: CHAIN_HEAD_ID }).update({ seq: trx.ref('seq') });
  const row = (await head.first('seq', 'hash')) as { seq: Timestamp; hash: string } | undefined;
  // Only a direct write removes it; appending without it would start a second chain.
  if (!row) throw new Error('the audit chain head (table audit_chain_head) is missing: no audit event can be appended; restore it from a backup');
  return { seq: Number(row.seq), hash: row.hash };
}

/**
 * Appends events to the audit chain on `db`: the pool (then in a transaction of their own) or a
 * transaction, such as the one of the change they record (then inside it, as a savepoint, and
 * the head stays locked until that transaction ends: append last). For the metadata store's
 * transactions as much as for AuthStores.
 */
export async function appendAuditEvents(db: Knex, events: readonly AuditRecord[]): Promise<void> {
  if (events.length === 0) return;
  const isPostgres = db.client.config.client === 'pg';
  await db.transaction(async (trx) => {
    const head = await lockChainHead(trx, isPostgres);
    let seq = head.seq;
    let previous = head.hash;
    const rows = events.map((event) => {
      seq++;
      const hash = eventHash({
        seq,
        prevHash: previous,
        at: event.at,
        type: event.type,
        actorKind: event.actorKind,
        actor: event.actor,
        clientIp: event.clientIp,
        repository: event.repository,
        tag: event.tag,
        oldDigest: event.oldDigest,
        newDigest: event.newDigest,
        outcome: event.outcome,
        reason: event.reason,
        details: event.details,
      });
      const row = { ...toAuditRow(event), seq, prev_hash: previous, hash };
      previous = hash;
      return row;
    });
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) await trx('audit_events').insert(rows.slice(i, i + INSERT_CHUNK));
    await trx('audit_chain_head').where({ id: CHAIN_HEAD_ID }).update({ seq, hash: previous, updated_at: Date.now() });
  });
}

class KnexAuditStore implements AuditStore {
  constructor(private readonly connection: Connection) {}

  append(events: readonly AuditRecord[]): Promise<void> {
    return this.connection.run((db) => appendAuditEvents(db, events));
  }

  recent(filter: { type?: string | undefined; limit: number }): Promise<ChainedAuditRecord[]> {
    return this.query({ types: filter.type === undefined ? undefined : [filter.type], limit: filter.limit });
  }

  query(query: AuditQuery): Promise<ChainedAuditRecord[]> {
    return this.connection.run(async (db) => {
      const select = db('audit_events').whereNotNull('seq').orderBy('seq', 'desc').limit(query.limit).select(CHAINED_AUDIT_COLUMNS);
      if (query.types !== undefined) select.whereIn('type', query.types);
      if (query.actorKind !== undefined) select.where({ actor_kind: query.actorKind });
      if (query.actor !== undefined) select.where({ actor: query.actor });
      if (query.repository !== undefined) select.where({ repository: query.repository });
      if (query.since !== undefined) select.where('at', '>=', query.since);
      if (query.until !== undefined) select.where('at', '<', query.until);
      if (query.beforeSeq !== undefined) select.where('seq', '<', query.beforeSeq);
      return ((await select) as ChainedAuditRow[]).map(toChainedAuditRecord);
    });
  }

  head(): Promise<{ seq: number; hash: string } | undefined> {
    return this.connection.run(async (db) => {
      const row = (await db('audit_chain_head').where({ id: CHAIN_HEAD_ID }).first('seq', 'hash')) as { seq: Timestamp; hash: string } | undefined;
      return row && { seq: Number(row.seq), hash: row.hash };
    });
  }

  chainSlice(afterSeq: number, throughSeq: number, limit: number): Promise<ChainedAuditRecord[]> {
    return this.connection.run(async (db) => {
      const rows = (await db('audit_events')
        .where('seq', '>', afterSeq)
        .andWhere('seq', '<=', throughSeq)
        .orderBy('seq')
        .limit(limit)
        .select(CHAINED_AUDIT_COLUMNS)) as ChainedAuditRow[];
      return rows.map(toChainedAuditRecord);
    });
  }

  unchained(limit: number): Promise<number[]> {
    return this.connection.run(async (db) => ((await db('audit_events').whereNull('seq').orderBy('id').limit(limit).pluck('id')) as (number | string)[]).map(Number));
  }
}

export class KnexAuthStores implements AuthStores {
  readonly users: UserStore;
  readonly rules: RuleStore;
  readonly robots: RobotStore;
  readonly refreshTokens: RefreshTokenStore;
  readonly audit: AuditStore;
  private readonly connection: Connection;

  /** On the pool, or (from `transaction`) on one transaction. */
  constructor(db: Knex) {
    this.connection = new Connection(db);
    this.users = new KnexUserStore(this.connection);
    this.rules = new KnexRuleStore(this.connection);
    this.robots = new KnexRobotStore(this.connection);
    this.refreshTokens = new KnexRefreshTokenStore(this.connection);
    this.audit = new KnexAuditStore(this.connection);
  }

  transaction<T>(work: (tx: AuthStores) => Promise<T>): Promise<T> {
    return this.connection.atomic((trx) => work(new KnexAuthStores(trx)));
  }
}
