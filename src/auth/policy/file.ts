// The declarative rules file used by `portcullis policy apply` and `policy export`, and the
// same document as JSON in the admin API's `PUT /admin/v1/rules`.
//
//   rules:
//     - subject: group:developers          # group:<dn or name> | user:<name> | robot:<name> | anonymous | authenticated
//       repositories: team-a/**            # * one segment, ** any, ${user} the caller
//       actions: [pull, push]              # pull | push | delete | admin
import { parse, stringify } from 'yaml';
import { formatSubject, parseSubject, RuleError, validateActions, validatePattern, type AccessRule, type FieldProblem } from './rules.js';

/** Enough problems to fix a file in one go, few enough to keep an answer small. */
const MAX_PROBLEMS = 20;

export function parseRulesFile(text: string, source = 'rules file'): AccessRule[] {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new RuleError(`${source} is not valid YAML: ${(error as Error).message}`);
  }
  return parseRulesDocument(document, source);
}

/**
 * Reads `{ rules: [{ subject, repositories, actions }, …] }`, reporting every invalid field (up to
 * a limit) with a JSON Pointer to it, so that an API client can point at each one.
 */
export function parseRulesDocument(document: unknown, source: string): AccessRule[] {
  const rules = typeof document === 'object' && document !== null && !Array.isArray(document) ? (document as { rules?: unknown }).rules : undefined;
  if (!Array.isArray(rules)) {
    throw new RuleError(`${source}: expected a top-level "rules:" list`, [{ pointer: '/rules', detail: 'expected a list of rules' }]);
  }
  const problems: FieldProblem[] = [];
  const parsed = rules.map((entry: unknown, index) => collectRule(entry, `/rules/${index}`, problems));
  if (problems.length > 0) throw rulesError(source, problems);
  return parsed.filter((rule): rule is AccessRule => rule !== undefined);
}

/** One error for every problem found in a document (the first few, with a count of the rest). */
export function rulesError(source: string, problems: readonly FieldProblem[]): RuleError {
  const shown = problems.slice(0, MAX_PROBLEMS);
  const more = problems.length > shown.length ? `\n${source}: … and ${problems.length - shown.length} more` : '';
  return new RuleError(shown.map((problem) => `${source}: ${describePointer(problem.pointer)}: ${problem.detail}`).join('\n') + more, shown);
}

/**
 * One `{ subject, repositories, actions }` entry at `pointer`: the rule, or undefined with
 * each problem found appended to `problems`.
 */
export function collectRule(entry: unknown, pointer: string, problems: FieldProblem[]): AccessRule | undefined {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    problems.push({ pointer, detail: 'must be a mapping of subject, repositories and actions' });
    return undefined;
  }
  const { subject, repositories, actions, ...rest } = entry as Record<string, unknown>;
  const before = problems.length;
  for (const key of Object.keys(rest)) problems.push({ pointer: `${pointer}/${escapePointer(key)}`, detail: `unknown key ${key.slice(0, 40)}` });
  const field = <T>(name: string, read: () => T): T | undefined => {
    try {
      return read();
    } catch (error) {
      if (!(error instanceof RuleError)) throw error;
      problems.push({ pointer: `${pointer}/${name}`, detail: error.message });
      return undefined;
    }
  };
  const rule = {
    subject: field('subject', () => {
      if (typeof subject !== 'string') throw new RuleError('subject is required (a string)');
      return parseSubject(subject);
    }),
    repositories: field('repositories', () => {
      if (typeof repositories !== 'string') throw new RuleError('repositories is required (a string)');
      return validatePattern(repositories);
    }),
    actions: field('actions', () => validateActions(actions)),
  };
  if (problems.length > before || !rule.subject || !rule.repositories || !rule.actions) return undefined;
  return { subject: rule.subject, repositories: rule.repositories, actions: rule.actions };
}

/** Where a problem is, as people find it in a file: `/rules/3/subject` → `rules[3]` (the detail names the field). */
function describePointer(pointer: string): string {
  const [, first = '', second] = pointer.split('/');
  return first === 'rules' && second !== undefined ? `rules[${second}]` : first;
}

const escapePointer = (key: string): string => key.replace(/~/g, '~0').replace(/\//g, '~1');

export function formatRulesFile(rules: readonly AccessRule[]): string {
  return stringify({
    rules: rules.map((rule) => ({ subject: formatSubject(rule.subject), repositories: rule.repositories, actions: rule.actions })),
  });
}
