export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

export type ManifestMediaType =
  | typeof MediaType.OciManifest
  | typeof MediaType.OciIndex
  | typeof MediaType.DockerManifest
  | typeof MediaType.DockerManifestList;

export const MANIFEST_MEDIA_TYPES: readonly ManifestMediaType[] = [
  MediaType.OciManifest,
  MediaType.OciIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
];

export function isManifestMediaType(value: string | undefined): value is ManifestMediaType {
  return value !== undefined && (MANIFEST_MEDIA_TYPES as readonly string[]).includes(value);
}

/** Layers that live outside the registry (Windows base layers); their bytes are never pushed. */
const NON_DISTRIBUTABLE_LAYERS = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export function isNonDistributable(mediaType: string): boolean {
  return NON_DISTRIBUTABLE_LAYERS.has(mediaType);
}
