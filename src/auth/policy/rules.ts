// Access rules: subject → repository pattern → actions. Deny by default: an identity may do
// exactly the union of what the rules matching it grant.
import { isValidName } from '../../registry/reference.js';
import type { Identity } from '../identity/provider.js';
import { isValidRobotName } from '../robots.js';

/**
 * `admin` on a pattern stands for pull, push and delete there. `audit` reads the audit log (and
 * the signature report), which spans every repository: it counts only in a rule for `**`.
 */
export const ACTIONS = ['pull', 'push', 'delete', 'admin', 'audit'] as const;
export type Action = (typeof ACTIONS)[number];

/** What `admin` grants on a repository, and what an administrator holds on every one. */
const REPOSITORY_ACTIONS: readonly Action[] = ['pull', 'push', 'delete', 'admin'];

/**
 * Who a rule is for, written as text in rule files and the admin API:
 * `group:<DN or name>`, `user:<name>`, `robot:<name>`, `anonymous`, `authenticated`.
 */
export type Subject =
  | { kind: 'group'; name: string }
  | { kind: 'user'; name: string }
  | { kind: 'robot'; name: string }
  | { kind: 'anonymous' }
  | { kind: 'authenticated' };

export interface AccessRule {
  subject: Subject;
  /** Glob over repository names: `*` one path segment, `**` any number, `${user}` the caller's name. */
  repositories: string;
  actions: Action[];
}

/** Who is asking: a signed-in identity, a robot account, or nobody. */
export type Principal =
  | { kind: 'user'; identity: Identity }
  | { kind: 'robot'; name: string }
  | { kind: 'anonymous' };

/** One problem with one field of the input, located by a JSON Pointer (RFC 6901) into it. */
export interface FieldProblem {
  pointer: string;
  detail: string;
}

export class RuleError extends Error {
  constructor(
    message: string,
    /** Per-field problems, when the input was a document (a rules file or an API body). */
    readonly problems: readonly FieldProblem[] = [],
  ) {
    super(message);
    this.name = 'RuleError';
  }
}

/** The column widths of `access_rules` (migrations/20261126_002_auth.ts): checked before any write. */
export const MAX_SUBJECT_LENGTH = 512;
export const MAX_PATTERN_LENGTH = 255;

const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

export function hasControlCharacter(text: string): boolean {
  return CONTROL_CHARACTER.test(text);
}

const SUBJECT_FORMS = 'use group:<dn or name>, user:<name>, robot:<name>, anonymous or authenticated';

/**
 * Parses a subject written by an administrator, refusing what can never match anyone: a rule
 * that silently grants nothing is a mistake the writer should hear about.
 */
export function parseSubject(text: string): Subject {
  const shown = JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
  if (text.length > MAX_SUBJECT_LENGTH) throw new RuleError(`invalid subject ${shown}: longer than ${MAX_SUBJECT_LENGTH} characters`);
  if (hasControlCharacter(text)) throw new RuleError(`invalid subject ${shown}: contains a control character`);
  if (text === 'anonymous' || text === 'authenticated') return { kind: text };
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const name = text.slice(colon + 1).trim();
  if (colon <= 0 || (kind !== 'group' && kind !== 'user' && kind !== 'robot')) throw new RuleError(`invalid subject ${shown}: ${SUBJECT_FORMS}`);
  if (name.length === 0) throw new RuleError(`invalid subject ${shown}: the name is empty; ${SUBJECT_FORMS}`);
  const why = neverMatches(kind, name);
  if (why) throw new RuleError(`invalid subject ${shown}: ${why}`);
  return { kind, name };
}

/** Why a named subject could never apply to anyone, or undefined when it can. */
function neverMatches(kind: 'group' | 'user' | 'robot', name: string): string | undefined {
  // `CORP\name` is a down-level (NetBIOS) logon name. Directories report groups by cn and DN,
  // and people by their username attribute, never in that form. A DN may escape with `\`.
  const downLevel = name.includes('\\') && !(kind === 'group' && name.includes('='));
  if (downLevel && kind === 'group') {
    return "a DOMAIN\\name never matches: use the group's name (cn), e.g. group:" + afterBackslash(name) + ", or its full DN";
  }
  if (downLevel && kind === 'user') {
    return `a DOMAIN\\name never matches: people sign in as ${afterBackslash(name)} and rules name them by their user name (the directory's username attribute), e.g. user:${afterBackslash(name)}`;
  }
  if (kind === 'robot' && !isValidRobotName(name)) return 'robot names are 1-64 of a-z 0-9 . _ -, starting with a letter or digit';
  return undefined;
}

const afterBackslash = (name: string): string => name.slice(name.lastIndexOf('\\') + 1);

/**
 * A subject as stored. Stored rules were validated when written, possibly by an older, more
 * lenient version: read them without refusing, so one odd row cannot stop every token request.
 * Undefined only for a kind no version ever wrote.
 */
export function parseStoredSubject(text: string): Subject | undefined {
  if (text === 'anonymous' || text === 'authenticated') return { kind: text };
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  if (kind === 'group' || kind === 'user' || kind === 'robot') return { kind, name: text.slice(colon + 1).trim() };
  return undefined;
}

export function formatSubject(subject: Subject): string {
  return 'name' in subject ? `${subject.kind}:${subject.name}` : subject.kind;
}

// A segment is a repository name component (the spec's grammar), `*`, `**` or `${user}`.
const SEGMENT = '(?:\\*\\*|\\*|\\$\\{user\\}|[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*)';
const PATTERN = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);

export function validatePattern(pattern: string): string {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw new RuleError(`invalid repository pattern ${JSON.stringify(`${pattern.slice(0, 80)}…`)}: longer than ${MAX_PATTERN_LENGTH} characters`);
  }
  if (!PATTERN.test(pattern)) {
    throw new RuleError(`invalid repository pattern ${JSON.stringify(pattern)}: segments are repository name components, *, ** or \${user}`);
  }
  return pattern;
}

export function validateActions(actions: unknown): Action[] {
  if (!Array.isArray(actions) || actions.length === 0) throw new RuleError('actions must be a non-empty list');
  for (const action of actions) {
    if (!(ACTIONS as readonly unknown[]).includes(action)) {
      const shown = typeof action === 'string' ? JSON.stringify(action.slice(0, 40)) : typeof action;
      throw new RuleError(`unknown action ${shown}: use ${ACTIONS.join(', ')}`);
    }
  }
  return [...new Set(actions as Action[])];
}

/**
 * Rules whose `${user}` stands first put personal namespaces beside the shared ones, where a
 * person's name can take a namespace before the rule that needs it is written. Warnings, for
 * `policy apply` and the admin API, recommending a namespace of their own.
 */
export function personalNamespaceWarnings(rules: readonly AccessRule[]): string[] {
  return rules
    .filter((rule) => rule.repositories.split('/')[0] === USER_SEGMENT)
    .map(
      (rule) =>
        `rule for ${formatSubject(rule.subject)} on ${rule.repositories}: \${user} at the top level lets a user name take a namespace ` +
        `that a shared rule may need later; prefer users/${rule.repositories}`,
    );
}

// --- Matching -------------------------------------------------------------------------------
//
// Patterns and names are compared segment by segment (split on `/`), never through a regular
// expression built from the pattern: `**/**/**/x` would backtrack exponentially in the number
// of segments. The matcher below costs at most (pattern segments + 1) × (name segments + 1)
// steps, whatever the pattern.

const USER_SEGMENT = '${user}';

type Segment =
  | { kind: 'literal'; text: string }
  | { kind: 'one' } // *
  | { kind: 'any' } // **: zero or more segments
  | { kind: 'user'; reserved: ReadonlySet<string> }; // ${user}, except names other rules use here

const NOTHING_RESERVED: ReadonlySet<string> = new Set();

function segmentsOf(pattern: string, reservedAt: (index: number) => ReadonlySet<string>): Segment[] {
  return pattern.split('/').map((text, index): Segment => {
    if (text === '**') return { kind: 'any' };
    if (text === '*') return { kind: 'one' };
    if (text === USER_SEGMENT) return { kind: 'user', reserved: reservedAt(index) };
    return { kind: 'literal', text };
  });
}

/**
 * Whose personal namespace a name may be: only a name that already is a repository name
 * component as it stands. Lowercasing or folding would let `Team-A` claim `team-a`.
 */
function personalSegment(username: string | undefined): string | undefined {
  if (username === undefined || username.includes('/') || !isValidName(username)) return undefined;
  return username;
}

function segmentMatches(segment: Segment, name: string, personal: string | undefined): boolean {
  switch (segment.kind) {
    case 'literal':
      return segment.text === name;
    case 'one':
      return true;
    case 'user':
      return personal !== undefined && personal === name && !segment.reserved.has(personal);
    case 'any':
      return false; // handled by the caller
  }
}

function matchSegments(pattern: readonly Segment[], name: readonly string[], personal: string | undefined): boolean {
  // covered[j]: the pattern segments seen so far can cover exactly the first j name segments.
  let covered = new Uint8Array(name.length + 1);
  covered[0] = 1;
  for (const segment of pattern) {
    const next = new Uint8Array(name.length + 1);
    let any = false;
    if (segment.kind === 'any') {
      let reached = 0;
      for (let j = 0; j <= name.length; j++) {
        reached |= covered[j] ?? 0;
        next[j] = reached;
        any ||= reached === 1;
      }
    } else {
      for (let j = 0; j < name.length; j++) {
        if (covered[j] === 1 && segmentMatches(segment, name[j] ?? '', personal)) {
          next[j + 1] = 1;
          any = true;
        }
      }
    }
    if (!any) return false;
    covered = next;
  }
  return covered[name.length] === 1;
}

const parsedPatterns = new Map<string, Segment[]>();

/**
 * Whether a pattern covers a repository for a caller: `*` one segment, `**` any number (so
 * `team-a/**` covers `team-a` too), `${user}` the caller's name as it stands. Without the rest
 * of the rule set nothing is reserved from `${user}`; rule evaluation uses `allowedActions`.
 */
export function matchesRepository(pattern: string, repository: string, username?: string): boolean {
  let segments = parsedPatterns.get(pattern);
  if (!segments) {
    if (parsedPatterns.size >= 10_000) parsedPatterns.clear();
    segments = segmentsOf(pattern, () => NOTHING_RESERVED);
    parsedPatterns.set(pattern, segments);
  }
  return matchSegments(segments, repository.split('/'), personalSegment(username));
}

/**
 * A rule set made ready for matching. A `${user}` segment never stands for a name that any rule
 * writes literally at the same position: with `team-a/**` or `public/*` in the set, people
 * named `team-a` or `public` get no personal namespace there.
 */
interface CompiledRule {
  rule: AccessRule;
  segments: Segment[];
}

const compiledSets = new WeakMap<readonly AccessRule[], CompiledRule[]>();

function compile(rules: readonly AccessRule[]): CompiledRule[] {
  const cached = compiledSets.get(rules);
  // The policy hands the same array to every request until it re-reads the rules; an array
  // changed in place since is compiled again.
  if (cached && cached.length === rules.length && cached.every((entry, index) => entry.rule === rules[index])) return cached;
  const literalsAt: Set<string>[] = [];
  for (const rule of rules) {
    rule.repositories.split('/').forEach((text, index) => {
      if (text === '**' || text === '*' || text === USER_SEGMENT) return;
      (literalsAt[index] ??= new Set()).add(text);
    });
  }
  const compiled = rules.map((rule) => ({ rule, segments: segmentsOf(rule.repositories, (index) => literalsAt[index] ?? NOTHING_RESERVED) }));
  compiledSets.set(rules, compiled);
  return compiled;
}

function matching(rules: readonly AccessRule[], principal: Principal, repository: string): AccessRule[] {
  const name = repository.split('/');
  const personal = personalSegment(usernameOf(principal));
  return compile(rules)
    .filter(({ rule, segments }) => appliesTo(rule.subject, principal) && matchSegments(segments, name, personal))
    .map(({ rule }) => rule);
}

/**
 * Whether a rule's group (a DN when it contains `=`, else a name) is this group. A DN is only
 * ever compared with DNs: a group merely *named* like a DN must not pass for it. DNs compare
 * case-insensitively and without spaces after commas (directories differ in both).
 */
export function sameGroup(wanted: string, group: { dn?: string; name: string }): boolean {
  const normalise = (text: string) => text.trim().toLowerCase().replace(/,\s+/g, ',');
  if (wanted.includes('=')) return group.dn !== undefined && normalise(group.dn) === normalise(wanted);
  return group.name.toLowerCase() === wanted.trim().toLowerCase();
}

export function appliesTo(subject: Subject, principal: Principal): boolean {
  switch (subject.kind) {
    case 'anonymous':
      return true; // what anonymous may do, everybody may do
    case 'authenticated':
      // Logged-in people. Robots get only what names them (and what anonymous may do).
      return principal.kind === 'user';
    case 'user':
      return principal.kind === 'user' && principal.identity.username === subject.name;
    case 'robot':
      return principal.kind === 'robot' && principal.name === subject.name;
    case 'group':
      return principal.kind === 'user' && principal.identity.groups.some((group) => sameGroup(subject.name, group));
  }
}

/** Whose `${user}` namespace applies: people only — a robot named like a user must not get theirs. */
function usernameOf(principal: Principal): string | undefined {
  return principal.kind === 'user' ? principal.identity.username : undefined;
}

/** Every action the rules allow this principal on this repository (admin implies pull, push and delete). */
export function allowedActions(rules: readonly AccessRule[], principal: Principal, repository: string): Set<Action> {
  if (principal.kind === 'user' && principal.identity.admin) return new Set(REPOSITORY_ACTIONS);
  const allowed = new Set<Action>();
  for (const rule of matching(rules, principal, repository)) for (const action of rule.actions) allowed.add(action);
  if (allowed.has('admin')) for (const action of REPOSITORY_ACTIONS) allowed.add(action);
  return allowed;
}

/**
 * Whether a principal may read the audit log: administrators, and whoever a rule grants `audit`
 * on every repository (a pattern of `**` only; the log spans them all). A token without a login
 * never may, whatever a rule for `anonymous` says.
 */
export function mayAudit(rules: readonly AccessRule[], principal: Principal): boolean {
  if (principal.kind === 'anonymous') return false;
  if (principal.kind === 'user' && principal.identity.admin) return true;
  const everyRepository = (pattern: string) => pattern.split('/').every((segment) => segment === '**');
  return rules.some((rule) => rule.actions.includes('audit') && everyRepository(rule.repositories) && appliesTo(rule.subject, principal));
}

/** The rules that grant anything to this principal on this repository, for `access check`. */
export function explain(rules: readonly AccessRule[], principal: Principal, repository: string): AccessRule[] {
  return matching(rules, principal, repository);
}

/**
 * Where a principal's pull rights can possibly lie, as repository name prefixes (each covers the
 * name itself and everything below it), or 'everything'. A superset: the catalog still checks each
 * name it reads with `allowedActions`, but reads only below these prefixes, so a caller with few
 * rights costs few rows however large the registry is.
 */
export function pullNamespaces(rules: readonly AccessRule[], principal: Principal): string[] | 'everything' {
  if (principal.kind === 'user' && principal.identity.admin) return 'everything';
  const personal = personalSegment(usernameOf(principal));
  const prefixes: string[] = [];
  for (const rule of rules) {
    if (!appliesTo(rule.subject, principal)) continue;
    if (!rule.actions.includes('pull') && !rule.actions.includes('admin')) continue;
    const literal = leadingLiteral(rule.repositories, personal);
    if (literal === undefined) continue;
    if (literal.length === 0) return 'everything';
    prefixes.push(literal.join('/'));
  }
  // Keep only the outermost: `team-a` already covers `team-a/ci`.
  return [...new Set(prefixes)].sort().filter((prefix, index, all) => !all.slice(0, index).some((outer) => prefix.startsWith(`${outer}/`)));
}

/** A pattern's leading literal segments for one caller; undefined when the pattern can never apply to them. */
function leadingLiteral(pattern: string, personal: string | undefined): string[] | undefined {
  const literal: string[] = [];
  for (const text of pattern.split('/')) {
    if (text === '*' || text === '**') break;
    if (text !== USER_SEGMENT) literal.push(text);
    else if (personal === undefined) return undefined;
    else literal.push(personal);
  }
  return literal;
}
