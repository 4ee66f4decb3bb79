// Signatures that arrive as manifests are verified when they arrive, and the result is stored on
// the manifest they sign (pull-time enforcement is then a lookup, not crypto):
// - keyed cosign: a manifest under the tag `sha256-<hex>.sig` whose layers are simple-signing
//   payloads with the signature in an annotation;
// - sigstore bundles: an OCI referrer (a manifest with a `subject`) whose artifact type is the
//   bundle media type, the bundle its layer.
// A signature the verifier refuses is recorded with its reason; an intake fault never fails the
// push that brought the signature (the push is committed by then), it is logged and recorded.
import type { Logger } from 'pino';
import type { SignatureStore, VerificationRecord } from '../metadata/signature-store.js';
import { COSIGN_PAYLOAD_MEDIA_TYPE, COSIGN_SIGNATURE_ANNOTATION, CosignSignatureVerifier } from './cosign.js';
import type { TrustSource } from './signatures.js';
import { SIGSTORE_BUNDLE_ARTIFACT_TYPE, SigstoreBundleVerifier } from './sigstore-bundle.js';
import type { SignatureFormat, VerificationResult } from './verifier.js';

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

export interface SignatureIntakeOptions {
  store: SignatureStore;
  trust: TrustSource;
  blobs: BlobReader;
  log: Logger;
}

export class SignatureIntake {
  private readonly cosign = new CosignSignatureVerifier();
  private readonly bundles = new SigstoreBundleVerifier();

  constructor(private readonly options: SignatureIntakeOptions) {}

  /** Looks at a freshly pushed manifest; verifies and records it when it is a signature. */
  async arrived(manifest: ArrivedManifest): Promise<void> {
    try {
      const signed = COSIGN_SIGNATURE_TAG.exec(manifest.tag ?? '');
      if (signed) await this.cosignSignatures(manifest, `sha256:${signed[1] as string}`);
      else if (manifest.subjectDigest !== undefined && manifest.artifactType === SIGSTORE_BUNDLE_ARTIFACT_TYPE) await this.bundle(manifest, manifest.subjectDigest);
    } catch (error) {
      this.options.log.error({ err: error, repository: manifest.repository, digest: manifest.digest }, 'could not verify an arriving signature');
    }
  }

  private async cosignSignatures(manifest: ArrivedManifest, signedDigest: string): Promise<void> {
    const layers = layersOf(manifest.payload).slice(0, MAX_COSIGN_LAYERS);
    const trust = await this.options.trust(manifest.repository);
    for (const [index, layer] of layers.entries()) {
      if (layer.mediaType !== COSIGN_PAYLOAD_MEDIA_TYPE || typeof layer.digest !== 'string') continue;
      const annotations = (typeof layer.annotations === 'object' && layer.annotations !== null ? layer.annotations : {}) as Record<string, unknown>;
      const signatureBase64 = annotations[COSIGN_SIGNATURE_ANNOTATION];
      const reference = `${manifest.digest}#${index}`;
      const payload = await this.options.blobs(manifest.repository, layer.digest, MAX_PAYLOAD_BYTES);
      const result: VerificationResult =
        typeof signatureBase64 !== 'string'
          ? refused('cosign', `layer ${index} carries no ${COSIGN_SIGNATURE_ANNOTATION} annotation`)
          : !payload
            ? refused('cosign', `layer ${index}'s payload is not in this repository or is larger than ${MAX_PAYLOAD_BYTES} bytes`)
            : await this.cosign.verify({ payload, signatureBase64 }, { repository: manifest.repository, manifestDigest: signedDigest }, trust);
      await this.record(manifest.repository, signedDigest, reference, result);
    }
  }

  private async bundle(manifest: ArrivedManifest, subjectDigest: string): Promise<void> {
    const layer = layersOf(manifest.payload)[0];
    const bundle = typeof layer?.digest === 'string' ? await this.options.blobs(manifest.repository, layer.digest, MAX_BUNDLE_BYTES) : undefined;
    const trust = await this.options.trust(manifest.repository);
    const result = bundle
      ? await this.bundles.verify({ bundle, referrerSubjectDigest: subjectDigest }, { repository: manifest.repository, manifestDigest: subjectDigest }, trust)
      : refused('sigstore-bundle', `the bundle layer is missing or larger than ${MAX_BUNDLE_BYTES} bytes`);
    await this.record(manifest.repository, subjectDigest, manifest.digest, result);
  }

  private async record(repository: string, signedDigest: string, signatureRef: string, result: VerificationResult): Promise<void> {
    const record: VerificationRecord = {
      format: result.format,
      signatureRef,
      outcome: result.outcome,
      signer: result.signer,
      identity: result.identity,
      reason: result.reason.slice(0, 1000),
      verifiedAt: Date.now(),
    };
    if (!(await this.options.store.recordVerification(repository, signedDigest, record))) {
      // cosign pushes the image first; a signature for a manifest this repository lacks signs nothing here.
      this.options.log.info({ repository, signed: signedDigest, signature: signatureRef }, 'signature for a manifest this repository does not hold: not recorded');
    }
  }
}

function refused(format: SignatureFormat, reason: string): VerificationResult {
  return { format, outcome: 'invalid', reason };
}

/** The layers of an image manifest (already validated JSON when it was pushed). */
function layersOf(payload: Buffer): Layer[] {
  const parsed = JSON.parse(payload.toString('utf8')) as { layers?: unknown };
  return Array.isArray(parsed.layers) ? (parsed.layers.filter((layer) => typeof layer === 'object' && layer !== null) as Layer[]) : [];
}
