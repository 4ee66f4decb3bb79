// What the trust policy says about one image, from the stored verification results (as pull-time
// enforcement judges it, without its side effects): the policy that applies, each signature's
// outcome and reason, and the verdict. `portcullis trust check` and `GET /admin/v1/trust/check`
// both explain through here, so they say the same thing; the signature report judges each tag
// with `judgeStoredResults` too.
import type { ManifestLookup, ManifestRecord } from '../metadata/store.js';
import type { VerificationRecord } from '../metadata/signature-store.js';
import { isTag, parseDigest, parseName } from '../registry/reference.js';
import { isSignatureArtifact } from './artifacts.js';
import { satisfyingSignature } from './enforcement.js';
import { judgedUnder } from './policy-digest.js';
import { TrustPolicyError } from './policy-file.js';
import { isImmutableTag, type TrustPolicy } from './policy.js';

/**
 * What a pull of the image meets: served to anyone who may pull; served but each pull recorded as
 * unsatisfied (audit); refused to pull-only principals (enforce: HEAD, and GET for principals that
 * may push, are still answered, so signing stays possible).
 */
export type Verdict = 'served' | 'served-unsatisfied' | 'refused';

export interface Judgement {
  verdict: Verdict;
  /** the stored result that satisfies the policy */
  satisfiedBy?: VerificationRecord | undefined;
  /** the verdict in words */
  reason: string;
}

/** The parts of the trust layer and the metadata store an explanation reads. */
export interface ExplainSources {
  policies: { for(repository: string): Promise<TrustPolicy | undefined> };
  manifests: { getManifest(repository: string, lookup: ManifestLookup): Promise<ManifestRecord | undefined> };
  verifications: { verificationsOf(repository: string, manifestDigest: string): Promise<VerificationRecord[]> };
}

export interface ImageReference {
  repository: string;
  lookup: { tag: string } | { digest: string };
}

export interface Explanation {
  repository: string;
  tag?: string | undefined;
  digest: string;
  policy?: TrustPolicy | undefined;
  /** whether the tag asked about is immutable under the policy */
  immutableTag?: boolean | undefined;
  /** a signature, attestation or SBOM (always readable, never judged) */
  artifact: boolean;
  results: VerificationRecord[];
  judgement: Judgement;
}

/** Longest image reference read: a repository name, `@`, and a digest or tag, with room to spare. */
const MAX_IMAGE_LENGTH = 512;

/** `repository:tag` or `repository@sha256:…`, checked against the spec's grammar. */
export function parseImage(image: string): ImageReference {
  if (image.length > MAX_IMAGE_LENGTH) throw new TrustPolicyError(`the image reference is longer than ${MAX_IMAGE_LENGTH} characters`);
  const shown = JSON.stringify(image.slice(0, 200));
  const at = image.indexOf('@');
  if (at >= 0) return { repository: parseName(image.slice(0, at)), lookup: { digest: parseDigest(image.slice(at + 1)).value } };
  const colon = image.lastIndexOf(':');
  if (colon < 0) throw new TrustPolicyError(`${shown}: name an image as repository:tag or repository@digest`);
  const tag = image.slice(colon + 1);
  if (!isTag(tag)) throw new TrustPolicyError(`${shown}: ${JSON.stringify(tag.slice(0, 140))} is not a valid tag`);
  return { repository: parseName(image.slice(0, colon)), lookup: { tag } };
}

/** The verdict on a manifest from its stored results, by the same rules as pull-time enforcement. */
export function judgeStoredResults(policy: TrustPolicy | undefined, results: readonly VerificationRecord[], artifact: boolean): Judgement {
  if (!policy) return { verdict: 'served', reason: 'no trust policy applies: no requirements' };
  if (policy.signatures.mode === 'off') return { verdict: 'served', reason: `the trust policy for ${policy.repositories} does not require signatures (mode off)` };
  if (artifact) return { verdict: 'served', reason: 'a signature artifact: always readable' };
  const satisfiedBy = satisfyingSignature(policy, results);
  if (satisfiedBy) return { verdict: 'served', satisfiedBy, reason: `valid signature from ${satisfiedBy.signer ?? '?'}` };
  const missing = `no valid signature from a signer of the trust policy for ${policy.repositories}`;
  if (policy.signatures.mode === 'audit') return { verdict: 'served-unsatisfied', reason: `${missing}: served, and each pull recorded as unsatisfied` };
  return { verdict: 'refused', reason: `${missing}: refused to pull-only principals` };
}

/** The explanation for an image; undefined when the repository holds no such manifest. */
export async function explainImage(sources: ExplainSources, image: ImageReference): Promise<Explanation | undefined> {
  const { repository, lookup } = image;
  const manifest = await sources.manifests.getManifest(repository, lookup);
  if (!manifest) return undefined;
  const policy = await sources.policies.for(repository);
  const results = await sources.verifications.verificationsOf(repository, manifest.digest);
  const tag = 'tag' in lookup ? lookup.tag : undefined;
  const artifact = isSignatureArtifact(manifest.payload);
  return {
    repository,
    tag,
    digest: manifest.digest,
    policy,
    immutableTag: tag !== undefined && policy !== undefined ? isImmutableTag(policy, tag) : undefined,
    artifact,
    results,
    judgement: judgeStoredResults(policy, results, artifact),
  };
}

const STALE_NOTE = ' (judged under an earlier version of the policy: being verified again)';

/** The explanation as `portcullis trust check` prints it: one labelled line each, a line per signature. */
export function formatExplanation(explanation: Explanation): string {
  const { repository, tag, digest, policy, results, judgement } = explanation;
  const lines = [`image       ${repository}${tag !== undefined ? `:${tag}` : ''}@${digest}`];
  if (!policy) {
    lines.push('policy      none applies: no requirements', 'verdict     served to anyone who may pull');
    return lines.join('\n');
  }
  const immutable = policy.immutableTags.length > 0 ? `; immutable tags ${policy.immutableTags.join(', ')}` : '';
  lines.push(`policy      ${policy.repositories} (signatures: ${policy.signatures.mode}${immutable})`);
  if (explanation.immutableTag) lines.push(`tag         ${tag ?? ''} is immutable: it cannot be moved or deleted`);
  lines.push(results.length === 0 ? 'signatures  none' : 'signatures');
  for (const result of results) {
    const stale = judgedUnder(policy, result) ? '' : STALE_NOTE;
    lines.push(`  ${result.outcome.padEnd(8)}${result.format.padEnd(16)}${(result.signer ?? '-').padEnd(16)}${result.reason}${stale}`);
  }
  const verdict =
    judgement.verdict === 'served'
      ? policy.signatures.mode === 'off'
        ? 'served'
        : `served (${judgement.reason})`
      : judgement.verdict === 'served-unsatisfied'
        ? 'served, and each pull recorded as unsatisfied (no valid signature from a policy signer)'
        : 'refused to pull-only principals (no valid signature from a policy signer)';
  lines.push(`verdict     ${verdict}`);
  return lines.join('\n');
}

/** The explanation as the admin API answers it. */
export function explanationJson(explanation: Explanation): Record<string, unknown> {
  const { repository, tag, digest, policy, results, judgement } = explanation;
  return {
    image: `${repository}${tag !== undefined ? `:${tag}` : ''}@${digest}`,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    digest,
    policy: policy
      ? {
          repositories: policy.repositories,
          mode: policy.signatures.mode,
          immutableTags: policy.immutableTags,
          signers: policy.signatures.signers.map((signer) => signer.name),
          ...(explanation.immutableTag !== undefined ? { tagImmutable: explanation.immutableTag } : {}),
        }
      : null,
    artifact: explanation.artifact,
    // `current`: judged under the policy in force (only those count; the others are being judged again)
    signatures: results.map((result) => ({ ...verificationJson(result), current: judgedUnder(policy, result) })),
    verdict: judgement.verdict,
    reason: judgement.reason,
    ...(judgement.satisfiedBy ? { satisfiedBy: { format: judgement.satisfiedBy.format, signature: judgement.satisfiedBy.signatureRef, signer: judgement.satisfiedBy.signer } } : {}),
  };
}

/** A stored verification result as the admin API shows it (also `GET /admin/v1/signatures`). */
export function verificationJson(record: VerificationRecord): Record<string, unknown> {
  return {
    format: record.format,
    signature: record.signatureRef,
    outcome: record.outcome,
    ...(record.signer !== undefined ? { signer: record.signer } : {}),
    ...(record.identity !== undefined ? { identity: record.identity } : {}),
    reason: record.reason,
    verifiedAt: new Date(record.verifiedAt).toISOString(),
  };
}
