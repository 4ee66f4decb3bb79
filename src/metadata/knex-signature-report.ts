// Read-only queries behind the signature report (src/trust/report.ts): the tags of the registry in
// (repository, tag) order, a bounded page at a time, each with the manifest it points at; and the
// stored verification results of a page's manifests in one query.
import type { Knex } from 'knex';
import { withDatabase } from './errors.js';
import type { VerificationRecord } from './signature-store.js';
import { toVerification, type VerificationRow } from './knex-signature-store.js';

/** Where a page starts: after this repository and tag. */
export interface ReportPosition {
  repository: string;
  tag: string;
}

export interface TaggedManifest {
  repository: string;
  tag: string;
  /** the manifest row, to ask for its verification results */
  manifestId: number;
  digest: string;
  subjectDigest?: string | undefined;
  /** the manifest's bytes, when no larger than MAX_PAYLOAD_READ (enough to tell a signature manifest) */
  payload?: Buffer | undefined;
  /** when the tag was last pointed at this manifest */
  taggedAt: number;
  /** who pointed it there, when known */
  taggedBy?: string | undefined;
  /** the manifest's size and media type */
  size: number;
  mediaType: string;
}

export interface TagQuery {
  /** repository names starting with this (a glob's literal prefix); '' for all */
  prefix: string;
  /** the prefix is the whole name */
  exact?: boolean;
  after?: ReportPosition | undefined;
  limit: number;
}

export interface SignatureReportSource {
  tags(query: TagQuery): Promise<TaggedManifest[]>;
  /** Each manifest's current results, oldest signature first; a manifest without any is absent. */
  verifications(manifestIds: readonly number[]): Promise<Map<number, VerificationRecord[]>>;
}

/** Manifest bytes read per row at most: signature manifests are small, images' can be megabytes. */
export const MAX_PAYLOAD_READ = 64 * 1024;

/**
 * Above every character a repository name may hold ([a-z0-9._/-]): names starting with a prefix
 * lie in [prefix, prefix + '~') in byte order, the columns' collation.
 */
const AFTER_NAME_CHARACTERS = '~';

interface TagRow {
  repository: string;
  tag: string;
  manifest_id: number;
  digest: string;
  subject_digest: string | null;
  payload: Buffer | null;
  updated_at: number | string;
  updated_by: string | null;
  size: number | string;
  media_type: string;
}


export class KnexSignatureReport implements SignatureReportSource {
  constructor(private readonly db: Knex) {}

  tags(query: TagQuery): Promise<TaggedManifest[]> {
    return withDatabase(async () => {
      const select = this.db('tags as t')
        .join('manifests as m', 'm.id', 't.manifest_id')
        .join('repositories as r', 'r.id', 't.repository_id')
        .orderBy([
          { column: 'r.name', order: 'asc' },
          { column: 't.name', order: 'asc' },
        ])
        .limit(query.limit)
        .select(
          'r.name as repository',
          't.name as tag',
          'm.id as manifest_id',
          'm.digest',
          'm.subject_digest',
          't.updated_at',
          't.updated_by',
          'm.size',
          'm.media_type',
          this.db.raw('CASE WHEN m.size <= ? THEN m.payload END AS payload', [MAX_PAYLOAD_READ]),
        );
      if (query.exact) void select.where('r.name', query.prefix);
      else if (query.prefix !== '') void select.where('r.name', '>=', query.prefix).andWhere('r.name', '<', `${query.prefix}${AFTER_NAME_CHARACTERS}`);
      const after = query.after;
      if (after) void select.andWhere((where) => void where.where('r.name', '>', after.repository).orWhere((same) => void same.where('r.name', after.repository).andWhere('t.name', '>', after.tag)));
      const rows = (await select) as TagRow[];
      return rows.map((row) => ({
        repository: row.repository,
        tag: row.tag,
        manifestId: Number(row.manifest_id),
        digest: row.digest,
        subjectDigest: row.subject_digest ?? undefined,
        payload: row.payload ?? undefined,
        taggedAt: Number(row.updated_at),
        taggedBy: row.updated_by ?? undefined,
        size: Number(row.size),
        mediaType: row.media_type,
      }));
    });
  }

  verifications(manifestIds: readonly number[]): Promise<Map<number, VerificationRecord[]>> {
    return withDatabase(async () => {
      const results = new Map<number, VerificationRecord[]>();
      if (manifestIds.length === 0) return results;
      const rows = (await this.db('signature_verifications')
        .whereIn('manifest_id', [...new Set(manifestIds)])
        .orderBy('id')
        .select('manifest_id', 'format', 'signature_ref', 'outcome', 'signer', 'identity', 'reason', 'verified_at', 'policy_digest')) as (VerificationRow & {
        manifest_id: number;
      })[];
      for (const row of rows) {
        const id = Number(row.manifest_id);
        const list = results.get(id) ?? [];
        list.push(toVerification(row));
        results.set(id, list);
      }
      return results;
    });
  }
}
