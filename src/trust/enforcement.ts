// Pull-time enforcement of a trust policy's signature requirement: a lookup of the verification
// results stored when signatures arrived, never crypto on the hot path.
//
// - no policy, or mode off: served;
// - signature artifacts (`sha256-<hex>.sig|.att|.sbom` tags, referrers, cosign signature
//   manifests) stay readable, so clients can fetch them;
// - a valid signature from one of the policy's signers: served;
// - mode audit: served, and the unsatisfied pull is recorded;
// - mode enforce: HEAD is answered to anyone with pull (cosign and crane need the digest to
//   sign), GET to principals that may push (the signers); everyone else is refused, recorded.
// Every manifest needs a signature of its own: an index is served only when it is signed itself
// (and its platform manifests when they are: `cosign sign --recursive` signs both).
import type { SignatureStore, VerificationRecord } from '../metadata/signature-store.js';
import { COSIGN_PAYLOAD_MEDIA_TYPE } from './cosign.js';
import type { TrustPolicies } from './policies.js';
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

/** Tags cosign gives signatures, attestations and SBOMs of `sha256:<hex>`. */
const SIGNATURE_ARTIFACT_TAG = /^sha256-[a-f0-9]{64}\.(?:sig|att|sbom)$/;

export class PullEnforcement {
  constructor(
    private readonly policies: TrustPolicies,
    private readonly store: SignatureStore,
    private readonly record: (event: PullRecord) => Promise<void>,
  ) {}

  async judge(request: PullRequest): Promise<PullVerdict> {
    const policy = await this.policies.for(request.repository);
    if (!policy || policy.signatures.mode === 'off') return { serve: true };
    if (isSignatureArtifact(request)) return { serve: true };
    if (satisfyingSignature(policy, await this.store.verificationsOf(request.repository, request.manifest.digest))) return { serve: true };

    const reason = `${request.manifest.digest} has no valid signature from a signer of the trust policy for ${policy.repositories}`;
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
}

/** The stored result that satisfies a policy: a valid signature from one of its signers. */
export function satisfyingSignature(policy: TrustPolicy, results: readonly VerificationRecord[]): VerificationRecord | undefined {
  const names = new Set(policy.signatures.signers.map((signer) => signer.name));
  return results.find((result) => result.outcome === 'valid' && result.signer !== undefined && names.has(result.signer));
}

function isSignatureArtifact(request: PullRequest): boolean {
  if (SIGNATURE_ARTIFACT_TAG.test(request.reference)) return true;
  if (request.manifest.subjectDigest !== undefined) return true; // a referrer (bundle, SBOM, attestation)
  try {
    const parsed = JSON.parse(request.manifest.payload.toString('utf8')) as { layers?: { mediaType?: unknown }[] };
    const layers = Array.isArray(parsed.layers) ? parsed.layers : [];
    return layers.length > 0 && layers.every((layer) => layer?.mediaType === COSIGN_PAYLOAD_MEDIA_TYPE);
  } catch {
    return false;
  }
}
