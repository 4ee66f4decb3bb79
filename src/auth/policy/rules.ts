// Access rules: subject → repository pattern → actions. Deny by default: an identity may do
// exactly the union of what the rules matching it grant.
import { isValidName } from '../../registry/reference.js';
import type { Identity } from '../identity/provider.js';

export const ACTIONS = ['pull', 'push', 'delete', 'admin'] as const;
export type Action = (typeof ACTIONS)[number];

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

export class RuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuleError';
  }
}

export function parseSubject(text: string): Subject {
  if (text === 'anonymous' || text === 'authenticated') return { kind: text };
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const name = text.slice(colon + 1).trim();
  if (colon > 0 && name.length > 0 && (kind === 'group' || kind === 'user' || kind === 'robot')) return { kind, name };
  throw new RuleError(`invalid subject ${JSON.stringify(text)}: use group:<dn or name>, user:<name>, robot:<name>, anonymous or authenticated`);
}

export function formatSubject(subject: Subject): string {
  return 'name' in subject ? `${subject.kind}:${subject.name}` : subject.kind;
}

// A segment is a repository name component (the spec's grammar), `*`, `**` or `${user}`.
const SEGMENT = '(?:\\*\\*|\\*|\\$\\{user\\}|[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*)';
const PATTERN = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);

export function validatePattern(pattern: string): string {
  if (!PATTERN.test(pattern)) {
    throw new RuleError(`invalid repository pattern ${JSON.stringify(pattern)}: segments are repository name components, *, ** or \${user}`);
  }
  return pattern;
}

export function validateActions(actions: unknown): Action[] {
  if (!Array.isArray(actions) || actions.length === 0) throw new RuleError('actions must be a non-empty list');
  for (const action of actions) {
    if (!(ACTIONS as readonly unknown[]).includes(action)) {
      throw new RuleError(`unknown action ${JSON.stringify(action)}: use ${ACTIONS.join(', ')}`);
    }
  }
  return [...new Set(actions as Action[])];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Compiles a pattern for one caller, matched against `/` + repository name: each segment
 * contributes `/segment`, and `**` any number of segments (so `team-a/**` covers `team-a` too).
 * Undefined when `${user}` cannot stand in a repository name.
 */
const compiled = new Map<string, RegExp | undefined>();

function patternRegExp(pattern: string, username: string | undefined): RegExp | undefined {
  const key = `${pattern}\u0000${username ?? ''}`;
  if (compiled.has(key)) return compiled.get(key);
  if (compiled.size >= 10_000) compiled.clear();
  const regexp = compilePattern(pattern, username);
  compiled.set(key, regexp);
  return regexp;
}

function compilePattern(pattern: string, username: string | undefined): RegExp | undefined {
  let source = '';
  for (const segment of pattern.split('/')) {
    if (segment === '**') source += '(?:/[^/]+)*';
    else if (segment === '*') source += '/[^/]+';
    else if (segment === '${user}') {
      const personal = username?.toLowerCase();
      if (!personal || personal.includes('/') || !isValidName(personal)) return undefined;
      source += `/${escapeRegExp(personal)}`;
    } else source += `/${escapeRegExp(segment)}`;
  }
  return new RegExp(`^${source}$`);
}

export function matchesRepository(pattern: string, repository: string, username?: string): boolean {
  return patternRegExp(pattern, username)?.test(`/${repository}`) ?? false;
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

/** Every action the rules allow this principal on this repository (admin implies all). */
export function allowedActions(rules: readonly AccessRule[], principal: Principal, repository: string): Set<Action> {
  const allowed = new Set<Action>();
  if (principal.kind === 'user' && principal.identity.admin) return new Set(ACTIONS);
  for (const rule of rules) {
    if (!appliesTo(rule.subject, principal)) continue;
    if (!matchesRepository(rule.repositories, repository, usernameOf(principal))) continue;
    for (const action of rule.actions) allowed.add(action);
  }
  if (allowed.has('admin')) return new Set(ACTIONS);
  return allowed;
}

/** The rules that grant anything to this principal on this repository, for `access check`. */
export function explain(rules: readonly AccessRule[], principal: Principal, repository: string): AccessRule[] {
  return rules.filter(
    (rule) => appliesTo(rule.subject, principal) && matchesRepository(rule.repositories, repository, usernameOf(principal)),
  );
}
