// What pull-time enforcement leaves readable without a signature: artifacts a container runtime
// cannot run (cosign signatures, attestations, SBOMs, sigstore bundles), so clients can fetch
// them to verify the image they are about. Judged by content only, never by a tag name or a
// `subject` field: whoever may push chooses those, and an unsigned image pushed as
// `sha256-<hex>.sig`, or carrying a subject, must not slip past the policy.
import { MediaType } from '../registry/media-types.js';

/** Layers a runtime unpacks into a root filesystem (OCI and Docker, compressed or not, foreign). */
const FILESYSTEM_LAYER = /^application\/vnd\.(?:oci\.image\.layer\.|docker\.image\.rootfs\.)/;
/** Configs that make a manifest an image a runtime starts. */
const IMAGE_CONFIGS = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

interface ParsedManifest {
  mediaType?: unknown;
  manifests?: unknown;
  config?: { mediaType?: unknown };
  layers?: { mediaType?: unknown }[];
}

/**
 * Whether a manifest is an artifact no runtime can run: an image manifest without a single
 * filesystem layer, and not an empty image (an image config with no layers). An index is never
 * one: it names images to run.
 */
export function isSignatureArtifact(payload: Buffer | undefined): boolean {
  if (payload === undefined) return false;
  let parsed: ParsedManifest;
  try {
    parsed = JSON.parse(payload.toString('utf8')) as ParsedManifest;
  } catch {
    return false;
  }
  if (typeof parsed !== 'object' || parsed === null) return false;
  if (parsed.manifests !== undefined || parsed.mediaType === MediaType.OciIndex || parsed.mediaType === MediaType.DockerManifestList) return false;
  const layers = Array.isArray(parsed.layers) ? parsed.layers : [];
  if (layers.some((layer) => typeof layer !== 'object' || layer === null || typeof layer.mediaType !== 'string' || FILESYSTEM_LAYER.test(layer.mediaType))) return false;
  const config = typeof parsed.config?.mediaType === 'string' ? parsed.config.mediaType : '';
  return layers.length > 0 || !IMAGE_CONFIGS.has(config);
}
