// The query of `GET /admin/v1/audit`: filters by type, actor, actor kind, repository and time,
// a page size and the cursor of the next page. Every value is checked before it reaches the
// database, and a parameter the API does not know is refused: a misspelt filter must not
// quietly answer with every event.
import type { ActorKind } from '../../audit/events.js';
import { hasControlCharacter } from '../../auth/policy/rules.js';
import type { AuditQuery } from '../../metadata/auth-stores.js';
import { isValidName } from '../../registry/reference.js';

export class AuditQueryError extends Error {
  constructor(readonly parameter: string, message: string) {
    super(message);
    this.name = 'AuditQueryError';
  }
}

export const AUDIT_QUERY_PARAMETERS = ['type', 'actor', 'actorKind', 'repository', 'since', 'until', 'limit', 'cursor'] as const;
type Parameter = (typeof AUDIT_QUERY_PARAMETERS)[number];

const ACTOR_KINDS: readonly ActorKind[] = ['user', 'robot', 'anonymous', 'cli', 'system'];
const EVENT_TYPE = /^[a-z0-9_-]{1,32}(?:\.[a-z0-9_-]{1,32})*$/;
const MAX_TYPES = 20;
const MAX_ACTOR_LENGTH = 255;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;

// RFC 3339 date-time: full-date "T" full-time, the offset required (Z or ±hh:mm).
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;
const EPOCH_MS = /^[0-9]{1,15}$/;

/** A time as RFC 3339 (`2026-11-30T12:00:00Z`, any offset) or epoch milliseconds; undefined when it is neither. */
export function parseTime(text: string): number | undefined {
  if (EPOCH_MS.test(text)) return Number(text);
  const match = RFC3339.exec(text);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const millis = Number((match[7] ?? '').padEnd(3, '0').slice(0, 3));
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return undefined;
  // Date.UTC rolls 31 April over into May: a day the month does not have is refused instead.
  const date = new Date(Date.UTC(year, month - 1, day));
  if (day < 1 || date.getUTCDate() !== day || date.getUTCMonth() !== month - 1) return undefined;
  let offsetMinutes = 0;
  if (match[8] === undefined) {
    const offsetHours = Number(match[10]);
    const offsetRest = Number(match[11]);
    if (offsetHours > 23 || offsetRest > 59) return undefined;
    offsetMinutes = (match[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetRest);
  }
  return Date.UTC(year, month - 1, day, hour, minute, second, millis) - offsetMinutes * 60_000;
}

/** The events to read and the parameters that chose them (for the next page's link). */
export interface ParsedAuditQuery {
  query: AuditQuery;
  /** the filters and limit as given, without the cursor */
  filters: [Parameter, string][];
}

/**
 * Reads the query (each parameter at most once). Throws AuditQueryError naming the first bad
 * parameter.
 */
export function parseAuditQuery(parameters: Record<string, string | string[] | undefined>): ParsedAuditQuery {
  const unknown = Object.keys(parameters).find((name) => !(AUDIT_QUERY_PARAMETERS as readonly string[]).includes(name));
  if (unknown !== undefined) {
    throw new AuditQueryError(unknown, `unknown query parameter ${JSON.stringify(unknown.slice(0, 40))}: use ${AUDIT_QUERY_PARAMETERS.join(', ')}`);
  }
  const given: Partial<Record<Parameter, string>> = {};
  for (const name of AUDIT_QUERY_PARAMETERS) {
    const value = parameters[name];
    if (Array.isArray(value)) throw new AuditQueryError(name, `give the query parameter ${name} at most once`);
    if (value !== undefined) given[name] = value;
  }

  const query: AuditQuery = { limit: DEFAULT_LIMIT };
  if (given.type !== undefined) {
    const types = given.type.split(',');
    if (types.length > MAX_TYPES || !types.every((type) => EVENT_TYPE.test(type))) {
      throw new AuditQueryError('type', `type must be an event type such as login.failure, or up to ${MAX_TYPES} of them separated by commas`);
    }
    query.types = [...new Set(types)];
  }
  if (given.actor !== undefined) {
    const actor = given.actor;
    if (actor.length === 0 || actor.length > MAX_ACTOR_LENGTH || hasControlCharacter(actor)) {
      throw new AuditQueryError('actor', `actor must be a user or robot name (1 to ${MAX_ACTOR_LENGTH} characters, no control characters); for nobody, use actorKind=anonymous`);
    }
    query.actor = actor;
  }
  if (given.actorKind !== undefined) {
    const kind = ACTOR_KINDS.find((candidate) => candidate === given.actorKind);
    if (kind === undefined) throw new AuditQueryError('actorKind', `actorKind must be one of ${ACTOR_KINDS.join(', ')}`);
    query.actorKind = kind;
  }
  if (given.repository !== undefined) {
    if (!isValidName(given.repository)) throw new AuditQueryError('repository', 'repository must be a valid repository name');
    query.repository = given.repository;
  }
  for (const bound of ['since', 'until'] as const) {
    const text = given[bound];
    if (text === undefined) continue;
    const time = parseTime(text);
    if (time === undefined) throw new AuditQueryError(bound, `${bound} must be an RFC 3339 time such as 2026-11-30T12:00:00Z, or epoch milliseconds`);
    query[bound] = time;
  }
  if (query.since !== undefined && query.until !== undefined && query.since >= query.until) {
    throw new AuditQueryError('until', 'until must be later than since');
  }
  if (given.limit !== undefined) {
    const limit = /^[0-9]{1,4}$/.test(given.limit) ? Number(given.limit) : 0;
    if (limit < 1 || limit > MAX_LIMIT) throw new AuditQueryError('limit', `limit must be a whole number from 1 to ${MAX_LIMIT}`);
    query.limit = limit;
  }
  if (given.cursor !== undefined) {
    // The cursor is what a previous page's Link said: the position the next page starts below.
    if (!/^[1-9][0-9]{0,15}$/.test(given.cursor)) throw new AuditQueryError('cursor', 'cursor must be the value given in the Link of a previous page');
    query.beforeSeq = Number(given.cursor);
  }
  const filters = AUDIT_QUERY_PARAMETERS.filter((name) => name !== 'cursor' && given[name] !== undefined).map((name): [Parameter, string] => [name, given[name] as string]);
  return { query, filters };
}

/** The RFC 8288 link to the page after this one. */
export function nextPageLink(path: string, parsed: ParsedAuditQuery, nextBeforeSeq: number): string {
  const query = new URLSearchParams(parsed.filters);
  query.set('cursor', String(nextBeforeSeq));
  return `<${path}?${query.toString()}>; rel="next"`;
}
