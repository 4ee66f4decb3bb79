// GPG "simple signing" (containers/image, `skopeo copy --sign-by`, `podman push --sign-by`): an
// OpenPGP message whose literal data is a small JSON document naming the manifest digest and the
// image reference it was signed for. The signature must come from a trusted signer's key; only
// then is the JSON read, strictly, and it must name this manifest in this repository.
import type * as OpenPgp from 'openpgp';
import { namesRepository, parseImageReference } from './image-reference.js';
import { parseStrictJson, StrictJsonError } from './strict-json.js';
import type { SignatureVerifier, SignedSubject, TrustContext, TrustedSigner, VerificationResult } from './verifier.js';

export interface GpgSignature {
  /** the binary OpenPGP message, as the client stored it */
  message: Buffer;
}

/** A GPG simple signing signature is well under a kilobyte; anything near this is not one. */
export const GPG_SIGNATURE_MAX_BYTES = 64 * 1024;
/** The signed JSON is a few hundred bytes; this bounds what a compressed message may expand to. */
const PAYLOAD_MAX_BYTES = 64 * 1024;
const DOCKER_REFERENCE_MAX_LENGTH = 1024;

export const ATOMIC_SIGNATURE_TYPE = 'atomic container signature';
export const NO_TRUSTED_SIGNER = 'no trusted signer is configured for this repository';

const OPENPGP_CONFIG: OpenPgp.PartialConfig = { maxDecompressedMessageSize: PAYLOAD_MAX_BYTES };

/**
 * openpgp.js is loaded when a GPG key or signature is first read: a registry whose policies name
 * no GPG key never needs its ~15 MiB in memory, nor its load time at start.
 */
let library: Promise<typeof OpenPgp> | undefined;
const openpgp = (): Promise<typeof OpenPgp> => (library ??= import('openpgp'));

type GpgSigner = Extract<TrustedSigner, { kind: 'gpg' }>;

/** A public key from a trust policy that cannot be used. */
export class GpgKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpgKeyError';
  }
}

/**
 * Reads an armored public key, refusing private keys (a policy must never carry a secret).
 * For the trust policy loader too, so a bad key file is refused when the policy is applied.
 */
export async function readGpgPublicKey(armored: string): Promise<{ key: OpenPgp.Key; fingerprint: string }> {
  const { readKey } = await openpgp();
  let key: OpenPgp.Key;
  try {
    key = await readKey({ armoredKey: armored });
  } catch (error) {
    throw new GpgKeyError(`not an armored OpenPGP public key: ${(error as Error).message}`);
  }
  if (key.isPrivate()) throw new GpgKeyError('this is a private key; give the public key only (gpg --armor --export)');
  return { key, fingerprint: key.getFingerprint().toUpperCase() };
}

const invalid = (reason: string, identity?: string): VerificationResult => ({
  format: 'gpg',
  outcome: 'invalid',
  reason,
  ...(identity !== undefined ? { identity } : {}),
});

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The keys of `value` must be exactly `keys`; a problem in words, or undefined. */
function exactKeys(value: unknown, keys: readonly string[], where: string): string | undefined {
  if (!isObject(value)) return `${where} is not a JSON object`;
  const present = Object.keys(value);
  const missing = keys.filter((key) => !present.includes(key));
  if (missing.length > 0) return `${where} lacks ${missing.join(', ')}`;
  const extra = present.filter((key) => !keys.includes(key));
  if (extra.length > 0) return `${where} has an unknown field ${JSON.stringify(extra[0]?.slice(0, 60))}`;
  return undefined;
}

/**
 * Why `reference` does not name `repository`, or undefined when it does: any host (the same
 * image is reached under several names), with or without a tag, the same rule as for cosign.
 */
function referenceProblem(reference: string, subject: SignedSubject): string | undefined {
  if (reference.length > DOCKER_REFERENCE_MAX_LENGTH) return 'the signed docker-reference is too long';
  const shown = JSON.stringify(reference.slice(0, 300));
  const parsed = parseImageReference(reference);
  if (!parsed) return `the signed docker-reference ${shown} is not a valid image reference`;
  if (!namesRepository(parsed, subject.repository)) return `the signature is for repository ${JSON.stringify(parsed.path)} (docker-reference ${shown}), not ${subject.repository}`;
  if (parsed.digest !== undefined && parsed.digest !== subject.manifestDigest) return `the signed docker-reference ${shown} names another manifest`;
  return undefined;
}

/** Why the signed payload does not speak of `subject`, or undefined when it does. */
function payloadProblem(payload: unknown, subject: SignedSubject): string | undefined {
  const problem =
    exactKeys(payload, ['critical', 'optional'], 'the signed document') ??
    exactKeys((payload as Record<string, unknown>).critical, ['type', 'image', 'identity'], 'critical');
  if (problem) return problem;
  const { critical, optional } = payload as { critical: Record<string, unknown>; optional: unknown };
  if (!isObject(optional)) return 'optional is not a JSON object';
  if (optional.creator !== undefined && typeof optional.creator !== 'string') return 'optional.creator is not a string';
  if (optional.timestamp !== undefined && !Number.isSafeInteger(optional.timestamp)) return 'optional.timestamp is not a whole number';
  if (critical.type !== ATOMIC_SIGNATURE_TYPE) return `critical.type is not "${ATOMIC_SIGNATURE_TYPE}"`;
  const shape = exactKeys(critical.image, ['docker-manifest-digest'], 'critical.image') ?? exactKeys(critical.identity, ['docker-reference'], 'critical.identity');
  if (shape) return shape;
  const digest = (critical.image as Record<string, unknown>)['docker-manifest-digest'];
  const reference = (critical.identity as Record<string, unknown>)['docker-reference'];
  if (typeof digest !== 'string') return 'critical.image.docker-manifest-digest is not a string';
  if (typeof reference !== 'string') return 'critical.identity.docker-reference is not a string';
  if (digest !== subject.manifestDigest) return `the signature is for manifest ${JSON.stringify(digest.slice(0, 140))}, not ${subject.manifestDigest}`;
  return referenceProblem(reference, subject);
}

export class GpgVerifier implements SignatureVerifier<GpgSignature> {
  readonly format = 'gpg' as const;
  /** Parsed keys by their armored text: policies name the same few keys over and over. */
  private readonly keys = new Map<string, Promise<OpenPgp.Key>>();

  private key(armored: string): Promise<OpenPgp.Key> {
    let parsed = this.keys.get(armored);
    if (!parsed) {
      if (this.keys.size >= 1024) this.keys.clear();
      parsed = readGpgPublicKey(armored).then(({ key }) => key);
      // A key that cannot be read is not remembered: a corrected policy gets a fresh try.
      parsed.catch(() => this.keys.delete(armored));
      this.keys.set(armored, parsed);
    }
    return parsed;
  }

  /**
   * Judges one signature. A trusted key that cannot be read is a fault of the policy, not of the
   * signature: it throws (GpgKeyError), like any fault of the verifier's own.
   */
  async verify(signature: GpgSignature, subject: SignedSubject, trust: TrustContext): Promise<VerificationResult> {
    if (trust.signers.length === 0) return invalid(NO_TRUSTED_SIGNER);
    const signers = trust.signers.filter((signer): signer is GpgSigner => signer.kind === 'gpg');
    if (signers.length === 0) return invalid('none of the trusted signers for this repository has a GPG key');
    if (signature.message.length > GPG_SIGNATURE_MAX_BYTES) return invalid(`the signature is larger than ${GPG_SIGNATURE_MAX_BYTES} bytes`);
    const keys = await Promise.all(signers.map((signer) => this.key(signer.armoredPublicKey)));

    const { readMessage, verify } = await openpgp();
    let result: OpenPgp.VerifyMessageResult<Uint8Array>;
    try {
      const message = await readMessage({ binaryMessage: new Uint8Array(signature.message), config: OPENPGP_CONFIG });
      result = await verify({ message, verificationKeys: keys, format: 'binary', config: OPENPGP_CONFIG });
    } catch (error) {
      return invalid(`not a signed OpenPGP message: ${(error as Error).message}`);
    }
    // Each signature's check is a promise that rejects when it fails; ones not awaited below
    // must not become unhandled rejections.
    for (const entry of result.signatures) {
      entry.verified.catch(() => undefined);
      entry.signature.catch(() => undefined);
    }
    if (result.signatures.length !== 1) return invalid(`the message carries ${result.signatures.length} signatures; exactly one is accepted`);
    const only = result.signatures[0] as (typeof result.signatures)[number];
    const keyId = only.keyID.toHex().toUpperCase();
    const index = keys.findIndex((key) => key.getKeys(only.keyID).length > 0);
    const key = keys[index];
    const signer = signers[index];
    if (!key || !signer) return invalid(`signed with key ${keyId}, which no trusted signer of this repository holds`, keyId);
    const fingerprint = key.getFingerprint().toUpperCase();
    try {
      await only.verified;
    } catch (error) {
      return invalid(`the signature does not verify with the key of ${signer.name}: ${(error as Error).message}`, fingerprint);
    }

    // Only now is the content worth reading.
    let payload: unknown;
    try {
      payload = parseStrictJson(result.data);
    } catch (error) {
      if (!(error instanceof StrictJsonError)) throw error;
      return invalid(`the signed content is refused: ${error.message}`, fingerprint);
    }
    const problem = payloadProblem(payload, subject);
    if (problem) return invalid(problem, fingerprint);
    return { format: 'gpg', outcome: 'valid', signer: signer.name, identity: fingerprint, reason: `signed by ${signer.name} (key ${fingerprint})` };
  }
}
