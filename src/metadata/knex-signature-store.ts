// SignatureStore on knex (SQLite and PostgreSQL). Every write appends the audit events that
// record it last in its own transaction (they hold the audit chain's head until it ends).
import type { Knex } from 'knex';
import type { AuditRecord } from './auth-stores.js';
import { withDatabase } from './errors.js';
import { appendAuditEvents } from './knex-auth-stores.js';
import type {
  AddSignatureOutcome,
  JudgedRepository,
  NewSignature,
  SignatureStore,
  StoredSignature,
  StoredVerification,
  VerificationRecord,
} from './signature-store.js';

interface SignatureRow {
  name: string;
  content_digest: string;
  content: Buffer;
  created_at: number | string;
}

/** A row of signature_verifications as the stores read it (the report reads them too). */
export interface VerificationRow {
  format: string;
  signature_ref: string;
  outcome: string;
  signer: string | null;
  identity: string | null;
  reason: string;
  verified_at: number | string;
  policy_digest: string | null;
}

interface StoredVerificationRow extends VerificationRow {
  id: number | string;
  repository: string;
  manifest_digest: string;
}

const VERIFICATION_COLUMNS = ['v.format', 'v.signature_ref', 'v.outcome', 'v.signer', 'v.identity', 'v.reason', 'v.verified_at', 'v.policy_digest'];

const toSignature = (row: SignatureRow): StoredSignature => ({
  name: row.name,
  content: row.content,
  contentDigest: row.content_digest,
  createdAt: Number(row.created_at),
});

export const toVerification = (row: VerificationRow): VerificationRecord => ({
  format: row.format,
  signatureRef: row.signature_ref,
  outcome: row.outcome === 'valid' ? 'valid' : 'invalid',
  signer: row.signer ?? undefined,
  identity: row.identity ?? undefined,
  reason: row.reason,
  verifiedAt: Number(row.verified_at),
  policyDigest: row.policy_digest ?? undefined,
});

/** The columns a new judgement of a signature replaces. */
const judgement = (record: VerificationRecord) => ({
  outcome: record.outcome,
  signer: record.signer ?? null,
  identity: record.identity ?? null,
  reason: record.reason,
  verified_at: record.verifiedAt,
  policy_digest: record.policyDigest ?? null,
});

/** Results joined to the manifest and repository they belong to. */
const verificationsWithManifests = (db: Knex) =>
  db('signature_verifications as v').join('manifests as m', 'm.id', 'v.manifest_id').join('repositories as r', 'r.id', 'm.repository_id');

export class KnexSignatureStore implements SignatureStore {
  private readonly isPostgres: boolean;

  constructor(private readonly db: Knex) {
    this.isPostgres = db.client.config.client === 'pg';
  }

  /**
   * The manifest row's id. With `lock` (PostgreSQL; SQLite serialises writers by itself) the row
   * stays locked to the end of the transaction: signature writes for one manifest take turns,
   * and the manifest cannot be deleted under them.
   */
  private async manifestId(db: Knex, repository: string, manifestDigest: string, lock = false): Promise<number | undefined> {
    const query = db('manifests as m')
      .join('repositories as r', 'r.id', 'm.repository_id')
      .where({ 'r.name': repository, 'm.digest': manifestDigest })
      .first('m.id');
    if (lock && this.isPostgres) void query.forUpdate('m');
    const row = (await query) as { id: number } | undefined;
    return row?.id;
  }

  private async upsertVerification(db: Knex, manifestId: number, record: VerificationRecord): Promise<void> {
    const row = { manifest_id: manifestId, format: record.format, signature_ref: record.signatureRef, ...judgement(record) };
    await db('signature_verifications')
      .insert(row)
      .onConflict(['manifest_id', 'format', 'signature_ref'])
      .merge(['outcome', 'signer', 'identity', 'reason', 'verified_at', 'policy_digest']);
  }

  signaturesOf(repository: string, manifestDigest: string): Promise<StoredSignature[] | undefined> {
    return withDatabase(async () => {
      const id = await this.manifestId(this.db, repository, manifestDigest);
      if (id === undefined) return undefined;
      const rows = (await this.db('signatures')
        .where({ manifest_id: id })
        .orderBy('id')
        .select('name', 'content_digest', 'content', 'created_at')) as SignatureRow[];
      return rows.map(toSignature);
    });
  }

  addSignature(
    repository: string,
    manifestDigest: string,
    signature: NewSignature,
    verification: VerificationRecord,
    limit: number,
    auditEvents: readonly AuditRecord[] = [],
  ): Promise<AddSignatureOutcome> {
    return withDatabase(() =>
      this.db.transaction(async (trx): Promise<AddSignatureOutcome> => {
        const id = await this.manifestId(trx, repository, manifestDigest, true);
        if (id === undefined) return { status: 'manifest-unknown' };
        const present = (await trx('signatures').where({ manifest_id: id }).select('name', 'content_digest')) as Pick<
          SignatureRow,
          'name' | 'content_digest'
        >[];
        if (present.some((row) => row.content_digest === signature.contentDigest)) return { status: 'duplicate' };
        if (present.some((row) => row.name === signature.name)) return { status: 'name-taken' };
        if (present.length >= limit) return { status: 'limit-reached', limit };
        await trx('signatures').insert({
          manifest_id: id,
          name: signature.name,
          content_digest: signature.contentDigest,
          content: signature.content,
          created_at: Date.now(),
        });
        await this.upsertVerification(trx, id, verification);
        await appendAuditEvents(trx, auditEvents);
        return { status: 'added' };
      }),
    );
  }

  recordVerification(repository: string, manifestDigest: string, verification: VerificationRecord, auditEvents: readonly AuditRecord[] = []): Promise<boolean> {
    return withDatabase(() =>
      this.db.transaction(async (trx) => {
        const id = await this.manifestId(trx, repository, manifestDigest, true);
        if (id === undefined) return false;
        await this.upsertVerification(trx, id, verification);
        await appendAuditEvents(trx, auditEvents);
        return true;
      }),
    );
  }

  verificationsOf(repository: string, manifestDigest: string): Promise<VerificationRecord[]> {
    return withDatabase(async () => {
      const rows = (await this.db('signature_verifications as v')
        .join('manifests as m', 'm.id', 'v.manifest_id')
        .join('repositories as r', 'r.id', 'm.repository_id')
        .where({ 'r.name': repository, 'm.digest': manifestDigest })
        .orderBy('v.id')
        .select(VERIFICATION_COLUMNS)) as VerificationRow[];
      return rows.map(toVerification);
    });
  }

  manifestPayload(repository: string, manifestDigest: string): Promise<Buffer | undefined> {
    return withDatabase(async () => {
      const row = (await this.db('manifests as m')
        .join('repositories as r', 'r.id', 'm.repository_id')
        .where({ 'r.name': repository, 'm.digest': manifestDigest })
        .first('m.payload')) as { payload: Buffer } | undefined;
      return row?.payload;
    });
  }

  judgedRepositories(after: string | undefined, limit: number): Promise<JudgedRepository[]> {
    return withDatabase(async () => {
      // Walked from the repositories' name index; each asks whether it holds any result at all.
      const holding = this.db('manifests as m')
        .join('signature_verifications as v', 'v.manifest_id', 'm.id')
        .whereRaw('m.repository_id = r.id')
        .select(this.db.raw('1'));
      const page = this.db('repositories as r').whereExists(holding).orderBy('r.name').limit(limit).select('r.name');
      if (after !== undefined) void page.where('r.name', '>', after);
      const names = ((await page) as { name: string }[]).map((row) => row.name);
      if (names.length === 0) return [];
      const pairs = (await verificationsWithManifests(this.db)
        .whereIn('r.name', names)
        .groupBy('r.name', 'v.policy_digest')
        .select('r.name', 'v.policy_digest')) as { name: string; policy_digest: string | null }[];
      return names.map((repository) => ({
        repository,
        policyDigests: pairs.filter((pair) => pair.name === repository).map((pair) => pair.policy_digest ?? undefined),
      }));
    });
  }

  staleVerifications(repository: string, policyDigest: string | undefined, afterId: number, limit: number): Promise<StoredVerification[]> {
    return withDatabase(async () => {
      const rows = (await verificationsWithManifests(this.db)
        .where('r.name', repository)
        .andWhere('v.id', '>', afterId)
        .andWhere((q) => (policyDigest === undefined ? q.whereNotNull('v.policy_digest') : q.whereNull('v.policy_digest').orWhereNot('v.policy_digest', policyDigest)))
        .orderBy('v.id')
        .limit(limit)
        .select('v.id', 'r.name as repository', 'm.digest as manifest_digest', ...VERIFICATION_COLUMNS)) as StoredVerificationRow[];
      return rows.map((row) => ({ id: Number(row.id), repository: row.repository, manifestDigest: row.manifest_digest, record: toVerification(row) }));
    });
  }

  replaceVerification(stale: StoredVerification, verification: VerificationRecord, auditEvents: readonly AuditRecord[] = []): Promise<boolean> {
    return withDatabase(() =>
      this.db.transaction(async (trx) => {
        // Compare-and-set on the policy it was judged under: on PostgreSQL a concurrent writer's
        // update makes this one re-check the row, find it changed, and write nothing.
        const judgedBefore = stale.record.policyDigest;
        const updated = await trx('signature_verifications')
          .where({ id: stale.id })
          .andWhere((q) => (judgedBefore === undefined ? q.whereNull('policy_digest') : q.where('policy_digest', judgedBefore)))
          .update(judgement(verification));
        if (updated !== 1) return false;
        await appendAuditEvents(trx, auditEvents);
        return true;
      }),
    );
  }
}
