// Signatures that arrive as manifests are verified when they arrive, and the result is stored on
// the manifest they sign (pull-time enforcement is then a lookup, not crypto):
// - keyed cosign: a manifest under the tag `sha256-<hex>.sig` whose layers are simple-signing
//   payloads with the signature in an annotation;
// - sigstore bundles: an OCI referrer (a manifest with a `subject`) whose artifact type is the
//   bundle media type, the bundle its layer.
// A signature the verifier refuses is recorded with its reason; an intake fault never fails the
// push that brought the signature (the push is committed by then), it is logged and recorded.
// Each result is stored with the audit events of the signature's arrival (who pushed it), in one
// transaction. ManifestSignatures judges these formats from their stored bytes, on arrival and
// again when the policy changes (trust/reverify.ts).
import type { Logger } from 'pino';
import type { Author } from '../audit/events.js';
import type { SignatureStore } from '../metadata/signature-store.js';
import { COSIGN_PAYLOAD_MEDIA_TYPE, COSIGN_SIGNATURE_ANNOTATION, CosignSignatureVerifier } from './cosign.js';
import type { PolicyTrust } from './policy-digest.js';
import { arrivalEvents, verificationRecord, type TrustSource } from './signatures.js';
import { SIGSTORE_BUNDLE_ARTIFACT_TYPE, SigstoreBundleVerifier } from './sigstore-bundle.js';
import type { SignatureFormat, TrustContext, VerificationResult } from './verifier.js';

/** Told of each signature judged (metrics): its format and outcome, `error` when it could not be judged or recorded. */
export type VerificationObserver = (format: SignatureFormat, outcome: VerificationResult['outcome'] | 'error') => void;

/** Reads a blob a repository holds, at most `maxBytes` (undefined when absent or larger). */
export type BlobReader = (repository: string, digest: string, maxBytes: number) => Promise<Buffer | undefined>;

export interface ArrivedManifest {
  repository: string;
  /** the tag it was pushed under, if any */
  tag?: string | undefined;
  digest: string;
  payload: Buffer;
  subjectDigest?: string | undefined;
  artifactType?: string | undefined;
  /** who pushed it, for the audit log */
  author: Author;
}

/** cosign's tag for the signatures of `sha256:<hex>`. */
const COSIGN_SIGNATURE_TAG = /^sha256-([a-f0-9]{64})\.sig$/;
/** A simple-signing payload is a few hundred bytes; cosign bundles a few KiB. */
const MAX_PAYLOAD_BYTES = 64 * 1024;
const MAX_BUNDLE_BYTES = 1024 * 1024;
/** Signature layers looked at in one cosign manifest. */
const MAX_COSIGN_LAYERS = 16;

interface Layer {
  mediaType?: unknown;
  digest?: unknown;
  annotations?: unknown;
}

/** How a cosign signature is named in its result: `<.sig manifest digest>#<layer index>`. */
const cosignSignatureRef = (signatureManifest: string, layer: number): string => `${signatureManifest}#${layer}`;

/**
 * Judges the signatures that live in manifests, from the bytes the repository stores: a cosign
 * `.sig` manifest's signature layers, and a sigstore bundle referrer. Nothing is written here.
 */
export class ManifestSignatures {
  private readonly cosign = new CosignSignatureVerifier();
  private readonly bundles = new SigstoreBundleVerifier();

  constructor(private readonly blobs: BlobReader) {}

  /** How many layers of a `.sig` manifest are looked at (signatures beyond are not judged). */
  cosignLayerCount(signatureManifest: Buffer): number {
    return Math.min(layersOf(signatureManifest).length, MAX_COSIGN_LAYERS);
  }

  /**
   * The signature in layer `index` of a cosign `.sig` manifest, judged as a signature of
   * `signedDigest`; undefined when that layer is no simple-signing payload (not a signature).
   */
  async cosignLayer(repository: string, signatureManifest: Buffer, index: number, signedDigest: string, trust: TrustContext): Promise<VerificationResult | undefined> {
    const layer = layersOf(signatureManifest)[index];
    if (layer?.mediaType !== COSIGN_PAYLOAD_MEDIA_TYPE || typeof layer.digest !== 'string') return undefined;
    const annotations = (typeof layer.annotations === 'object' && layer.annotations !== null ? layer.annotations : {}) as Record<string, unknown>;
    const signatureBase64 = annotations[COSIGN_SIGNATURE_ANNOTATION];
    if (typeof signatureBase64 !== 'string') return refused('cosign', `layer ${index} carries no ${COSIGN_SIGNATURE_ANNOTATION} annotation`);
    const payload = await this.blobs(repository, layer.digest, MAX_PAYLOAD_BYTES);
    if (!payload) return refused('cosign', `layer ${index}'s payload is not in this repository or is larger than ${MAX_PAYLOAD_BYTES} bytes`);
    return this.cosign.verify({ payload, signatureBase64 }, { repository, manifestDigest: signedDigest }, trust);
  }

  /** A sigstore bundle referrer (its manifest's bytes), judged as a signature of `signedDigest`. */
  async bundle(repository: string, referrer: Buffer, signedDigest: string, trust: TrustContext): Promise<VerificationResult> {
    const layer = layersOf(referrer)[0];
    const bundle = typeof layer?.digest === 'string' ? await this.blobs(repository, layer.digest, MAX_BUNDLE_BYTES) : undefined;
    if (!bundle) return refused('sigstore-bundle', `the bundle layer is missing or larger than ${MAX_BUNDLE_BYTES} bytes`);
    // The referrer's own subject, as pushed: the verifier ties it to the statement and to signedDigest.
    return this.bundles.verify({ bundle, referrerSubjectDigest: subjectOf(referrer) ?? '(none)' }, { repository, manifestDigest: signedDigest }, trust);
  }
}

export interface SignatureIntakeOptions {
  store: SignatureStore;
  trust: TrustSource;
  blobs: BlobReader;
  log: Logger;
}

export class SignatureIntake {
  readonly signatures: ManifestSignatures;
  private observer: VerificationObserver | undefined;

  constructor(private readonly options: SignatureIntakeOptions) {
    this.signatures = new ManifestSignatures(options.blobs);
  }

  /** Reports every signature judged from now on to `observer`. */
  observe(observer: VerificationObserver): void {
    this.observer = observer;
  }

  /** Looks at a freshly pushed manifest; verifies and records it when it is a signature. */
  async arrived(manifest: ArrivedManifest): Promise<void> {
    const signed = COSIGN_SIGNATURE_TAG.exec(manifest.tag ?? '');
    const bundle = !signed && manifest.subjectDigest !== undefined && manifest.artifactType === SIGSTORE_BUNDLE_ARTIFACT_TYPE;
    try {
      if (signed) await this.cosignSignatures(manifest, `sha256:${signed[1] as string}`);
      else if (bundle) await this.bundle(manifest, manifest.subjectDigest as string);
    } catch (error) {
      if (signed || bundle) this.observer?.(signed ? 'cosign' : 'sigstore-bundle', 'error');
      this.options.log.error({ err: error, repository: manifest.repository, digest: manifest.digest }, 'could not verify an arriving signature');
    }
  }

  private async cosignSignatures(manifest: ArrivedManifest, signedDigest: string): Promise<void> {
    const trust = await this.options.trust(manifest.repository);
    for (let index = 0; index < this.signatures.cosignLayerCount(manifest.payload); index++) {
      const result = await this.signatures.cosignLayer(manifest.repository, manifest.payload, index, signedDigest, trust);
      if (result) await this.record(manifest, signedDigest, cosignSignatureRef(manifest.digest, index), result, trust);
    }
  }

  private async bundle(manifest: ArrivedManifest, subjectDigest: string): Promise<void> {
    const trust = await this.options.trust(manifest.repository);
    const result = await this.signatures.bundle(manifest.repository, manifest.payload, subjectDigest, trust);
    await this.record(manifest, subjectDigest, manifest.digest, result, trust);
  }

  private async record(manifest: ArrivedManifest, signedDigest: string, signatureRef: string, result: VerificationResult, trust: PolicyTrust): Promise<void> {
    const { repository } = manifest;
    const record = verificationRecord(result, signatureRef, trust);
    const recorded = await this.options.store.recordVerification(repository, signedDigest, record, arrivalEvents(manifest.author, repository, signedDigest, record));
    // Counted once judged and stored: a fault in either is counted as an error by arrived().
    this.observer?.(result.format, result.outcome);
    if (!recorded) {
      // cosign pushes the image first; a signature for a manifest this repository lacks signs nothing here.
      this.options.log.info({ repository, signed: signedDigest, signature: signatureRef }, 'signature for a manifest this repository does not hold: not recorded');
    }
  }
}

function refused(format: SignatureFormat, reason: string): VerificationResult {
  return { format, outcome: 'invalid', reason };
}

/** The parsed manifest (already validated JSON when it was pushed), or nothing. */
function parsed(payload: Buffer): { layers?: unknown; subject?: unknown } {
  try {
    const value = JSON.parse(payload.toString('utf8')) as unknown;
    return typeof value === 'object' && value !== null ? (value as { layers?: unknown; subject?: unknown }) : {};
  } catch {
    return {};
  }
}

/** The layers of an image manifest. */
function layersOf(payload: Buffer): Layer[] {
  const { layers } = parsed(payload);
  return Array.isArray(layers) ? (layers.filter((layer) => typeof layer === 'object' && layer !== null) as Layer[]) : [];
}

/** The digest a referrer's `subject` names. */
function subjectOf(payload: Buffer): string | undefined {
  const { subject } = parsed(payload);
  const digest = typeof subject === 'object' && subject !== null ? (subject as { digest?: unknown }).digest : undefined;
  return typeof digest === 'string' ? digest : undefined;
}
