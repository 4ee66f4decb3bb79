// Sigstore bundles stored as OCI referrers (cosign v3's default): a v0.3 bundle holding a DSSE
// envelope around an in-toto statement. @sigstore/verify checks the cryptography against the
// policy's trusted root, offline: the signature, the key (a policy's public key) or the Fulcio
// certificate chain with its SCTs, the transparency-log inclusion and timestamps. What the library
// leaves to us, and what this module adds:
// - which signers are trusted: a keyless certificate's identity (subject exact or glob, issuer
//   exact) is matched here, not by the library's regular-expression policy;
// - what the signature is about: the statement's subject digest must be the referrer's subject,
//   which must be the manifest being judged; and the statement must be a signature
//   (predicateType), not some other attestation that happens to be signed by a trusted signer.
import { assertBundleLatest, BUNDLE_V03_LEGACY_MEDIA_TYPE, BUNDLE_V03_MEDIA_TYPE, bundleFromJSON, ValidationError, type Bundle } from '@sigstore/bundle';
import { dsse } from '@sigstore/core';
import { toSignedEntity, VerificationError, Verifier, type SignedEntity, type Signer, type TrustMaterial, type VerifierOptions } from '@sigstore/verify';
import { parseStatement, statementCovers, IN_TOTO_PAYLOAD_TYPE } from './in-toto.js';
import { matchesIdentity } from './identity-pattern.js';
import { signerKeys, unusableKeys, verifyRawSignature } from './keys.js';
import { trustMaterialOf } from './trusted-root.js';
import type { SignatureVerifier, SignedSubject, TrustContext, TrustedSigner, VerificationResult } from './verifier.js';

export const SIGSTORE_BUNDLE_ARTIFACT_TYPE = BUNDLE_V03_MEDIA_TYPE;
/** The statement `cosign sign` (v3) makes: "I sign this image". */
export const COSIGN_SIGN_PREDICATE_TYPE = 'https://sigstore.dev/cosign/sign/v1';

export interface SigstoreBundleSignature {
  /** the bundle JSON, the referrer's layer blob */
  bundle: Buffer;
  /** the referrer manifest's `subject.digest` */
  referrerSubjectDigest: string;
}

export interface SigstoreBundleVerifierOptions {
  /**
   * Statement predicate types that count as a signature of the image. Default: cosign's signature
   * only; SBOMs, provenance and other attestations by the same signer approve nothing.
   */
  predicateTypes?: readonly string[];
}

type CosignSigner = Extract<TrustedSigner, { kind: 'cosign' }>;
type KeylessSigner = Extract<TrustedSigner, { kind: 'keyless' }>;
type DsseBundle = Bundle & { content: Extract<Bundle['content'], { $case: 'dsseEnvelope' }> };

/** Who the cryptography says signed, before the statement is looked at. */
interface VerifiedSigner {
  signer: string;
  identity: string;
  description: string;
}

function invalid(reason: string, identity?: string): VerificationResult {
  return { format: 'sigstore-bundle', outcome: 'invalid', reason, ...(identity !== undefined ? { identity } : {}) };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// The library's error codes, as the part of the bundle that failed.
const FAILED_PARTS: Record<string, string> = {
  TLOG_ERROR: 'transparency log entries',
  TLOG_INCLUSION_PROOF_ERROR: 'transparency log inclusion proof',
  TLOG_INCLUSION_PROMISE_ERROR: 'transparency log inclusion promise',
  TLOG_MISSING_INCLUSION_ERROR: 'transparency log inclusion',
  TLOG_BODY_ERROR: 'transparency log entry',
  CERTIFICATE_ERROR: 'certificate',
  TIMESTAMP_ERROR: 'timestamps',
  SIGNATURE_ERROR: 'signature',
};

function verificationProblem(error: unknown): string {
  const part = error instanceof VerificationError ? FAILED_PARTS[error.code] : undefined;
  return `the bundle does not verify against the trusted root${part !== undefined ? ` (${part})` : ''}: ${describeError(error)}`;
}

function describeError(error: unknown): string {
  if (error instanceof ValidationError) return `${error.message} (${error.fields.join(', ')})`;
  if (!(error instanceof Error)) return String(error);
  const cause: unknown = error.cause;
  return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
}

export class SigstoreBundleVerifier implements SignatureVerifier<SigstoreBundleSignature> {
  readonly format = 'sigstore-bundle' as const;
  private readonly predicateTypes: readonly string[];

  constructor(options: SigstoreBundleVerifierOptions = {}) {
    this.predicateTypes = options.predicateTypes ?? [COSIGN_SIGN_PREDICATE_TYPE];
  }

  async verify(signature: SigstoreBundleSignature, subject: SignedSubject, trust: TrustContext): Promise<VerificationResult> {
    if (signature.referrerSubjectDigest !== subject.manifestDigest) {
      return invalid(`the referrer's subject is ${signature.referrerSubjectDigest}, not the manifest ${subject.manifestDigest}`);
    }
    const bundle = parseBundle(signature.bundle);
    if (typeof bundle === 'string') return invalid(bundle);
    const envelope = bundle.content.dsseEnvelope;
    if (envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE) {
      return invalid(`the DSSE envelope's payloadType is ${JSON.stringify(envelope.payloadType)}, not ${IN_TOTO_PAYLOAD_TYPE}`);
    }
    if (trust.trustedRoot === undefined) return invalid('the policy gives no trusted root, which sigstore bundles are verified against');
    const material = trustMaterialOf(trust.trustedRoot); // throws for a root that cannot be read: the policy's fault

    let entity: SignedEntity;
    try {
      entity = withKeyAwareSignatureCheck(toSignedEntity(bundle), envelope);
    } catch (error) {
      return invalid(`the bundle's verification material cannot be read: ${describeError(error)}`);
    }
    const verified = entity.key.$case === 'public-key' ? verifyKeyed(entity, material, trust.signers) : verifyKeyless(entity, material, trust.signers);
    if ('problem' in verified) return invalid(verified.problem, verified.identity);

    // Only now, with a trusted signer's signature over it, is the statement worth reading.
    const statement = parseStatement(envelope.payload);
    const by = `signed by ${verified.description}`;
    if (typeof statement === 'string') return invalid(`${by}, but ${statement}`, verified.identity);
    if (!this.predicateTypes.includes(statement.predicateType)) {
      return invalid(`${by}, but the statement is a ${statement.predicateType} attestation, not an image signature (${this.predicateTypes.join(', ')})`, verified.identity);
    }
    if (!statementCovers(statement, subject.manifestDigest)) {
      const about = statement.subjects.map((s) => Object.entries(s.digest).map(([algorithm, hex]) => `${algorithm}:${hex}`).join('/')).join(', ');
      return invalid(`${by}, but its statement is about ${about}, not the manifest ${subject.manifestDigest}`, verified.identity);
    }
    return {
      format: 'sigstore-bundle',
      outcome: 'valid',
      signer: verified.signer,
      identity: verified.identity,
      reason: `${by}; verified against the trusted root with ${entity.tlogEntries.length} transparency log entr${entity.tlogEntries.length === 1 ? 'y' : 'ies'}; its ${statement.predicateType} statement names ${subject.manifestDigest}`,
    };
  }
}

function parseBundle(bytes: Buffer): DsseBundle | string {
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return 'the bundle is not UTF-8 JSON (truncated or corrupted)';
  }
  if (!isObject(document)) return 'the bundle is not a JSON object';
  const { mediaType } = document;
  if (mediaType !== BUNDLE_V03_MEDIA_TYPE && mediaType !== BUNDLE_V03_LEGACY_MEDIA_TYPE) {
    return `the bundle's mediaType is ${JSON.stringify(mediaType)}, not ${BUNDLE_V03_MEDIA_TYPE}`;
  }
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(document);
    assertBundleLatest(bundle);
  } catch (error) {
    return `the bundle is malformed: ${describeError(error)}`;
  }
  if (bundle.content.$case !== 'dsseEnvelope') return 'the bundle holds a plain message signature, not a DSSE envelope with an in-toto statement';
  return bundle as DsseBundle;
}

// The library verifies DSSE signatures with Node's default hash for the key, SHA-256; cosign signs
// with P-384 keys using SHA-384 and may use RSA-PSS. The same checks as keyed cosign signatures.
function withKeyAwareSignatureCheck(entity: SignedEntity, envelope: DsseBundle['content']['dsseEnvelope']): SignedEntity {
  const content = entity.signature;
  const signed = dsse.preAuthEncoding(envelope.payloadType, envelope.payload);
  return {
    ...entity,
    signature: {
      signature: content.signature,
      compareSignature: (other) => content.compareSignature(other),
      compareDigest: (digest) => content.compareDigest(digest),
      verifySignature: (key) => verifyRawSignature(key, signed, content.signature),
    },
  };
}

// What the trusted root asks for: a log entry when it lists transparency logs, an SCT when it
// lists CT logs; a keyless certificate lives ten minutes, so it also needs a verified time
// (an inclusion promise or a timestamp authority's) at which it was valid.
function thresholds(material: TrustMaterial, keyless: boolean): VerifierOptions {
  return {
    tlogThreshold: material.tlogs.length > 0 ? 1 : 0,
    ctlogThreshold: keyless && material.ctlogs.length > 0 ? 1 : 0,
    timestampThreshold: keyless ? 1 : 0,
  };
}

type Outcome = VerifiedSigner | { problem: string; identity?: string };

function verifyKeyed(entity: SignedEntity, material: TrustMaterial, signers: readonly TrustedSigner[]): Outcome {
  const keyed = signers.filter((signer): signer is CosignSigner => signer.kind === 'cosign');
  if (keyed.length === 0) return { problem: 'the bundle is signed with a public key, but the policy names no public key (cosign) signer' };
  const { usable, unreadable } = signerKeys(keyed);
  for (const { signer, key } of usable) {
    // The bundle's key hint is only a hint: each trusted key is tried, and the signature decides.
    const withKey: TrustMaterial = { ...material, publicKey: () => ({ publicKey: key.key, validFor: () => true }) };
    try {
      new Verifier(withKey, thresholds(material, false)).verify(entity);
      return { signer: signer.name, identity: key.fingerprint, description: `${signer.name}'s key (${key.algorithm}, SHA-256 fingerprint ${key.fingerprint})` };
    } catch (error) {
      // The log entries and timestamps are checked before the signature and do not depend on
      // the key: a failure there is the bundle's, whichever key is tried.
      if (!(error instanceof VerificationError && error.code === 'SIGNATURE_ERROR')) return { problem: verificationProblem(error) };
    }
  }
  const names = keyed.map((signer) => signer.name).join(', ');
  return { problem: `the bundle's signature does not verify with the public key of any trusted signer (${names})${unusableKeys(unreadable)}` };
}

function verifyKeyless(entity: SignedEntity, material: TrustMaterial, signers: readonly TrustedSigner[]): Outcome {
  const keyless = signers.filter((signer): signer is KeylessSigner => signer.kind === 'keyless');
  if (keyless.length === 0) return { problem: 'the bundle is signed with a (keyless) certificate, but the policy names no keyless signer' };
  let verified: Signer;
  try {
    verified = new Verifier(material, thresholds(material, true)).verify(entity);
  } catch (error) {
    return { problem: verificationProblem(error) };
  }
  const subject = verified.identity?.subjectAlternativeName;
  const issuer = verified.identity?.extensions?.issuer;
  const identity = `${subject ?? '(no subject)'} (issuer ${issuer ?? '(none)'})`;
  if (subject === undefined || issuer === undefined) {
    return { problem: `the certificate names no ${subject === undefined ? 'subject' : 'OIDC issuer'}`, identity };
  }
  const trusted = keyless.find((signer) => signer.issuer === issuer && matchesIdentity(signer.subject, subject));
  if (trusted !== undefined) {
    return { signer: trusted.name, identity, description: `${trusted.name} (certificate for ${subject}, issuer ${issuer})` };
  }
  const mismatches = keyless.map((signer) => {
    const wrong: string[] = [];
    if (!matchesIdentity(signer.subject, subject)) wrong.push(`subject ${JSON.stringify(signer.subject)}`);
    if (signer.issuer !== issuer) wrong.push(`issuer ${JSON.stringify(signer.issuer)}`);
    return `${signer.name} wants ${wrong.join(' and ')}`;
  });
  return { problem: `the certificate's identity ${JSON.stringify(subject)} from issuer ${JSON.stringify(issuer)} is no trusted signer's (${mismatches.join('; ')})`, identity };
}
