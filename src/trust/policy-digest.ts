// Which policy a verification result was judged under. Every stored result carries the digest of
// the policy that applied when it was judged; a result counts only while that policy is still the
// one in force, so a replaced key or a changed signer list can never keep an image served on
// the strength of the old judgement (trust/reverify.ts judges such results again).
import { createHash } from 'node:crypto';
import type { VerificationRecord } from '../metadata/signature-store.js';
import type { TrustPolicy } from './policy.js';
import type { TrustContext } from './verifier.js';

/** What a signature is judged against in a repository, and the policy that came from (if any). */
export interface PolicyTrust extends TrustContext {
  /** `sha256:<hex>` of the policy's JSON document; absent where no policy applies */
  policyDigest?: string | undefined;
}

// Policies are read once per cache period and shared: hash each object once, not on every pull.
const digests = new WeakMap<TrustPolicy, string>();

/** `sha256:<hex>` of a policy's JSON document (as the policy store keeps it). */
export function policyDigest(policy: TrustPolicy): string {
  let digest = digests.get(policy);
  if (digest === undefined) {
    digest = `sha256:${createHash('sha256').update(JSON.stringify(policy)).digest('hex')}`;
    digests.set(policy, digest);
  }
  return digest;
}

/** The signers a policy names (none without a policy), stamped with the policy's digest. */
export function trustUnder(policy: TrustPolicy | undefined): PolicyTrust {
  if (!policy) return { signers: [] };
  return { signers: policy.signatures.signers, trustedRoot: policy.signatures.trustedRoot, policyDigest: policyDigest(policy) };
}

/** Whether a stored result was judged under `policy` exactly as it is now. */
export function judgedUnder(policy: TrustPolicy | undefined, record: Pick<VerificationRecord, 'policyDigest'>): boolean {
  return record.policyDigest === (policy ? policyDigest(policy) : undefined);
}
