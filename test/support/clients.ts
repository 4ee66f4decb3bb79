// Helpers shared by the end-to-end tests: skopeo calls against a plain-HTTP registry on
// 127.0.0.1, and reading back an OCI layout or a registry manifest to compare digests.
import type { TestRegistry } from './registry-client.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { REF_NAME_ANNOTATION, sha256Digest, type Descriptor, type ImageConfig } from './oci-layout.js';
import { run, type RunOptions, type RunResult } from './run.js';

export const DOCKER_MANIFEST_V2 = 'application/vnd.docker.distribution.manifest.v2+json';

/** Minimal shape of an image manifest (OCI or Docker schema 2) as read back from somewhere. */
export interface ManifestLike {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface FetchedManifest {
  /** The bytes exactly as received. */
  raw: string;
  /** sha256 of those bytes. */
  digest: string;
  manifest: ManifestLike;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDescriptor(value: unknown): value is Descriptor {
  return isRecord(value) && typeof value.digest === 'string' && typeof value.size === 'number';
}

export function parseManifest(raw: string): ManifestLike {
  const parsed: unknown = JSON.parse(raw);
  if (
    !isRecord(parsed) ||
    typeof parsed.schemaVersion !== 'number' ||
    !isDescriptor(parsed.config) ||
    !Array.isArray(parsed.layers) ||
    !parsed.layers.every(isDescriptor)
  ) {
    throw new Error(`not an image manifest: ${raw.slice(0, 500)}`);
  }
  return {
    schemaVersion: parsed.schemaVersion,
    mediaType: typeof parsed.mediaType === 'string' ? parsed.mediaType : undefined,
    config: parsed.config,
    layers: parsed.layers,
  };
}

export function parseConfig(raw: string): ImageConfig {
  const parsed: unknown = JSON.parse(raw);
  if (!isRecord(parsed) || !isRecord(parsed.rootfs) || !Array.isArray(parsed.rootfs.diff_ids)) {
    throw new Error(`not an image config: ${raw.slice(0, 500)}`);
  }
  return parsed as unknown as ImageConfig;
}

/** The digests that identify an image and must survive a push/pull round trip unchanged. */
export interface ImageDigests {
  manifestDigest: string;
  configDigest: string;
  layerDigests: string[];
}

export function digestsOf(fetched: FetchedManifest): ImageDigests {
  return {
    manifestDigest: fetched.digest,
    configDigest: fetched.manifest.config.digest,
    layerDigests: fetched.manifest.layers.map((l) => l.digest),
  };
}

/** Reads the manifest an OCI layout's index.json names with `tag` (or its only manifest). */
export async function readOciLayoutManifest(dir: string, tag?: string): Promise<FetchedManifest> {
  const index: unknown = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  if (!isRecord(index) || !Array.isArray(index.manifests)) throw new Error(`${dir}/index.json has no manifests`);
  const entries = index.manifests.filter(isDescriptor);
  const entry =
    tag === undefined
      ? entries.length === 1
        ? entries[0]
        : undefined
      : entries.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
  if (!entry) throw new Error(`${dir}/index.json has no manifest for ${tag ?? '(the only image)'}: ${JSON.stringify(index)}`);
  const raw = await readFile(join(dir, 'blobs', ...entry.digest.split(':')), 'utf8');
  const digest = sha256Digest(raw);
  if (digest !== entry.digest) throw new Error(`${dir}: blob ${entry.digest} has digest ${digest}`);
  return { raw, digest, manifest: parseManifest(raw) };
}

export interface SkopeoOptions extends RunOptions {
  /** Global --debug: skopeo then logs every HTTP request it makes (on stderr). */
  debug?: boolean;
}

/** Runs skopeo; options.env lets a test isolate HOME etc. */
export function skopeo(args: readonly string[], options: SkopeoOptions = {}): Promise<RunResult> {
  return run('skopeo', options.debug ? ['--debug', ...args] : args, options);
}

/**
 * `skopeo copy` between two transports; TLS verification is off for both sides (harmless for
 * non-registry transports) since the registry under test speaks plain HTTP on 127.0.0.1.
 */
export function skopeoCopy(
  source: string,
  destination: string,
  options: SkopeoOptions & { flags?: readonly string[] } = {},
): Promise<RunResult> {
  const flags = options.flags ?? [];
  return skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', ...flags, source, destination], options);
}

/** `skopeo inspect --raw docker://REF`: the manifest bytes as the registry serves them. */
export async function inspectRaw(ref: string, options?: RunOptions): Promise<FetchedManifest> {
  const { stdout: raw } = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], options);
  return { raw, digest: sha256Digest(raw), manifest: parseManifest(raw) };
}

/** `skopeo inspect --raw --config docker://REF`: the image config as the registry serves it. */
export async function inspectConfig(ref: string, options?: RunOptions): Promise<ImageConfig> {
  const { stdout } = await skopeo(['inspect', '--raw', '--config', '--tls-verify=false', `docker://${ref}`], options);
  return parseConfig(stdout);
}

export async function listTags(repositoryRef: string, options?: RunOptions): Promise<string[]> {
  const { stdout } = await skopeo(['list-tags', '--tls-verify=false', `docker://${repositoryRef}`], options);
  const parsed: unknown = JSON.parse(stdout);
  if (!isRecord(parsed) || !Array.isArray(parsed.Tags)) throw new Error(`skopeo list-tags gave no Tags: ${stdout}`);
  return parsed.Tags.filter((t): t is string => typeof t === 'string').sort();
}

function stringArray(value: unknown, what: string): string[] {
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw new Error(`${what} is not an array of strings: ${JSON.stringify(value)}`);
  }
  return value;
}

/** What `podman inspect IMAGE` and `docker inspect IMAGE` agree on. */
export interface LocalImage {
  /** Config digest, always with its `sha256:` prefix (podman prints bare hex). */
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** The uncompressed layer digests (the config's rootfs.diff_ids). */
  layers: string[];
}

/** Parses the output of `podman inspect` / `docker inspect` for exactly one image. */
export function parseLocalImage(stdout: string, what: string): LocalImage {
  const parsed: unknown = JSON.parse(stdout);
  if (!Array.isArray(parsed) || parsed.length !== 1 || !isRecord(parsed[0])) {
    throw new Error(`${what} did not print exactly one image: ${stdout}`);
  }
  const image = parsed[0];
  const rootfs = isRecord(image.RootFS) ? image.RootFS : {};
  if (typeof image.Id !== 'string') throw new Error(`${what} printed no Id: ${stdout}`);
  return {
    id: image.Id.includes(':') ? image.Id : `sha256:${image.Id}`,
    repoTags: stringArray(image.RepoTags ?? [], `${what} RepoTags`),
    repoDigests: stringArray(image.RepoDigests ?? [], `${what} RepoDigests`),
    layers: stringArray(rootfs.Layers, `${what} RootFS.Layers`),
  };
}

/**
 * Downloads every layer of `manifest` from `repository` over the registry's HTTP API, checks
 * each blob's digest and size, and returns the sha256 of each decompressed layer: for clients
 * that recompress layers (podman, docker), these must still equal the original diff_ids.
 */
export async function layerDiffIds(registry: TestRegistry, repository: string, manifest: ManifestLike): Promise<string[]> {
  const diffIds: string[] = [];
  for (const layer of manifest.layers) {
    const response = await registry.fetch(`/v2/${repository}/blobs/${layer.digest}`);
    if (response.status !== 200) throw new Error(`GET blob ${layer.digest} from ${repository}: HTTP ${response.status}`);
    const body = Buffer.from(await response.arrayBuffer());
    if (sha256Digest(body) !== layer.digest || body.length !== layer.size) {
      throw new Error(`blob ${layer.digest} (${layer.size} bytes) came back as ${sha256Digest(body)} (${body.length} bytes)`);
    }
    diffIds.push(sha256Digest(gunzipSync(body)));
  }
  return diffIds;
}
