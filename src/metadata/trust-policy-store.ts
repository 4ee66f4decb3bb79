// Trust policies as the metadata store keeps them: a repository pattern and an opaque document
// (the trust layer owns its format). The whole set is replaced at once, as `trust apply` works.
import type { Knex } from 'knex';
import { withDatabase } from './errors.js';

export interface StoredTrustPolicy {
  repositories: string;
  /** the policy as JSON */
  document: string;
  updatedAt: number;
}

export interface TrustPolicyStore {
  list(): Promise<StoredTrustPolicy[]>;
  /** Replaces every policy with `policies`, in one transaction; unchanged rows keep their time. */
  replaceAll(policies: readonly Pick<StoredTrustPolicy, 'repositories' | 'document'>[]): Promise<void>;
}

interface Row {
  repositories: string;
  document: string;
  updated_at: number | string;
}

export class KnexTrustPolicyStore implements TrustPolicyStore {
  constructor(private readonly db: Knex) {}

  list(): Promise<StoredTrustPolicy[]> {
    return withDatabase(async () => {
      const rows = (await this.db('trust_policies').orderBy('repositories').select()) as Row[];
      return rows.map((row) => ({ repositories: row.repositories, document: row.document, updatedAt: Number(row.updated_at) }));
    });
  }

  replaceAll(policies: readonly Pick<StoredTrustPolicy, 'repositories' | 'document'>[]): Promise<void> {
    return withDatabase(() =>
      this.db.transaction(async (trx) => {
        const current = new Map(((await trx('trust_policies').forUpdate().select('repositories', 'document')) as Row[]).map((row) => [row.repositories, row.document]));
        const wanted = new Set(policies.map((policy) => policy.repositories));
        const gone = [...current.keys()].filter((repositories) => !wanted.has(repositories));
        if (gone.length > 0) await trx('trust_policies').whereIn('repositories', gone).delete();
        for (const policy of policies) {
          if (current.get(policy.repositories) === policy.document) continue;
          await trx('trust_policies')
            .insert({ repositories: policy.repositories, document: policy.document, updated_at: Date.now() })
            .onConflict('repositories')
            .merge(['document', 'updated_at']);
        }
      }),
    );
  }
}
