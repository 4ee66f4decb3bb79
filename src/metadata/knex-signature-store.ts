// SignatureStore on knex (SQLite and PostgreSQL). Constructed on the pool or on a transaction,
// so a caller can make a signature and what records it (an audit event) one unit.
import type { Knex } from 'knex';
import { withDatabase } from './errors.js';
import type { AddSignatureOutcome, NewSignature, SignatureStore, StoredSignature, VerificationRecord } from './signature-store.js';

interface SignatureRow {
  name: string;
  content_digest: string;
  content: Buffer;
  created_at: number | string;
}

interface VerificationRow {
  format: string;
  signature_ref: string;
  outcome: string;
  signer: string | null;
  identity: string | null;
  reason: string;
  verified_at: number | string;
}

const toSignature = (row: SignatureRow): StoredSignature => ({
  name: row.name,
  content: row.content,
  contentDigest: row.content_digest,
  createdAt: Number(row.created_at),
});

const toVerification = (row: VerificationRow): VerificationRecord => ({
  format: row.format,
  signatureRef: row.signature_ref,
  outcome: row.outcome === 'valid' ? 'valid' : 'invalid',
  signer: row.signer ?? undefined,
  identity: row.identity ?? undefined,
  reason: row.reason,
  verifiedAt: Number(row.verified_at),
});

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
    const row = {
      manifest_id: manifestId,
      format: record.format,
      signature_ref: record.signatureRef,
      outcome: record.outcome,
      signer: record.signer ?? null,
      identity: record.identity ?? null,
      reason: record.reason,
      verified_at: record.verifiedAt,
    };
    await db('signature_verifications')
      .insert(row)
      .onConflict(['manifest_id', 'format', 'signature_ref'])
      .merge(['outcome', 'signer', 'identity', 'reason', 'verified_at']);
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
        return { status: 'added' };
      }),
    );
  }

  recordVerification(repository: string, manifestDigest: string, verification: VerificationRecord): Promise<boolean> {
    return withDatabase(() =>
      this.db.transaction(async (trx) => {
        const id = await this.manifestId(trx, repository, manifestDigest, true);
        if (id === undefined) return false;
        await this.upsertVerification(trx, id, verification);
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
        .select('v.format', 'v.signature_ref', 'v.outcome', 'v.signer', 'v.identity', 'v.reason', 'v.verified_at')) as VerificationRow[];
      return rows.map(toVerification);
    });
  }
}
