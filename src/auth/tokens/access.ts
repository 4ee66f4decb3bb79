// Docker token scopes (`repository:team-a/app:pull,push`) and the `access` claim they become.
//
// Grammar (distribution's "Token Scope Documentation"): `type[(class)]:name:action[,action]*`.
// Differences from the letter of that grammar, all deliberate:
// - A repository name must be a name this registry can hold (the OCI grammar, `isValidName`).
//   The spec's optional `host[:port]/` prefix is not special: `example.com/app` is simply a
//   repository of that name, and `localhost:5000/app` is rejected because `:` cannot occur in a
//   repository name. That also makes splitting unambiguous: type = before the first `:`,
//   actions = after the last `:`, name = everything between.
// - The resource class (`repository(plugin)`) is accepted and dropped; distribution treats
//   `repository` and `repository(plugin)` as equal and tells token servers not to return classes.
// - Only `repository` and `registry` (names `catalog`, `admin` and `audit`) resources exist here.
// - Actions: `pull`, `push`, `delete` and `*` (everything). Other words that fit the grammar's
//   `[a-z]+` are dropped rather than refused: the token server hands out the intersection of what
//   was asked and what is allowed, so an action nobody can hold is simply not granted.
//
// Malformed scopes throw InvalidScopeError: HTTP 400 with the OAuth2 error `invalid_scope`
// (RFC 6749 §5.2), which is what token servers that validate scopes answer (cesanta/docker_auth
// answers 400 "invalid scope"; distribution's contrib token server only ever skipped them).
import { RegistryError } from '../../registry/errors.js';
import { isValidName } from '../../registry/reference.js';

export type ResourceType = 'repository' | 'registry';
export const TOKEN_ACTIONS = ['pull', 'push', 'delete', '*'] as const;
export type TokenAction = (typeof TOKEN_ACTIONS)[number];

/** One entry of the JWT `access` claim. */
export interface ResourceAccess {
  type: ResourceType;
  name: string;
  actions: string[];
}

/**
 * `registry`-type resources: the catalog (`registry:catalog:*`), the admin API (`registry:admin:*`)
 * and the audit endpoints alone, for auditors (`registry:audit:*`).
 */
export const REGISTRY_RESOURCES = ['catalog', 'admin', 'audit'] as const;

/** Longer scope strings are refused before any parsing (name limit 255 plus slack). */
const MAX_SCOPE_LENGTH = 1024;
const TYPE = /^([a-z0-9]+)(?:\(([a-z0-9]+)\))?$/;
const ACTION_WORD = /^(?:[a-z]+|\*)$/;
// Canonical order, so equal grants always format and sign identically.
const ACTION_ORDER: readonly string[] = ['pull', 'push', 'delete'];

export class InvalidScopeError extends RegistryError {
  /** The OAuth2 error code for token endpoint responses (RFC 6749 §5.2). */
  readonly oauthError = 'invalid_scope';

  constructor(scope: string, reason: string) {
    // No OCI error code fits a token request; distribution's token server answers such a value
    // with 400 too (UNSUPPORTED_VALUE).
    super('REQUEST_INVALID', `invalid scope: ${reason}`, { scope: scope.slice(0, MAX_SCOPE_LENGTH), reason });
    this.name = 'InvalidScopeError';
  }
}

export function isTokenAction(action: string): action is TokenAction {
  return (TOKEN_ACTIONS as readonly string[]).includes(action);
}

/** Sorted, deduplicated; `*` absorbs everything else. */
export function normalizeActions(actions: Iterable<string>): string[] {
  const set = new Set(actions);
  if (set.has('*')) return ['*'];
  return ACTION_ORDER.filter((action) => set.has(action));
}

export function isValidResource(type: string, name: string): boolean {
  if (type === 'repository') return isValidName(name);
  if (type === 'registry') return (REGISTRY_RESOURCES as readonly string[]).includes(name);
  return false;
}

/** Parses one resource scope; throws InvalidScopeError for anything outside the grammar above. */
export function parseScope(scope: string): ResourceAccess {
  if (scope.length > MAX_SCOPE_LENGTH) throw new InvalidScopeError(scope, 'too long');
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) throw new InvalidScopeError(scope, 'expected type:name:actions');
  const typeText = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const actionText = scope.slice(last + 1);

  const typeMatch = TYPE.exec(typeText);
  if (!typeMatch) throw new InvalidScopeError(scope, 'invalid resource type');
  const type = typeMatch[1] as string; // the class (typeMatch[2]) is ignored on purpose
  if (type !== 'repository' && type !== 'registry') throw new InvalidScopeError(scope, `unknown resource type ${type}`);
  if (!isValidResource(type, name)) {
    throw new InvalidScopeError(scope, type === 'repository' ? 'invalid repository name' : `unknown ${type} resource`);
  }

  if (actionText === '') throw new InvalidScopeError(scope, 'no actions');
  const words = actionText.split(',');
  for (const word of words) {
    if (!ACTION_WORD.test(word)) throw new InvalidScopeError(scope, 'invalid action');
  }
  return { type, name, actions: normalizeActions(words.filter(isTokenAction)) };
}

/**
 * Parses the `scope` values of a token request: repeated GET parameters and/or the POST form's
 * space-separated list. Empty values are ignored (a login asks for no scope); entries for the
 * same resource are merged.
 */
export function parseScopes(values: Iterable<string>): ResourceAccess[] {
  const parsed: ResourceAccess[] = [];
  for (const value of values) {
    for (const part of value.split(' ')) {
      if (part !== '') parsed.push(parseScope(part));
    }
  }
  return mergeAccess(parsed);
}

/** Merges entries for the same resource (union of actions), keeping first-seen order. */
export function mergeAccess(entries: Iterable<ResourceAccess>): ResourceAccess[] {
  const merged = new Map<string, ResourceAccess>();
  for (const entry of entries) {
    // `:` cannot occur in a type or a valid name, so the key is unambiguous.
    const key = `${entry.type}:${entry.name}`;
    const seen = merged.get(key);
    if (seen) seen.actions = normalizeActions([...seen.actions, ...entry.actions]);
    else merged.set(key, { type: entry.type, name: entry.name, actions: normalizeActions(entry.actions) });
  }
  return [...merged.values()];
}

/** `repository:team-a/app:pull,push` */
export function formatScope(access: ResourceAccess): string {
  return `${access.type}:${access.name}:${access.actions.join(',')}`;
}

/** The space-separated `scope` field of an OAuth2 token response; entries without actions are left out. */
export function formatScopes(entries: Iterable<ResourceAccess>): string {
  return [...entries].filter((entry) => entry.actions.length > 0).map(formatScope).join(' ');
}

/** Does this access list allow `action` on the resource? `*` in the list allows any action. */
export function grants(access: readonly ResourceAccess[], type: ResourceType, name: string, action: string): boolean {
  return access.some(
    (entry) => entry.type === type && entry.name === name && (entry.actions.includes(action) || entry.actions.includes('*')),
  );
}

/**
 * What a token may carry for one resource: the requested actions that are allowed. Asking for
 * `*` without holding `*` yields the concrete actions held; holding `*` grants whatever was asked.
 */
export function intersectActions(requested: readonly string[], allowed: readonly string[]): string[] {
  if (allowed.includes('*')) return normalizeActions(requested);
  if (requested.includes('*')) return normalizeActions(allowed);
  return normalizeActions(requested.filter((action) => allowed.includes(action)));
}
