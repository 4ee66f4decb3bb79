// Keyed cosign signatures (the `sha256-<hex>.sig` tag convention): a "simple signing" JSON
// payload, stored as the signature manifest's layer, and the base64 signature over exactly those
// bytes from the layer's `dev.cosignproject.cosign/signature` annotation.
//
// Order matters: the payload is untrusted bytes until a trusted key's signature over it checks
// out, so it is parsed only then, and then strictly (exact shape, exact type string), and bound
// to the manifest digest and the repository it is judged for.
import { parseImageReference, namesRepository } from './image-reference.js';
import { signerKeys, unusableKeys, verifyRawSignature } from './keys.js';
import { parseStrictJson, StrictJsonError } from './strict-json.js';
import type { SignatureVerifier, SignedSubject, TrustContext, TrustedSigner, VerificationResult } from './verifier.js';

export const COSIGN_PAYLOAD_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';

export interface CosignSignature {
  /** the layer blob: the simple-signing payload, byte for byte */
  payload: Buffer;
  /** the layer's `dev.cosignproject.cosign/signature` annotation */
  signatureBase64: string;
}

type CosignSigner = Extract<TrustedSigner, { kind: 'cosign' }>;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function decodeBase64(text: string): Buffer | undefined {
  // Buffer.from(…, 'base64') skips what it cannot read; a signature must be base64 throughout.
  const compact = text.trim();
  if (compact === '' || !BASE64.test(compact)) return undefined;
  return Buffer.from(compact, 'base64');
}

function invalid(reason: string, identity?: string): VerificationResult {
  return { format: 'cosign', outcome: 'invalid', reason, ...(identity !== undefined ? { identity } : {}) };
}

export class CosignSignatureVerifier implements SignatureVerifier<CosignSignature> {
  readonly format = 'cosign' as const;

  async verify(signature: CosignSignature, subject: SignedSubject, trust: TrustContext): Promise<VerificationResult> {
    const signers = trust.signers.filter((signer): signer is CosignSigner => signer.kind === 'cosign');
    if (signers.length === 0) return invalid('the policy names no cosign public key to verify a cosign signature with');
    const signatureBytes = decodeBase64(signature.signatureBase64);
    if (signatureBytes === undefined) return invalid(`the ${COSIGN_SIGNATURE_ANNOTATION} annotation is not base64`);

    const { usable, unreadable } = signerKeys(signers);
    for (const { signer, key } of usable) {
      if (!verifyRawSignature(key.key, signature.payload, signatureBytes)) continue;

      const problem = payloadProblem(signature.payload, subject);
      if (problem !== undefined) return invalid(`signed with ${signer.name}'s key (${key.algorithm}), but ${problem}`, key.fingerprint);
      return {
        format: 'cosign',
        outcome: 'valid',
        signer: signer.name,
        identity: key.fingerprint,
        reason: `signed with ${signer.name}'s key (${key.algorithm}, SHA-256 fingerprint ${key.fingerprint}) for ${subject.repository}@${subject.manifestDigest}`,
      };
    }
    const names = signers.map((signer) => signer.name).join(', ');
    return invalid(`the signature does not verify with the public key of any trusted signer (${names}): the payload was altered or signed with another key${unusableKeys(unreadable)}`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Exactly these keys, no more, no fewer: a field we do not understand is not silently ignored. */
function hasExactKeys(value: Record<string, unknown>, keys: readonly string[]): boolean {
  const present = Object.keys(value);
  return present.length === keys.length && keys.every((key) => Object.hasOwn(value, key));
}

/** Why a verified payload does not vouch for this manifest in this repository, or undefined. */
function payloadProblem(payload: Buffer, subject: SignedSubject): string | undefined {
  let document: unknown;
  try {
    document = parseStrictJson(payload);
  } catch (error) {
    if (error instanceof StrictJsonError) return `the payload is not strict JSON (${error.message})`;
    throw error;
  }
  if (!isObject(document) || !Object.hasOwn(document, 'critical') || !Object.keys(document).every((key) => key === 'critical' || key === 'optional')) {
    return 'the payload is not a simple-signing document (an object of "critical" and optionally "optional")';
  }
  const { critical, optional } = document;
  if (optional !== undefined && optional !== null && !isObject(optional)) return 'the payload\'s "optional" is neither an object nor null';
  if (!isObject(critical) || !hasExactKeys(critical, ['identity', 'image', 'type'])) {
    return 'the payload\'s "critical" is not exactly {identity, image, type}';
  }
  if (critical.type !== COSIGN_SIGNATURE_TYPE) return `the payload's critical.type is ${JSON.stringify(critical.type)}, not "${COSIGN_SIGNATURE_TYPE}"`;

  const { image, identity } = critical;
  if (!isObject(image) || !hasExactKeys(image, ['docker-manifest-digest']) || typeof image['docker-manifest-digest'] !== 'string') {
    return 'the payload\'s critical.image is not exactly {"docker-manifest-digest": string}';
  }
  const signedDigest = image['docker-manifest-digest'];
  if (signedDigest !== subject.manifestDigest) {
    return `it signs the manifest ${signedDigest}, not ${subject.manifestDigest}`;
  }

  if (!isObject(identity) || !hasExactKeys(identity, ['docker-reference']) || typeof identity['docker-reference'] !== 'string') {
    return 'the payload\'s critical.identity is not exactly {"docker-reference": string}';
  }
  const written = identity['docker-reference'];
  const reference = parseImageReference(written);
  if (reference === undefined) return `its docker-reference ${JSON.stringify(written)} is not an image reference`;
  if (!namesRepository(reference, subject.repository)) {
    return `its docker-reference ${JSON.stringify(written)} names another repository than ${subject.repository} (a signature replayed from elsewhere)`;
  }
  if (reference.digest !== undefined && reference.digest !== subject.manifestDigest) {
    return `its docker-reference ${JSON.stringify(written)} names another manifest than ${subject.manifestDigest}`;
  }
  return undefined;
}
