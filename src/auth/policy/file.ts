// The declarative rules file used by `portcullis policy apply` and `policy export`.
//
//   rules:
//     - subject: group:developers          # group:<dn or name> | user:<name> | robot:<name> | anonymous | authenticated
//       repositories: team-a/**            # * one segment, ** any, ${user} the caller
//       actions: [pull, push]              # pull | push | delete | admin
import { parse, stringify } from 'yaml';
import { formatSubject, parseSubject, RuleError, validateActions, validatePattern, type AccessRule } from './rules.js';

export function parseRulesFile(text: string, source = 'rules file'): AccessRule[] {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new RuleError(`${source} is not valid YAML: ${(error as Error).message}`);
  }
  const rules = (document as { rules?: unknown } | null)?.rules;
  if (!Array.isArray(rules)) throw new RuleError(`${source}: expected a top-level "rules:" list`);
  return rules.map((entry: unknown, index) => {
    const where = `${source}: rules[${index}]`;
    if (typeof entry !== 'object' || entry === null) throw new RuleError(`${where} must be a mapping`);
    const { subject, repositories, actions, ...rest } = entry as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw new RuleError(`${where}: unknown key ${unknown[0]}`);
    try {
      if (typeof subject !== 'string') throw new RuleError('subject is required');
      if (typeof repositories !== 'string') throw new RuleError('repositories is required');
      return { subject: parseSubject(subject), repositories: validatePattern(repositories), actions: validateActions(actions) };
    } catch (error) {
      throw new RuleError(`${where}: ${(error as Error).message}`);
    }
  });
}

export function formatRulesFile(rules: readonly AccessRule[]): string {
  return stringify({
    rules: rules.map((rule) => ({ subject: formatSubject(rule.subject), repositories: rule.repositories, actions: rule.actions })),
  });
}
