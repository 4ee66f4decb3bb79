// Validates a pushed manifest against its declared media type and extracts what the registry
// needs: what it depends on, its subject (for the referrers API), artifact type and annotations.
import { errors } from './errors.js';
import { isManifestMediaType, isMediaType, isNonDistributable, MediaType, type ManifestMediaType } from './media-types.js';
import { parseDigest } from './reference.js';
import type { ManifestDependency } from '../metadata/store.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface ParsedManifest {
  mediaType: ManifestMediaType;
  dependencies: ManifestDependency[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

function stringMap(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw errors.manifestInvalid(`${where} must be a map of strings`);
  }
  return value as Record<string, string>;
}

function optionalString(value: unknown, where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw errors.manifestInvalid(`${where} must be a string`);
  return value;
}

function optionalMediaType(value: unknown, where: string): string | undefined {
  const text = optionalString(value, where);
  if (text !== undefined && !isMediaType(text)) throw errors.manifestInvalid(`${where} is not a valid media type`);
  return text;
}

function descriptor(value: unknown, where: string): Descriptor {
  if (!isObject(value)) throw errors.manifestInvalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size, urls } = value;
  if (typeof mediaType !== 'string' || mediaType.length === 0) throw errors.manifestInvalid(`${where}.mediaType is required`);
  if (!isMediaType(mediaType)) throw errors.manifestInvalid(`${where}.mediaType is not a valid media type`);
  if (typeof digest !== 'string') throw errors.manifestInvalid(`${where}.digest is required`);
  try {
    parseDigest(digest);
  } catch {
    throw errors.manifestInvalid(`${where}.digest is not a valid digest`, { digest });
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw errors.manifestInvalid(`${where}.size must be a non-negative integer`);
  }
  if (urls !== undefined && (!Array.isArray(urls) || urls.some((u) => typeof u !== 'string'))) {
    throw errors.manifestInvalid(`${where}.urls must be a list of strings`);
  }
  const result: Descriptor = { mediaType, digest, size };
  const artifactType = optionalMediaType(value.artifactType, `${where}.artifactType`);
  if (artifactType !== undefined) result.artifactType = artifactType;
  const annotations = stringMap(value.annotations, `${where}.annotations`);
  if (annotations !== undefined) result.annotations = annotations;
  if (urls !== undefined) result.urls = urls as string[];
  return result;
}

function descriptorList(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw errors.manifestInvalid(`${where} must be a list`);
  return value.map((item, i) => descriptor(item, `${where}[${i}]`));
}

/** The media type of a push: Content-Type and the body's own mediaType must agree (CVE-2021-41190). */
function effectiveMediaType(contentType: string | undefined, declared: unknown): ManifestMediaType {
  if (declared !== undefined && typeof declared !== 'string') throw errors.manifestInvalid('mediaType must be a string');
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  if (isManifestMediaType(header)) {
    if (declared !== undefined && declared !== header) {
      throw errors.manifestInvalid('manifest mediaType does not match the Content-Type header', {
        contentType: header,
        mediaType: declared,
      });
    }
    return header;
  }
  if (isManifestMediaType(declared)) return declared;
  throw errors.manifestInvalid('unsupported manifest media type', { contentType: header ?? null, mediaType: declared ?? null });
}

export function parseManifest(payload: Buffer, contentType: string | undefined): ParsedManifest {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    throw errors.manifestInvalid('manifest is not valid JSON');
  }
  if (!isObject(body)) throw errors.manifestInvalid('manifest must be a JSON object');
  if (body.schemaVersion !== 2) throw errors.manifestInvalid('schemaVersion must be 2');
  const mediaType = effectiveMediaType(contentType, body.mediaType);
  if ((mediaType === MediaType.DockerManifest || mediaType === MediaType.DockerManifestList) && body.mediaType === undefined) {
    throw errors.manifestInvalid('Docker manifests must declare their mediaType');
  }

  const annotations = stringMap(body.annotations, 'annotations');
  const subject = body.subject === undefined ? undefined : descriptor(body.subject, 'subject');
  const declaredArtifactType = optionalMediaType(body.artifactType, 'artifactType');
  const result: ParsedManifest = { mediaType, dependencies: [] };
  if (annotations) result.annotations = annotations;
  if (subject) result.subject = subject;

  if (mediaType === MediaType.OciManifest || mediaType === MediaType.DockerManifest) {
    // An image manifest that also looks like an index is ambiguous (CVE-2021-41190).
    if (body.manifests !== undefined) throw errors.manifestInvalid('an image manifest must not have manifests');
    const config = descriptor(body.config, 'config');
    const layers = descriptorList(body.layers, 'layers');
    result.dependencies = [config, ...layers.filter((layer) => !isNonDistributable(layer.mediaType))].map((d) => ({
      digest: d.digest,
      size: d.size,
      kind: 'blob',
    }));
    // The referrers API reports artifactType, falling back to the config's media type.
    result.artifactType = declaredArtifactType ?? config.mediaType;
  } else {
    if (body.config !== undefined || body.layers !== undefined) {
      throw errors.manifestInvalid('an index must not have config or layers');
    }
    const children = descriptorList(body.manifests, 'manifests');
    result.dependencies = children.map((d) => ({ digest: d.digest, size: d.size, kind: 'manifest' }));
    if (declaredArtifactType !== undefined) result.artifactType = declaredArtifactType;
  }
  return result;
}
