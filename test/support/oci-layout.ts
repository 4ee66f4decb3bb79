// Writes an OCI image layout directory (image-spec "oci-layout") by hand, so end-to-end tests
// need no network and no image builder. Every call makes fresh random file contents, so no
// client-side blob cache (e.g. /var/lib/containers/cache) can recognise a layer and skip its
// upload; the tar and gzip encodings themselves are deterministic (fixed mtimes, owners, modes,
// gzip header), so the digests depend on the random bytes only.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer as streamToBuffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageConfig {
  architecture: string;
  os: string;
  created: string;
  config: { Env: string[]; Cmd: string[]; WorkingDir: string };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history: { created: string; created_by: string }[];
}

export interface OciLayoutOptions {
  /** Directory to create the layout in (must not exist or be empty); default: a new temp dir. */
  dir?: string;
  /** Tag written as org.opencontainers.image.ref.name; default: a random one. */
  tag?: string;
  /** Number of layers; default 3. */
  layers?: number;
  /** Files per layer; default 3. */
  filesPerLayer?: number;
  /** Random bytes per file; default 64 KiB (so about 200 KB per layer, incompressible). */
  fileSize?: number;
}

export interface OciLayout {
  dir: string;
  tag: string;
  /** Digest of the image manifest (as index.json references it). */
  manifestDigest: string;
  /** Digests of the compressed layer blobs, in manifest order. */
  layerDigests: string[];
  /** sha256 of the uncompressed layer tars (the config's rootfs.diff_ids), in order. */
  diffIds: string[];
  configDigest: string;
  manifest: ImageManifest;
  config: ImageConfig;
}

/** A fixed timestamp, so tar headers and the config do not depend on the clock. */
const EPOCH = new Date('2024-01-01T00:00:00Z');

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** GOARCH-style name of this machine's architecture, so clients do not warn or refuse. */
export function ociArchitecture(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    default:
      return process.arch; // arm64, arm, ppc64, s390x, riscv64 are spelled alike
  }
}

export function randomTag(prefix = 't'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** A tar with one directory and `files` regular files of random bytes, byte-for-byte deterministic given the contents. */
export async function buildLayerTar(dirName: string, files: Buffer[]): Promise<Buffer> {
  const tar = pack();
  const common = { uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: EPOCH };
  const collected = streamToBuffer(tar); // consume while entries are added, or the pack stalls
  const add = (name: string, body: Buffer | undefined, type: 'file' | 'directory') =>
    new Promise<void>((resolve, reject) => {
      const mode = type === 'directory' ? 0o755 : 0o644;
      const header = { ...common, name, type, mode, size: body?.length ?? 0 };
      tar.entry(header, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  await add(`${dirName}/`, undefined, 'directory');
  for (const [i, body] of files.entries()) await add(`${dirName}/file-${i}.bin`, body, 'file');
  tar.finalize();
  return collected;
}

async function writeBlob(dir: string, data: Buffer | string): Promise<Descriptor & { data: Buffer }> {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const digest = sha256Digest(buf);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), buf);
  return { mediaType: '', digest, size: buf.length, data: buf };
}

/** Creates an OCI image layout with fresh random layers; see OciLayout for what it returns. */
export async function createOciLayout(options: OciLayoutOptions = {}): Promise<OciLayout> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'portcullis-oci-')));
  const tag = options.tag ?? randomTag();
  const layerCount = options.layers ?? 3;
  const filesPerLayer = options.filesPerLayer ?? 3;
  const fileSize = options.fileSize ?? 64 * 1024;
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });

  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < layerCount; i++) {
    const files = Array.from({ length: filesPerLayer }, () => randomBytes(fileSize));
    const tar = await buildLayerTar(`layer-${i}`, files);
    diffIds.push(sha256Digest(tar));
    // zlib's gzip header has mtime 0 and a fixed OS byte, so this is deterministic too.
    const blob = await writeBlob(dir, gzipSync(tar, { level: 6 }));
    layers.push({ mediaType: OCI_LAYER_GZIP, digest: blob.digest, size: blob.size });
  }

  const created = EPOCH.toISOString();
  const config: ImageConfig = {
    architecture: ociArchitecture(),
    os: 'linux',
    created,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/true'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created, created_by: `portcullis e2e layer ${i}` })),
  };
  const configBlob = await writeBlob(dir, JSON.stringify(config));

  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configBlob.digest, size: configBlob.size },
    layers,
  };
  const manifestBlob = await writeBlob(dir, JSON.stringify(manifest));

  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      {
        mediaType: OCI_MANIFEST,
        digest: manifestBlob.digest,
        size: manifestBlob.size,
        annotations: { [REF_NAME_ANNOTATION]: tag },
      },
    ],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  return {
    dir,
    tag,
    manifestDigest: manifestBlob.digest,
    layerDigests: layers.map((l) => l.digest),
    diffIds,
    configDigest: configBlob.digest,
    manifest,
    config,
  };
}
