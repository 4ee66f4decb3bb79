// The trust policies in force: read from the store (re-read after a short time, so a change made
// through another replica or the CLI shows up), applied as a whole with a difference to show,
// and asked by the registry which tags are immutable.
import type { TrustPolicyStore } from '../metadata/trust-policy-store.js';
import type { TagGuard, TagProtection } from '../registry/tag-guard.js';
import { isImmutableTag, policyFor, type TrustPolicy } from './policy.js';

export interface TrustPolicyDiff {
  added: string[];
  removed: string[];
  changed: string[];
}

export class TrustPolicies implements TagGuard {
  private cached?: { policies: TrustPolicy[]; at: number };

  constructor(
    private readonly store: TrustPolicyStore,
    private readonly cacheMs = 2_000,
  ) {}

  async list(): Promise<TrustPolicy[]> {
    if (!this.cached || Date.now() - this.cached.at > this.cacheMs) {
      const stored = await this.store.list();
      this.cached = { policies: stored.map((row) => JSON.parse(row.document) as TrustPolicy), at: Date.now() };
    }
    return this.cached.policies;
  }

  /** The policy that applies to a repository, if any. */
  async for(repository: string): Promise<TrustPolicy | undefined> {
    return policyFor(await this.list(), repository);
  }

  /** Makes `wanted` the whole set (unless `dryRun`) and says what that changes, by repository pattern. */
  async apply(wanted: readonly TrustPolicy[], options: { dryRun?: boolean } = {}): Promise<TrustPolicyDiff> {
    const current = new Map((await this.store.list()).map((row) => [row.repositories, row.document]));
    const documents = wanted.map((policy) => ({ repositories: policy.repositories, document: JSON.stringify(policy) }));
    const diff: TrustPolicyDiff = {
      added: documents.filter((policy) => !current.has(policy.repositories)).map((policy) => policy.repositories),
      removed: [...current.keys()].filter((repositories) => !documents.some((policy) => policy.repositories === repositories)),
      changed: documents.filter((policy) => current.has(policy.repositories) && current.get(policy.repositories) !== policy.document).map((policy) => policy.repositories),
    };
    if (!options.dryRun) {
      await this.store.replaceAll(documents);
      this.cached = undefined;
    }
    return diff;
  }

  async protection(repository: string): Promise<TagProtection | undefined> {
    const policy = await this.for(repository);
    if (!policy || policy.immutableTags.length === 0) return undefined;
    return { policy: policy.repositories, isImmutable: (tag) => isImmutableTag(policy, tag) };
  }
}
