// The signature report for auditors: every tag → digest with its signature status (valid,
// invalid, none), the signer and time of the result that decides it, the policy that applies and
// its verdict — judged from the stored results by the same rules as pull-time enforcement
// (./explain.ts). Read a bounded page at a time, in (repository, tag) order, optionally for the
// repositories a glob matches; written as JSON, CSV (`portcullis audit signatures`, the admin
// API) or a table (the CLI).
import { matchesRepository, RuleError, validatePattern } from '../auth/policy/rules.js';
import type { SignatureReportSource, ReportPosition, TaggedManifest } from '../metadata/knex-signature-report.js';
import type { VerificationRecord } from '../metadata/signature-store.js';
import { satisfyingSignature } from './enforcement.js';
import { isSignatureArtifact } from './artifacts.js';
import { judgeStoredResults, type Verdict } from './explain.js';
import { judgedUnder } from './policy-digest.js';
import { isImmutableTag, policyFor, type SignatureMode, type TrustPolicy } from './policy.js';
import { describeImage, type ImageSummary } from '../registry/image-summary.js';

export type SignatureStatus = 'valid' | 'invalid' | 'none';

export interface ReportEntry {
  repository: string;
  tag: string;
  digest: string;
  /** valid: a signature satisfies the policy (no policy: any valid one); invalid: signatures, none that does */
  status: SignatureStatus;
  /** the result that decides the status: the satisfying one, else the newest failure */
  signer?: string | undefined;
  identity?: string | undefined;
  format?: string | undefined;
  verifiedAt?: number | undefined;
  reason: string;
  /** how many verification results the manifest has */
  signatures: number;
  /** a signature, attestation or SBOM: always readable */
  artifact: boolean;
  policy?: string | undefined;
  mode?: SignatureMode | undefined;
  verdict: Verdict;
}

/** A tag as the console lists it: its report entry and what it points at. */
export interface TagDetail extends ReportEntry, ImageSummary {
  mediaType: string;
  taggedAt: number;
  taggedBy?: string | undefined;
  /** the policy's immutable tags include it: it cannot be moved or deleted */
  immutable: boolean;
}

function tagDetail(entry: ReportEntry, tagged: TaggedManifest, policy: TrustPolicy | undefined): TagDetail {
  return {
    ...entry,
    ...describeImage(tagged.payload, tagged.size),
    mediaType: tagged.mediaType,
    taggedAt: tagged.taggedAt,
    taggedBy: tagged.taggedBy,
    immutable: policy !== undefined && isImmutableTag(policy, tagged.tag),
  };
}

export interface ReportPage {
  entries: ReportEntry[];
  /** the cursor of the next page; absent on the last */
  next?: string | undefined;
}

export interface ReportQuery {
  /** the access rules' glob syntax; every repository when left out */
  repositories?: string | undefined;
  cursor?: string | undefined;
  limit: number;
}

/** A cursor the report did not give (a bad glob is a RuleError, as in the access rules). */
export class ReportQueryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportQueryError';
  }
}

export const MAX_REPORT_LIMIT = 1000;

/** Tags examined per page at most, whatever the glob leaves out of them: a page's work is bounded (it may then hold fewer entries). */
const MAX_SCANNED = 10_000;

/** The rows read per query while filling a page. */
const BATCH = 200;

const USER_SEGMENT = '${user}';

/** The glob checked (RuleError when bad), and the literal prefix of the names it can match (to narrow the query). */
function compileGlob(glob: string | undefined): { matches: (repository: string) => boolean; prefix: string; exact: boolean } {
  if (glob === undefined) return { matches: () => true, prefix: '', exact: false };
  const pattern = validatePattern(glob);
  const segments = pattern.split('/');
  if (segments.includes(USER_SEGMENT)) throw new RuleError(`invalid repository pattern ${JSON.stringify(pattern.slice(0, 80))}: a report has no user, write the name instead of \${user}`);
  const wildcard = segments.findIndex((segment) => segment === '*' || segment === '**');
  return {
    matches: (repository) => matchesRepository(pattern, repository),
    // `prod/**` matches `prod` itself as well: the prefix stops before the separator.
    prefix: wildcard < 0 ? pattern : segments.slice(0, wildcard).join('/'),
    exact: wildcard < 0,
  };
}

export function encodeCursor(position: ReportPosition): string {
  return Buffer.from(JSON.stringify([position.repository, position.tag])).toString('base64url');
}

function decodeCursor(cursor: string): ReportPosition {
  const refused = new ReportQueryError('cursor is not one this report gave');
  if (cursor.length > 1024 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw refused;
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'string') return { repository: value[0], tag: value[1] };
  } catch {
    // refused below
  }
  throw refused;
}

const newest = (results: readonly VerificationRecord[]): VerificationRecord | undefined =>
  results.reduce<VerificationRecord | undefined>((latest, result) => (!latest || result.verifiedAt >= latest.verifiedAt ? result : latest), undefined);

/** One tag's line of the report. */
export function reportEntry(tagged: TaggedManifest, policy: TrustPolicy | undefined, results: readonly VerificationRecord[]): ReportEntry {
  const artifact = isSignatureArtifact(tagged.payload);
  const judgement = judgeStoredResults(policy, results, artifact);
  const satisfied = policy ? satisfyingSignature(policy, results) : results.find((result) => result.outcome === 'valid');
  const failed = results.filter((result) => result.outcome !== 'valid');
  const shown = satisfied ?? newest(failed) ?? newest(results);
  const status: SignatureStatus = satisfied ? 'valid' : results.length > 0 ? 'invalid' : 'none';
  const reason =
    shown === undefined
      ? 'no signatures'
      : status === 'invalid' && shown.outcome === 'valid'
        ? policy && !judgedUnder(policy, shown)
          ? `judged under an earlier version of the trust policy for ${policy.repositories}: being verified again`
          : `a valid signature, but not from a signer of the trust policy for ${policy?.repositories ?? '?'}`
        : shown.reason;
  return {
    repository: tagged.repository,
    tag: tagged.tag,
    digest: tagged.digest,
    status,
    signer: shown?.signer,
    identity: shown?.identity,
    format: shown?.format,
    verifiedAt: shown?.verifiedAt,
    reason,
    signatures: results.length,
    artifact,
    policy: policy?.repositories,
    mode: policy?.signatures.mode,
    verdict: judgement.verdict,
  };
}

export class SignatureReport {
  constructor(
    private readonly policies: { list(): Promise<TrustPolicy[]> },
    private readonly source: SignatureReportSource,
  ) {}

  /** One page: up to `limit` entries after the cursor, and the cursor of the next page. */
  async page(query: ReportQuery): Promise<ReportPage> {
    const { judged, next } = await this.judgedPage(query);
    return { entries: judged.map(({ entry }) => entry), ...(next !== undefined ? { next } : {}) };
  }

  /**
   * One repository's tags with what the console shows beside each report entry: when and by whom
   * the tag was set, the image's size and platforms, and whether the policy makes it immutable.
   */
  async tagDetails(repository: string, query: { cursor?: string | undefined; limit: number }): Promise<{ tags: TagDetail[]; next?: string }> {
    // A repository name holds no glob character: as a glob it matches itself alone.
    const { judged, next } = await this.judgedPage({ ...query, repositories: repository });
    return { tags: judged.map(({ entry, tagged, policy }) => tagDetail(entry, tagged, policy)), ...(next !== undefined ? { next } : {}) };
  }

  private async judgedPage(query: ReportQuery): Promise<{ judged: { entry: ReportEntry; tagged: TaggedManifest; policy: TrustPolicy | undefined }[]; next?: string }> {
    const limit = Math.max(1, Math.min(query.limit, MAX_REPORT_LIMIT));
    const glob = compileGlob(query.repositories);
    let position = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    const chosen: TaggedManifest[] = [];
    let scanned = 0;
    let exhausted = false;
    while (chosen.length < limit && scanned < MAX_SCANNED && !exhausted) {
      const batch = Math.min(BATCH, MAX_SCANNED - scanned);
      const rows = await this.source.tags({ prefix: glob.prefix, exact: glob.exact, after: position, limit: batch });
      exhausted = rows.length < batch;
      for (const row of rows) {
        position = { repository: row.repository, tag: row.tag };
        scanned++;
        if (glob.matches(row.repository)) chosen.push(row);
        if (chosen.length === limit) {
          exhausted &&= row === rows[rows.length - 1];
          break;
        }
      }
    }
    const policies = await this.policies.list();
    const results = await this.source.verifications(chosen.map((row) => row.manifestId));
    const judged = chosen.map((tagged) => {
      const policy = policyFor(policies, tagged.repository);
      return { entry: reportEntry(tagged, policy, results.get(tagged.manifestId) ?? []), tagged, policy };
    });
    return { judged, ...(!exhausted && position ? { next: encodeCursor(position) } : {}) };
  }

  /** Every entry, page by page (memory stays bounded however many tags there are). */
  async *entries(repositories?: string): AsyncGenerator<ReportEntry> {
    let cursor: string | undefined;
    do {
      const page = await this.page({ repositories, cursor, limit: MAX_REPORT_LIMIT });
      yield* page.entries;
      cursor = page.next;
    } while (cursor !== undefined);
  }
}

/** An entry as JSON: times in RFC 3339, absent values left out. */
export function reportEntryJson(entry: ReportEntry): Record<string, unknown> {
  return JSON.parse(JSON.stringify({ ...entry, verifiedAt: entry.verifiedAt === undefined ? undefined : new Date(entry.verifiedAt).toISOString() })) as Record<string, unknown>;
}

export const CSV_COLUMNS = ['repository', 'tag', 'digest', 'status', 'signer', 'identity', 'format', 'verifiedAt', 'signatures', 'artifact', 'policy', 'mode', 'verdict', 'reason'] as const;

/**
 * One CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line break, quotes doubled.
 * A cell a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return)
 * is prefixed with a single quote first: a signer's identity or a reason is the signer's text.
 */
export function csvCell(value: string): string {
  const inert = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(inert) ? `"${inert.replace(/"/g, '""')}"` : inert;
}

export function csvRow(cells: readonly string[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

export const CSV_HEADER = csvRow(CSV_COLUMNS);

export function reportEntryCsv(entry: ReportEntry): string {
  const json = reportEntryJson(entry);
  return csvRow(CSV_COLUMNS.map((column) => (json[column] === undefined ? '' : String(json[column]))));
}

/** Control characters shown as U+FFFD: a terminal must not take a signer's text for commands. */
// eslint-disable-next-line no-control-regex
const printable = (value: string): string => value.replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');

const TABLE_COLUMNS: [string, number][] = [
  ['IMAGE', 40],
  ['DIGEST', 20],
  ['SIGNATURE', 10],
  ['SIGNER', 16],
  ['VERIFIED', 21],
  ['POLICY', 16],
  ['VERDICT', 0],
];

const tableLine = (cells: readonly string[]): string =>
  cells
    .map((cell, index) => {
      const width = TABLE_COLUMNS[index]?.[1] ?? 0;
      return width === 0 ? cell : `${cell.padEnd(width - 1)} `;
    })
    .join('')
    .trimEnd();

export const TABLE_HEADER = tableLine(TABLE_COLUMNS.map(([name]) => name));

export function reportEntryTableLine(entry: ReportEntry): string {
  return tableLine([
    printable(`${entry.repository}:${entry.tag}`),
    `${entry.digest.slice(0, 19)}`,
    entry.status,
    printable(entry.signer ?? '-'),
    entry.verifiedAt === undefined ? '-' : new Date(entry.verifiedAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    entry.policy ?? '-',
    entry.verdict,
  ]);
}
