// In-toto statements, the payload of a sigstore bundle's DSSE envelope: which artifacts (by
// digest) a signer speaks about, and what kind of claim (predicateType) it makes.
import { parseStrictJson, StrictJsonError } from './strict-json.js';

export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPES = new Set(['https://in-toto.io/Statement/v1', 'https://in-toto.io/Statement/v0.1']);

export interface StatementSubject {
  name?: string;
  /** algorithm → lower-case hex, e.g. `{ sha256: "ab…" }` */
  digest: Record<string, string>;
}

export interface Statement {
  type: string;
  predicateType: string;
  subjects: StatementSubject[];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Parses a statement strictly; a string says why it is not one. */
export function parseStatement(payload: Uint8Array): Statement | string {
  let document: unknown;
  try {
    document = parseStrictJson(payload);
  } catch (error) {
    if (error instanceof StrictJsonError) return `the statement is not strict JSON (${error.message})`;
    throw error;
  }
  if (!isObject(document)) return 'the statement is not a JSON object';
  const type = document._type;
  if (typeof type !== 'string' || !STATEMENT_TYPES.has(type)) return `the statement's _type is ${JSON.stringify(type)}, not an in-toto statement`;
  if (typeof document.predicateType !== 'string' || document.predicateType === '') return 'the statement has no predicateType';
  if (!Array.isArray(document.subject) || document.subject.length === 0) return 'the statement has no subject';

  const subjects: StatementSubject[] = [];
  for (const entry of document.subject as unknown[]) {
    if (!isObject(entry) || !isObject(entry.digest)) return 'a statement subject has no digest';
    if (entry.name !== undefined && typeof entry.name !== 'string') return 'a statement subject has a name that is not a string';
    const digests = Object.entries(entry.digest);
    const notText = digests.find(([, hex]) => typeof hex !== 'string');
    if (notText !== undefined) return `a statement subject's ${notText[0]} digest is not a string`;
    // fromEntries defines own properties: a "__proto__" algorithm stays a plain key.
    const digest = Object.fromEntries(digests.map(([algorithm, hex]) => [algorithm, (hex as string).toLowerCase()]));
    subjects.push({ ...(typeof entry.name === 'string' ? { name: entry.name } : {}), digest });
  }
  return { type, predicateType: document.predicateType, subjects };
}

/** Whether some subject of the statement is the manifest `sha256:<hex>` (or another algorithm). */
export function statementCovers(statement: Statement, manifestDigest: string): boolean {
  const separator = manifestDigest.indexOf(':');
  const algorithm = manifestDigest.slice(0, separator);
  const hex = manifestDigest.slice(separator + 1);
  return separator > 0 && statement.subjects.some((subject) => Object.hasOwn(subject.digest, algorithm) && subject.digest[algorithm] === hex);
}
