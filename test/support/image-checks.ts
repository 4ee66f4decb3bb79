// Assertions shared by the end-to-end tests of clients that recompress layers on push (podman,
// docker): the manifest and layer digests change, but the registry must serve exactly what the
// client pushed, with the original config and layers that decompress to the original diff_ids.
import assert from 'node:assert/strict';
import { inspectConfig, inspectRaw, layerDiffIds, type FetchedManifest, type LocalImage } from './clients.js';
import type { E2E } from './e2e.js';
import type { OciLayout } from './oci-layout.js';

export interface PushedImage {
  repository: string;
  tag: string;
  /** The manifest digest the client reported for its push. */
  manifestDigest: string;
  /** The manifest media type the client is known to push. */
  mediaType: string;
}

export async function assertRegistryServes(e2e: E2E, pushed: PushedImage, original: OciLayout): Promise<FetchedManifest> {
  const ref = e2e.ref(pushed.repository, pushed.tag);
  const served = await inspectRaw(ref);
  assert.equal(served.digest, pushed.manifestDigest, `the registry serves a different manifest for ${ref} than was pushed`);
  const byDigest = await inspectRaw(e2e.ref(pushed.repository, pushed.manifestDigest));
  assert.equal(byDigest.raw, served.raw, 'the manifest by digest differs from the manifest by tag');
  assert.equal(served.manifest.mediaType, pushed.mediaType);
  assert.equal(served.manifest.config.digest, original.configDigest, 'the config blob changed');
  assert.equal(served.manifest.layers.length, original.layerDigests.length);
  assert.deepEqual((await inspectConfig(ref)).rootfs.diff_ids, original.diffIds);
  assert.deepEqual(
    await layerDiffIds(e2e.client(), pushed.repository, served.manifest),
    original.diffIds,
    'the layer blobs do not decompress to the original layers',
  );
  return served;
}

/** The image a client has locally is the original one (same config, same uncompressed layers). */
export function assertLocalImage(local: LocalImage, original: OciLayout, repoDigest?: string): void {
  assert.equal(local.id, original.configDigest, 'the local image id is not the original config digest');
  assert.deepEqual(local.layers, original.diffIds, 'the local image has other layers');
  if (repoDigest !== undefined) {
    assert.ok(local.repoDigests.includes(repoDigest), `RepoDigests ${JSON.stringify(local.repoDigests)} lack ${repoDigest}`);
  }
}
