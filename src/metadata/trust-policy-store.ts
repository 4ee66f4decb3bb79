// Trust policies as the metadata store keeps them: a repository pattern and an opaque document
// (the trust layer owns its format). The whole set is replaced at once, as `trust apply` works,
// and the audit events recording a change are appended in the transaction that makes it.
import type { Knex } from 'knex';
import type { AuditRecord } from './auth-stores.js';
import { VersionConflictError, withDatabase } from './errors.js';
import { setVersion } from './set-version.js';
import { appendAuditEvents } from './knex-auth-stores.js';

export interface StoredTrustPolicy {
  repositories: string;
  /** the policy as JSON */
  document: string;
  updatedAt: number;
}

export type NewTrustPolicy = Pick<StoredTrustPolicy, 'repositories' | 'document'>;

/** What replacing the set changes, by repository pattern (a changed document is `changed`). */
export interface TrustPolicyDiff {
  added: string[];
  removed: string[];
  changed: string[];
  /** the version of the set the difference was computed against (see trustPoliciesVersion) */
  basedOn: string;
}

/** The version of a stored set of policies (their patterns and documents). */
export function trustPoliciesVersion(rows: readonly { repositories: string; document: string }[]): string {
  return setVersion(rows.map((row) => JSON.stringify([row.repositories, row.document])));
}

export interface ReplaceOptions {
  /** only compute the difference */
  dryRun?: boolean;
  /**
   * The audit events recording a change, appended last in its transaction: the change and its
   * events commit together or not at all. Not called for a dry run or when nothing changes.
   */
  audit?: (diff: TrustPolicyDiff) => readonly AuditRecord[];
  /** replace only the set at this version (else VersionConflictError, nothing written) */
  ifVersion?: string | undefined;
}

export interface TrustPolicyStore {
  list(): Promise<StoredTrustPolicy[]>;
  /**
   * Replaces every policy with `policies` in one transaction (unchanged rows keep their time),
   * computing the difference against the set that transaction replaces.
   */
  replaceAll(policies: readonly NewTrustPolicy[], options?: ReplaceOptions): Promise<TrustPolicyDiff>;
}

interface Row {
  repositories: string;
  document: string;
  updated_at: number | string;
}

export const isEmptyDiff = (diff: TrustPolicyDiff): boolean => diff.added.length + diff.removed.length + diff.changed.length === 0;

function diffOf(current: ReadonlyMap<string, string>, wanted: readonly NewTrustPolicy[]): Omit<TrustPolicyDiff, 'basedOn'> {
  const wantedPatterns = new Set(wanted.map((policy) => policy.repositories));
  return {
    added: wanted.filter((policy) => !current.has(policy.repositories)).map((policy) => policy.repositories),
    removed: [...current.keys()].filter((repositories) => !wantedPatterns.has(repositories)),
    changed: wanted.filter((policy) => current.has(policy.repositories) && current.get(policy.repositories) !== policy.document).map((policy) => policy.repositories),
  };
}

export class KnexTrustPolicyStore implements TrustPolicyStore {
  private readonly isPostgres: boolean;

  constructor(private readonly db: Knex) {
    this.isPostgres = db.client.config.client === 'pg';
  }

  list(): Promise<StoredTrustPolicy[]> {
    return withDatabase(async () => {
      const rows = (await this.db('trust_policies').orderBy('repositories').select()) as Row[];
      return rows.map((row) => ({ repositories: row.repositories, document: row.document, updatedAt: Number(row.updated_at) }));
    });
  }

  replaceAll(policies: readonly NewTrustPolicy[], options: ReplaceOptions = {}): Promise<TrustPolicyDiff> {
    return withDatabase(() =>
      this.db.transaction(async (trx) => {
        if (!options.dryRun) await this.lockForWriting(trx);
        const rows = (await trx('trust_policies').select('repositories', 'document')) as Row[];
        const basedOn = trustPoliciesVersion(rows);
        if (options.ifVersion !== undefined && options.ifVersion !== basedOn) throw new VersionConflictError('trust policies', basedOn);
        const diff = { ...diffOf(new Map(rows.map((row) => [row.repositories, row.document])), policies), basedOn };
        if (options.dryRun || isEmptyDiff(diff)) return diff;
        if (diff.removed.length > 0) await trx('trust_policies').whereIn('repositories', diff.removed).delete();
        const now = Date.now();
        const written = new Set([...diff.added, ...diff.changed]);
        for (const policy of policies) {
          if (!written.has(policy.repositories)) continue;
          await trx('trust_policies')
            .insert({ repositories: policy.repositories, document: policy.document, updated_at: now })
            .onConflict('repositories')
            .merge(['document', 'updated_at']);
        }
        // Last: appending holds the audit chain's head until the transaction ends.
        if (options.audit) await appendAuditEvents(trx, options.audit(diff));
        return diff;
      }),
    );
  }

  /**
   * Writers take turns before reading the set, so the difference each reports (and audits) is
   * against the set it replaces. PostgreSQL: a table lock that conflicts only with writers and
   * itself (plain reads go on); SQLite: a write first, so the transaction holds the one write
   * lock before it reads.
   */
  private async lockForWriting(trx: Knex.Transaction): Promise<void> {
    if (this.isPostgres) await trx.raw('LOCK TABLE trust_policies IN SHARE ROW EXCLUSIVE MODE');
    else await trx('trust_policies').whereRaw('0 = 1').update({ updated_at: 0 });
  }
}
