// The seam for who may do what: local users, access rules, robot accounts, refresh tokens and the
// audit trail, kept in the same database as the registry's metadata. As in store.ts, every method
// is atomic on its own; `transaction` makes several calls, across all these stores, one unit, so
// an administrative change and the audit event that records it commit together or not at all.
// Records are plain values: what they mean (password hashes, rule grammar, secrets) is auth's.

export type PrincipalKind = 'user' | 'robot';
export type PrincipalProvider = 'local' | 'ldap' | 'robot';

/** Column widths of migrations/20261126_002_auth.ts and …_005_audit_chain.ts that callers check values against (or cut them to) first. */
export const ROBOT_COLUMNS = { description: 512, createdBy: 255 } as const;
export const AUDIT_COLUMNS = { type: 64, actorKind: 16, actor: 255, clientIp: 64, repository: 255, tag: 128, digest: 160, outcome: 16, reason: 512 } as const;

export interface UserRecord {
  username: string;
  passwordHash: string;
  admin: boolean;
  createdAt: number;
}

export type UserSummary = Omit<UserRecord, 'passwordHash'>;

export interface UserStore {
  get(username: string): Promise<UserRecord | undefined>;
  /** Adds a user unless the name is taken (false then): one statement decides, also between replicas. */
  insert(user: UserRecord): Promise<boolean>;
  /** False when there is no such user. */
  setPasswordHash(username: string, passwordHash: string): Promise<boolean>;
  delete(username: string): Promise<boolean>;
  /**
   * The administrators' names. Inside a transaction (on PostgreSQL) their rows stay locked until
   * it ends, so two removals at once cannot each count on the other administrator staying.
   */
  lockAdministrators(): Promise<string[]>;
  count(): Promise<number>;
  /** Every user by name, without password hashes. */
  list(): Promise<UserSummary[]>;
  /** Whether the bootstrap administrator was dealt with once in the life of this database. */
  bootstrapRecorded(): Promise<boolean>;
  /** Records the bootstrap with a note (who was created, or why nobody was); fails when already recorded. */
  recordBootstrap(note: string): Promise<void>;
}

export interface RuleRecord {
  id: number;
  /** the subject as text (`group:…`, `user:…`, `robot:…`, `anonymous`, `authenticated`) */
  subject: string;
  repositories: string;
  actions: string[];
}

export type NewRule = Omit<RuleRecord, 'id'>;

export interface RuleStore {
  /**
   * Every rule in the order it was created. With `lock`, inside a transaction, concurrent locked
   * readers wait until it ends: a whole-set replacement reads a set nobody else is replacing.
   */
  list(options?: { lock?: boolean }): Promise<RuleRecord[]>;
  /** Stores a rule; for subject and repositories already present, replaces its actions. Returns it as stored. */
  put(rule: NewRule): Promise<RuleRecord>;
  /** False when there is no such rule (also for ids no rule can have). */
  delete(id: number): Promise<boolean>;
  deleteRule(subject: string, repositories: string): Promise<boolean>;
  /** Removes every rule of a subject; returns how many. */
  deleteSubject(subject: string): Promise<number>;
}

export interface RobotRecord {
  name: string;
  secretHash: string;
  description?: string | undefined;
  createdBy: string;
  createdAt: number;
  expiresAt?: number | undefined;
  revokedAt?: number | undefined;
}

export interface RobotStore {
  /** Adds a robot unless the name is taken (false then): one statement decides, also between replicas. */
  insert(robot: RobotRecord): Promise<boolean>;
  get(name: string): Promise<RobotRecord | undefined>;
  list(): Promise<RobotRecord[]>;
  /** Marks a robot revoked now; false when there is none or it was revoked already. */
  revoke(name: string): Promise<boolean>;
}

/** registry: docker login's offline tokens and the OAuth2 grant; console: a web console sign-in. */
export type RefreshTokenPurpose = 'registry' | 'console';

export interface RefreshTokenRecord {
  id: string;
  purpose: RefreshTokenPurpose;
  secretHash: string;
  principalKind: PrincipalKind;
  principalName: string;
  provider: PrincipalProvider;
  createdAt: number;
  expiresAt: number;
  lastUsedAt?: number | undefined;
  revokedAt?: number | undefined;
}

export interface RefreshTokenStore {
  /**
   * Stores a token and, in the same step, drops the principal's expired tokens of that purpose
   * and those beyond its `keepNewest` newest.
   */
  insert(token: RefreshTokenRecord, keepNewest: number): Promise<void>;
  get(id: string): Promise<RefreshTokenRecord | undefined>;
  markUsed(id: string): Promise<void>;
  /** Oldest first; with `principalName`, that principal's only. */
  list(filter?: { principalName?: string }): Promise<RefreshTokenRecord[]>;
  /** Revokes one token now; false when there is none or it was revoked already. */
  revoke(id: string): Promise<boolean>;
  /** Revokes every unrevoked token of a principal; returns how many. */
  revokeAll(kind: PrincipalKind, name: string): Promise<number>;
}

export interface AuditRecord {
  at: number;
  type: string;
  /** `user`, `robot`, `anonymous`, `cli` or `system` */
  actorKind?: string | undefined;
  actor?: string | undefined;
  clientIp?: string | undefined;
  repository?: string | undefined;
  tag?: string | undefined;
  oldDigest?: string | undefined;
  newDigest?: string | undefined;
  outcome?: string | undefined;
  reason?: string | undefined;
  /** a JSON document */
  details?: string | undefined;
}

/** An event as the chain holds it (src/metadata/audit-chain.ts): its position, the previous event's hash and its own. */
export interface ChainedAuditRecord extends AuditRecord {
  /** the row's id: a storage detail, not hashed */
  id: number;
  seq: number;
  /** empty when the row has none */
  prevHash: string;
  hash: string | undefined;
}

/** Which events to read, newest first: every filter given must match. */
export interface AuditQuery {
  types?: readonly string[] | undefined;
  actorKind?: string | undefined;
  actor?: string | undefined;
  repository?: string | undefined;
  /** at >= since (epoch ms) */
  since?: number | undefined;
  /** at < until (epoch ms) */
  until?: number | undefined;
  /** only events with a smaller seq: the cursor of the next page */
  beforeSeq?: number | undefined;
  limit: number;
}

export interface AuditStore {
  /**
   * Appends events to the chain, all or none: under a lock on the chain head, so that concurrent
   * writers (other replicas too) extend one chain. Inside a transaction the lock is held until it
   * ends: append last, after the change the events record.
   */
  append(events: readonly AuditRecord[]): Promise<void>;
  /** The newest events first, at most `limit`; with `type`, that type only. */
  recent(filter: { type?: string | undefined; limit: number }): Promise<ChainedAuditRecord[]>;
  /** The newest events that match, first. */
  query(query: AuditQuery): Promise<ChainedAuditRecord[]>;
  /** The chain's head: the newest event's seq and hash (seq 0 before any); undefined when its row is gone. */
  head(): Promise<{ seq: number; hash: string } | undefined>;
  /** Up to `limit` events with afterSeq < seq <= throughSeq, oldest first (to walk the chain). */
  chainSlice(afterSeq: number, throughSeq: number, limit: number): Promise<ChainedAuditRecord[]>;
  /** Ids of up to `limit` rows that have no place in the chain (no seq): only a direct write makes one. */
  unchained(limit: number): Promise<number[]>;
}

export interface AuthStores {
  readonly users: UserStore;
  readonly rules: RuleStore;
  readonly robots: RobotStore;
  readonly refreshTokens: RefreshTokenStore;
  readonly audit: AuditStore;
  /**
   * Runs `work` as one transaction over the stores it is given: what it does commits when it
   * returns and is undone when it throws. Called on a transaction's stores it nests: a failure
   * inside undoes the inner work only, and the enclosing transaction still decides the rest.
   * Inside `work`, use only `tx`: the stores outside would wait for a connection the
   * transaction holds (SQLite has one).
   */
  transaction<T>(work: (tx: AuthStores) => Promise<T>): Promise<T>;
}
