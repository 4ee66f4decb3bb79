// Small helpers for talking to a registry over HTTP in tests.
import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

export const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
export const randomName = (prefix = 'repo'): string => `${prefix}-${randomBytes(4).toString('hex')}`;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export class TestRegistry {
  constructor(readonly url: string) {}

  fetch(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(new URL(path, this.url), init);
  }

  async pushBlob(repository: string, bytes: Uint8Array, mediaType = 'application/octet-stream'): Promise<Descriptor> {
    const digest = sha256(bytes);
    const response = await this.fetch(`/v2/${repository}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes });
    assert.equal(response.status, 201, await response.text());
    return { mediaType, digest, size: bytes.length };
  }

  async pushManifest(repository: string, reference: string, manifest: object, mediaType: string): Promise<Descriptor> {
    const body = Buffer.from(JSON.stringify(manifest));
    const response = await this.fetch(`/v2/${repository}/manifests/${reference}`, {
      method: 'PUT',
      headers: { 'Content-Type': mediaType },
      body,
    });
    assert.equal(response.status, 201, await response.text());
    const digest = sha256(body);
    assert.equal(response.headers.get('Docker-Content-Digest'), digest);
    return { mediaType, digest, size: body.length };
  }

  /** Pushes a config and `layers` random layers, then an image manifest; returns it with its parts. */
  async pushImage(repository: string, tag: string, options: { layers?: number; mediaType?: string; extra?: object } = {}) {
    const docker = options.mediaType === DOCKER_MANIFEST;
    const config = await this.pushBlob(
      repository,
      Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomName() })),
      docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
    );
    const layers: Descriptor[] = [];
    for (let i = 0; i < (options.layers ?? 2); i++) {
      layers.push(
        await this.pushBlob(
          repository,
          randomBytes(256 + i),
          docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip',
        ),
      );
    }
    const mediaType = options.mediaType ?? OCI_MANIFEST;
    const manifest = { schemaVersion: 2, mediaType, config, layers, ...options.extra };
    const descriptor = await this.pushManifest(repository, tag, manifest, mediaType);
    return { manifest, descriptor, config, layers };
  }
}

export async function expectError(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status}: ${text}`);
  const body = JSON.parse(text) as { errors: { code: string }[] };
  assert.equal(body.errors[0]?.code, code, text);
}
