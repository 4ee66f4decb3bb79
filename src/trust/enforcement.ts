// Pull-time enforcement of a trust policy's signature requirement: a lookup of the verification
// results stored when signatures arrived, never crypto on the hot path. Only results judged
// under the policy in force count: after a key or policy change, an image waits for its
// signatures to be judged again (trust/reverify.ts) rather than ride on the old verdict.
//
// - no policy, or mode off: served;
// - signature artifacts (cosign signatures, attestations, SBOMs, bundles: manifests no runtime
//   can run, judged by content, see artifacts.ts) stay readable, so clients can fetch them;
// - a valid signature from one of the policy's signers: served;
// - mode audit: served, and the unsatisfied pull is recorded;
// - mode enforce: HEAD is answered to anyone with pull (cosign and crane need the digest to
//   sign), GET to principals that may push (the signers); everyone else is refused, recorded.
// Every manifest needs a signature of its own: an index is served only when it is signed itself
// (and its platform manifests when they are: `cosign sign --recursive` signs both).
import type { SignatureStore, VerificationRecord } from '../metadata/signature-store.js';
import { isSignatureArtifact } from './artifacts.js';
import type { TrustPolicies } from './policies.js';
import { judgedUnder, policyDigest } from './policy-digest.js';
import type { TrustPolicy } from './policy.js';

export interface PullRequest {
  repository: string;
  /** the tag or digest in the URL */
  reference: string;
  method: 'GET' | 'HEAD';
  /** whether the caller may push to the repository (a signer) */
  mayPush: boolean;
  manifest: { digest: string; payload: Buffer; subjectDigest?: string | undefined };
  /** who asks (the token's subject), and from where, for the audit log */
  actor?: string | undefined;
  clientIp?: string | undefined;
}

export type PullVerdict = { serve: true } | { serve: false; reason: string; policy: string };

/** What the enforcement asks the audit log to record. */
export interface PullRecord {
  type: 'pull.denied' | 'pull.unsatisfied';
  repository: string;
  tag?: string | undefined;
  digest: string;
  policy: string;
  reason: string;
  actor?: string | undefined;
  clientIp?: string | undefined;
}

/** Images known to satisfy their policy, kept per process (losing them costs one lookup each). */
const SATISFIED_ENTRIES = 10_000;

export class PullEnforcement {
  /**
   * Image and policy digest → until when it is known to be satisfied. A valid result judged
   * under a policy stays valid under that same policy, so an entry can only go stale when a
   * signature is deleted: it lives no longer than the policies themselves are cached.
   */
  private readonly satisfied = new Map<string, number>();

  constructor(
    private readonly policies: TrustPolicies,
    private readonly store: SignatureStore,
    private readonly record: (event: PullRecord) => Promise<void>,
    private readonly cacheMs = 2_000,
  ) {}

  async judge(request: PullRequest): Promise<PullVerdict> {
    const policy = await this.policies.for(request.repository);
    if (!policy || policy.signatures.mode === 'off') return { serve: true };
    const key = `${request.repository}\n${request.manifest.digest}\n${policyDigest(policy)}`;
    const until = this.satisfied.get(key);
    if (until !== undefined && until > Date.now()) return { serve: true };
    const results = await this.store.verificationsOf(request.repository, request.manifest.digest);
    if (satisfyingSignature(policy, results)) {
      this.remember(key);
      return { serve: true };
    }
    if (isSignatureArtifact(request.manifest.payload)) return { serve: true };

    const pending = results.some((result) => !judgedUnder(policy, result)) ? '; its signatures are being verified again under the changed policy' : '';
    const reason = `${request.manifest.digest} has no valid signature from a signer of the trust policy for ${policy.repositories}${pending}`;
    const tag = request.reference.includes(':') ? undefined : request.reference;
    const base = { repository: request.repository, tag, digest: request.manifest.digest, policy: policy.repositories, reason, actor: request.actor, clientIp: request.clientIp };
    if (policy.signatures.mode === 'audit') {
      await this.record({ type: 'pull.unsatisfied', ...base });
      return { serve: true };
    }
    // enforce: signing must stay possible.
    if (request.method === 'HEAD' || request.mayPush) return { serve: true };
    await this.record({ type: 'pull.denied', ...base });
    return { serve: false, reason, policy: policy.repositories };
  }

  private remember(key: string): void {
    if (this.cacheMs <= 0) return;
    this.satisfied.delete(key);
    if (this.satisfied.size >= SATISFIED_ENTRIES) {
      const oldest = this.satisfied.keys().next().value;
      if (oldest !== undefined) this.satisfied.delete(oldest);
    }
    this.satisfied.set(key, Date.now() + this.cacheMs);
  }
}

/**
 * The stored result that satisfies a policy: a valid signature from one of its signers, judged
 * under this policy as it is now (a result judged under an earlier version is stale: it names a
 * signer, but perhaps by a key the policy no longer holds).
 */
export function satisfyingSignature(policy: TrustPolicy, results: readonly VerificationRecord[]): VerificationRecord | undefined {
  const names = new Set(policy.signatures.signers.map((signer) => signer.name));
  return results.find((result) => result.outcome === 'valid' && result.signer !== undefined && names.has(result.signer) && judgedUnder(policy, result));
}
