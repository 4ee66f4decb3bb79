// The garbage collector's settings (configuration keys gc.*), with their defaults, and the
// per-repository decision on untagged manifests.
import { ConfigError } from '../config/config.js';
import { validatePattern } from '../auth/policy/rules.js';
import { policyFor } from '../trust/policy.js';
import type { UntaggedPolicy } from '../metadata/gc-store.js';

/** gc.* as the configuration file and environment give it (schemas/config.schema.json). */
export interface GcConfig {
  /** how long a link or manifest must stay unreferenced (untagged) before it goes; default 86400 */
  graceSeconds?: number;
  /** how often `serve` collects; 0: never (only `portcullis gc`); default 3600 */
  intervalSeconds?: number;
  untagged?: {
    /** what happens to untagged manifests in a repository no pattern below names; default keep */
    default?: UntaggedPolicy;
    /** repository patterns (the access rules' glob syntax) whose untagged manifests go */
    delete?: string[];
    /** repository patterns whose untagged manifests stay (the more specific pattern wins; on a tie, keep) */
    keep?: string[];
  };
}

export interface GcSettings {
  graceMs: number;
  intervalMs: number;
  untagged: { default: UntaggedPolicy; delete: string[]; keep: string[] };
}

export const GC_DEFAULTS = { graceSeconds: 86_400, intervalSeconds: 3_600, untaggedDefault: 'keep' } as const;

/**
 * A collection beside requests shares the database with them: after each batch it pauses nine
 * times as long as the batch took, so it holds at most a tenth of the database's time, and less
 * the busier the database is (a batch that waited for requests' writes took longer, so its pause
 * is longer too). bench/gc-bench.ts measures what that costs pushes and GETs. `serve` collects at
 * this pace; `portcullis gc` does by default (`--pace 0`: as fast as it can, servers stopped).
 */
export const SERVE_PACE = 9;

/**
 * The settings from a loaded configuration (its `gc` key, each part defaulted). Patterns are
 * checked here: a pattern that can never match is a mistake the operator should hear about.
 */
export function gcSettingsOf(config: { dataDir: string; gc?: GcConfig | undefined }): GcSettings {
  const gc = config.gc ?? {};
  const graceSeconds = gc.graceSeconds ?? GC_DEFAULTS.graceSeconds;
  const intervalSeconds = gc.intervalSeconds ?? GC_DEFAULTS.intervalSeconds;
  if (!Number.isInteger(graceSeconds) || graceSeconds < 0) throw new ConfigError(`gc.graceSeconds must be a whole number of seconds, 0 or more (got ${graceSeconds})`);
  if (!Number.isInteger(intervalSeconds) || intervalSeconds < 0) throw new ConfigError(`gc.intervalSeconds must be a whole number of seconds, 0 or more (got ${intervalSeconds})`);
  const untagged = {
    default: gc.untagged?.default ?? GC_DEFAULTS.untaggedDefault,
    delete: checkedPatterns(gc.untagged?.delete ?? [], 'gc.untagged.delete'),
    keep: checkedPatterns(gc.untagged?.keep ?? [], 'gc.untagged.keep'),
  };
  if (untagged.default !== 'keep' && untagged.default !== 'delete') throw new ConfigError(`gc.untagged.default must be one of keep, delete (got ${String(untagged.default)})`);
  return { graceMs: graceSeconds * 1000, intervalMs: intervalSeconds * 1000, untagged };
}

function checkedPatterns(patterns: string[], key: string): string[] {
  return patterns.map((pattern, index) => {
    try {
      return validatePattern(pattern);
    } catch (error) {
      throw new ConfigError(`${key}[${index}]: ${(error as Error).message}`);
    }
  });
}

/**
 * Whether a repository's untagged manifests go: the most specific matching pattern decides (the
 * longest literal prefix, as trust policies are chosen), `keep` on a tie, `default` when none
 * matches.
 */
export function untaggedPolicy(untagged: GcSettings['untagged']): (repository: string) => UntaggedPolicy {
  // keep first: policyFor keeps the first of equally specific patterns
  const rules = [
    ...untagged.keep.map((repositories) => ({ repositories, policy: 'keep' as const })),
    ...untagged.delete.map((repositories) => ({ repositories, policy: 'delete' as const })),
  ];
  return (repository) => policyFor(rules, repository)?.policy ?? untagged.default;
}
