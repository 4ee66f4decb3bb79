// The sigstore trusted root (trusted_root.json) a policy names: the Fulcio CAs, CT logs,
// transparency logs and timestamp authorities that bundles are verified against, offline.
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toTrustMaterial, type TrustMaterial } from '@sigstore/verify';

export const TRUSTED_ROOT_MEDIA_TYPE_PREFIX = 'application/vnd.dev.sigstore.trustedroot';

/** A trusted root that cannot be used: a fault of the policy, not of any signature. */
export class TrustedRootError extends Error {
  override readonly name = 'TrustedRootError';
}

// Parsing a root means parsing every CA certificate and key in it; policies hand the same parsed
// JSON object to every verification, so the result is kept for as long as that object lives.
const materials = new WeakMap<object, TrustMaterial>();

/** Reads a parsed trusted_root.json; throws TrustedRootError naming what is wrong. */
export function trustMaterialOf(trustedRoot: unknown): TrustMaterial {
  if (typeof trustedRoot !== 'object' || trustedRoot === null || Array.isArray(trustedRoot)) {
    throw new TrustedRootError('the trusted root is not a JSON object');
  }
  const cached = materials.get(trustedRoot);
  if (cached !== undefined) return cached;
  const mediaType = (trustedRoot as { mediaType?: unknown }).mediaType;
  if (typeof mediaType !== 'string' || !mediaType.startsWith(TRUSTED_ROOT_MEDIA_TYPE_PREFIX)) {
    throw new TrustedRootError(`the trusted root's mediaType is ${JSON.stringify(mediaType)}, not ${TRUSTED_ROOT_MEDIA_TYPE_PREFIX}+json;version=…`);
  }
  let material: TrustMaterial;
  try {
    material = toTrustMaterial(TrustedRoot.fromJSON(trustedRoot));
  } catch (error) {
    throw new TrustedRootError(`the trusted root cannot be read: ${(error as Error).message}`);
  }
  materials.set(trustedRoot, material);
  return material;
}
