// Access rules live in the metadata database so every replica enforces the same set. Applying
// a rule file replaces the whole set in one transaction and reports the difference.
import type { AuthStores, NewRule, RuleRecord } from '../../metadata/auth-stores.js';
import { VersionConflictError } from '../../metadata/errors.js';
import { setVersion } from '../../metadata/set-version.js';
import { ACTIONS, formatSubject, parseStoredSubject, parseSubject, validateActions, validatePattern, type AccessRule, type Action } from './rules.js';

export interface StoredRule extends AccessRule {
  id: number;
}

export interface RuleDiff {
  added: AccessRule[];
  removed: AccessRule[];
  changed: { before: AccessRule; after: AccessRule }[];
  /** the version of the set the difference was computed against (see rulesVersion) */
  basedOn: string;
}

/** The version of a rule set: the same rules, the same version, whatever their ids or order. */
export function rulesVersion(rules: readonly AccessRule[]): string {
  return setVersion(rules.map((rule) => JSON.stringify([formatSubject(rule.subject), rule.repositories, [...rule.actions].sort()])));
}

/** A stored record as a rule; records no version could have written are left out rather than fatal. */
function toRule(record: RuleRecord): StoredRule | undefined {
  const subject = parseStoredSubject(record.subject);
  const actions = record.actions.filter((action): action is Action => (ACTIONS as readonly string[]).includes(action));
  if (!subject || actions.length === 0) return undefined;
  return { id: record.id, subject, repositories: record.repositories, actions };
}

const toRules = (records: RuleRecord[]): StoredRule[] => records.map(toRule).filter((rule): rule is StoredRule => rule !== undefined);

const toRecord = (rule: AccessRule): NewRule => ({ subject: formatSubject(rule.subject), repositories: rule.repositories, actions: [...rule.actions] });

/** The checks every write repeats, whoever built the rule: the grammar and the column widths. */
function validateRule(rule: AccessRule): void {
  parseSubject(formatSubject(rule.subject));
  validatePattern(rule.repositories);
  validateActions(rule.actions);
}

const keyOf = (rule: AccessRule): string => `${formatSubject(rule.subject)}\u0000${rule.repositories}`;
const sameActions = (a: AccessRule, b: AccessRule): boolean => [...a.actions].sort().join() === [...b.actions].sort().join();

export function diffRules(current: readonly AccessRule[], wanted: readonly AccessRule[]): Omit<RuleDiff, 'basedOn'> {
  const before = new Map(current.map((rule) => [keyOf(rule), rule]));
  const after = new Map(wanted.map((rule) => [keyOf(rule), rule]));
  const diff: Omit<RuleDiff, 'basedOn'> = { added: [], removed: [], changed: [] };
  for (const [key, rule] of after) {
    const old = before.get(key);
    if (!old) diff.added.push(rule);
    else if (!sameActions(old, rule)) diff.changed.push({ before: old, after: rule });
  }
  for (const [key, rule] of before) if (!after.has(key)) diff.removed.push(rule);
  return diff;
}

export class AccessRuleStore {
  constructor(private readonly stores: AuthStores) {}

  async list(): Promise<StoredRule[]> {
    return toRules(await this.stores.rules.list());
  }

  /** Stores a rule (replacing the actions of one for the same subject and repositories); with `tx`, in that transaction. */
  async add(rule: AccessRule, tx?: AuthStores): Promise<StoredRule> {
    validateRule(rule);
    const stored = await (tx ?? this.stores).rules.put(toRecord(rule));
    const added = toRule(stored);
    if (!added) throw new Error(`rule ${stored.id} was stored but cannot be read back`);
    return added;
  }

  remove(id: number, tx?: AuthStores): Promise<boolean> {
    return (tx ?? this.stores).rules.delete(id);
  }

  /** Removes every rule for a subject (e.g. when its robot account is deleted). */
  removeSubject(subject: string, tx?: AuthStores): Promise<number> {
    return (tx ?? this.stores).rules.deleteSubject(subject);
  }

  /**
   * Makes the stored set equal to `wanted`, in one transaction (nested in `tx` when given, e.g.
   * to commit with the audit event recording it); with dryRun only computes the difference.
   */
  async replaceAll(wanted: readonly AccessRule[], options: { dryRun?: boolean; ifVersion?: string | undefined } = {}, tx?: AuthStores): Promise<RuleDiff> {
    wanted.forEach(validateRule);
    return (tx ?? this.stores).transaction(async (within) => {
      const current = toRules(await within.rules.list({ lock: !options.dryRun }));
      const basedOn = rulesVersion(current);
      if (options.ifVersion !== undefined && options.ifVersion !== basedOn) throw new VersionConflictError('access rules', basedOn);
      const diff = { ...diffRules(current, wanted), basedOn };
      if (options.dryRun) return diff;
      for (const rule of diff.removed) await within.rules.deleteRule(formatSubject(rule.subject), rule.repositories);
      for (const { after } of diff.changed) await within.rules.put(toRecord(after));
      for (const rule of diff.added) await within.rules.put(toRecord(rule));
      return diff;
    });
  }
}
