// The trust policies in force: read from the store (re-read after a short time, so a change made
// through another replica or the CLI shows up), applied as a whole with a difference to show and
// an audit event committed with the change, and asked by the registry which tags are immutable.
import { auditRecord, type ActorKind } from '../audit/events.js';
import type { Knex } from 'knex';
import { KnexTrustPolicyStore, trustPoliciesVersion, type TrustPolicyDiff, type TrustPolicyStore } from '../metadata/trust-policy-store.js';
import type { TagGuard, TagProtection } from '../registry/tag-guard.js';
import { isImmutableTag, policyFor, type TrustPolicy } from './policy.js';

export type { TrustPolicyDiff } from '../metadata/trust-policy-store.js';

/** Who changes the policies, and from where, for the `trust.changed` event. */
export interface TrustChangeAuthor {
  actor?: string | undefined;
  actorKind?: ActorKind | undefined;
  clientIp?: string | undefined;
  /** where the policies came from: a file's path, or `admin API` */
  source: string;
}

export class TrustPolicies implements TagGuard {
  private cached?: { policies: TrustPolicy[]; at: number };

  constructor(
    private readonly store: TrustPolicyStore,
    readonly cacheMs = 2_000,
  ) {}

  async list(): Promise<TrustPolicy[]> {
    if (!this.cached || Date.now() - this.cached.at > this.cacheMs) {
      const stored = await this.store.list();
      this.cached = { policies: stored.map((row) => JSON.parse(row.document) as TrustPolicy), at: Date.now() };
    }
    return this.cached.policies;
  }

  /**
   * The stored set as it is now (not cached) and its version, as a change with `ifVersion`
   * expects it (the admin API's export and its ETag).
   */
  async current(): Promise<{ policies: TrustPolicy[]; version: string }> {
    const stored = await this.store.list();
    return { policies: stored.map((row) => JSON.parse(row.document) as TrustPolicy), version: trustPoliciesVersion(stored) };
  }

  /** The policy that applies to a repository, if any. */
  async for(repository: string): Promise<TrustPolicy | undefined> {
    return policyFor(await this.list(), repository);
  }

  /**
   * Makes `wanted` the whole set (unless `dryRun`) and says what that changes, by repository
   * pattern. A change is recorded as `trust.changed` (the difference and its source) in the
   * transaction that makes it.
   */
  async apply(wanted: readonly TrustPolicy[], options: { dryRun?: boolean; author: TrustChangeAuthor; ifVersion?: string | undefined }): Promise<TrustPolicyDiff> {
    const { source, ...who } = options.author;
    const documents = wanted.map((policy) => ({ repositories: policy.repositories, document: JSON.stringify(policy) }));
    const diff = await this.store.replaceAll(documents, {
      dryRun: options.dryRun ?? false,
      ifVersion: options.ifVersion,
      // The version compared against is the request's business, not the record's.
      audit: ({ basedOn: _basedOn, ...change }) => [auditRecord({ type: 'trust.changed', ...who, details: { source, ...change } })],
    });
    if (!options.dryRun) this.cached = undefined;
    return diff;
  }

  async protection(repository: string): Promise<TagProtection | undefined> {
    const policy = await this.for(repository);
    if (!policy || policy.immutableTags.length === 0) return undefined;
    return { policy: policy.repositories, isImmutable: (tag) => isImmutableTag(policy, tag) };
  }
}

/** The trust policies in force, re-read after `cacheMs` so changes made elsewhere show up. */
export function createTrustPolicies(db: Knex, cacheMs: number): TrustPolicies {
  return new TrustPolicies(new KnexTrustPolicyStore(db), cacheMs);
}
