// Access rules live in the metadata database so every replica enforces the same set. Applying
// a rule file replaces the whole set in one transaction and reports the difference.
import type { Knex } from 'knex';
import { ACTIONS, formatSubject, parseStoredSubject, parseSubject, validateActions, validatePattern, type AccessRule, type Action } from './rules.js';

export interface StoredRule extends AccessRule {
  id: number;
}

export interface RuleDiff {
  added: AccessRule[];
  removed: AccessRule[];
  changed: { before: AccessRule; after: AccessRule }[];
}

interface RuleRow {
  id: number;
  subject: string;
  repositories: string;
  actions: string;
}

/** A stored row as a rule; rows no version could have written are left out rather than fatal. */
function toRule(row: RuleRow): StoredRule | undefined {
  const subject = parseStoredSubject(row.subject);
  const actions = row.actions.split(',').filter((action): action is Action => (ACTIONS as readonly string[]).includes(action));
  if (!subject || actions.length === 0) return undefined;
  return { id: row.id, subject, repositories: row.repositories, actions };
}

const toRules = (rows: RuleRow[]): StoredRule[] => rows.map(toRule).filter((rule): rule is StoredRule => rule !== undefined);

/** The checks every write repeats, whoever built the rule: the grammar and the column widths. */
function validateRule(rule: AccessRule): void {
  parseSubject(formatSubject(rule.subject));
  validatePattern(rule.repositories);
  validateActions(rule.actions);
}

const keyOf = (rule: AccessRule): string => `${formatSubject(rule.subject)}\u0000${rule.repositories}`;
const sameActions = (a: AccessRule, b: AccessRule): boolean => [...a.actions].sort().join() === [...b.actions].sort().join();

export function diffRules(current: readonly AccessRule[], wanted: readonly AccessRule[]): RuleDiff {
  const before = new Map(current.map((rule) => [keyOf(rule), rule]));
  const after = new Map(wanted.map((rule) => [keyOf(rule), rule]));
  const diff: RuleDiff = { added: [], removed: [], changed: [] };
  for (const [key, rule] of after) {
    const old = before.get(key);
    if (!old) diff.added.push(rule);
    else if (!sameActions(old, rule)) diff.changed.push({ before: old, after: rule });
  }
  for (const [key, rule] of before) if (!after.has(key)) diff.removed.push(rule);
  return diff;
}

export class AccessRuleStore {
  constructor(private readonly db: Knex) {}

  async list(): Promise<StoredRule[]> {
    return toRules((await this.db('access_rules').orderBy('id')) as RuleRow[]);
  }

  async add(rule: AccessRule): Promise<StoredRule> {
    validateRule(rule);
    const row = { subject: formatSubject(rule.subject), repositories: rule.repositories, actions: rule.actions.join(','), created_at: Date.now() };
    await this.db('access_rules').insert(row).onConflict(['subject', 'repositories']).merge(['actions']);
    const stored = (await this.db('access_rules').where({ subject: row.subject, repositories: row.repositories }).first()) as RuleRow;
    const added = toRule(stored);
    if (!added) throw new Error(`rule ${stored.id} was stored but cannot be read back`);
    return added;
  }

  async remove(id: number): Promise<boolean> {
    // Ids are positive 32-bit integers; PostgreSQL refuses a larger one instead of finding nothing.
    if (!Number.isSafeInteger(id) || id < 1 || id > 2_147_483_647) return false;
    return (await this.db('access_rules').where({ id }).delete()) > 0;
  }

  /** Removes every rule for a subject (e.g. when its robot account is deleted). */
  async removeSubject(subject: string): Promise<number> {
    return this.db('access_rules').where({ subject }).delete();
  }

  /** Makes the stored set equal to `wanted`; with dryRun only computes the difference. */
  async replaceAll(wanted: readonly AccessRule[], options: { dryRun?: boolean } = {}): Promise<RuleDiff> {
    wanted.forEach(validateRule);
    return this.db.transaction(async (trx) => {
      const current = toRules((await trx('access_rules').orderBy('id')) as RuleRow[]);
      const diff = diffRules(current, wanted);
      if (options.dryRun) return diff;
      for (const rule of diff.removed) {
        await trx('access_rules').where({ subject: formatSubject(rule.subject), repositories: rule.repositories }).delete();
      }
      for (const { after } of diff.changed) {
        await trx('access_rules')
          .where({ subject: formatSubject(after.subject), repositories: after.repositories })
          .update({ actions: after.actions.join(',') });
      }
      for (const rule of diff.added) {
        await trx('access_rules').insert({
          subject: formatSubject(rule.subject),
          repositories: rule.repositories,
          actions: rule.actions.join(','),
          created_at: Date.now(),
        });
      }
      return diff;
    });
  }
}
