// The OCI distribution API calls the benchmarks are made of.
//
// Blob uploads always start with POST /v2/<name>/blobs/uploads/ and end with PUT <location>?digest=.
// The "monolithic" push sends the whole blob in that PUT (what containerd does; the OCI spec's
// "POST then PUT" monolithic upload). The "chunked" push sends PATCHes with Content-Range first
// and an empty PUT (the OCI spec's chunked upload).
import { createHash, randomBytes } from 'node:crypto';
import { describe, type HttpClient, type HttpResponse, type RequestBody } from './http-client.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MANIFEST_ACCEPT = [
  OCI_MANIFEST,
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');
const OCTET_STREAM = 'application/octet-stream';
const SMALL_LAYER_BYTES = 4096;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** A pushed small image: its manifest's exact bytes and digest, and its one layer. */
export interface SmallImage {
  repository: string;
  digest: string;
  manifest: Buffer;
  layer: Descriptor;
}

export const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

function expectStatus(response: HttpResponse, expected: number, what: string): HttpResponse {
  if (response.status !== expected) throw new Error(`${what}: expected ${expected}, got ${describe(response)}`);
  return response;
}

function locationOf(response: HttpResponse, what: string): string {
  const location = response.headers.location;
  if (!location) throw new Error(`${what}: ${response.status} without a Location header`);
  return new URL(location, response.url).href;
}

const withDigest = (location: string, digest: string): string =>
  `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;

export class RegistryOps {
  constructor(readonly http: HttpClient) {}

  /** POST /v2/<name>/blobs/uploads/ → the upload's location. */
  async startUpload(repository: string): Promise<string> {
    const what = `start upload to ${repository}`;
    const response = await this.http.request({ method: 'POST', url: `/v2/${repository}/blobs/uploads/` });
    return locationOf(expectStatus(response, 202, what), what);
  }

  /** PATCH bytes [start, start+length) → the upload's next location. */
  async appendChunk(location: string, start: number, length: number, body: RequestBody): Promise<string> {
    const what = `PATCH bytes ${start}-${start + length - 1}`;
    const response = await this.http.request({
      method: 'PATCH',
      url: location,
      headers: {
        'content-type': OCTET_STREAM,
        'content-length': length,
        'content-range': `${start}-${start + length - 1}`,
      },
      body,
    });
    return locationOf(expectStatus(response, 202, what), what);
  }

  /** PUT <location>?digest=, with the remaining bytes (or none). */
  async completeUpload(location: string, digest: string, length = 0, body?: RequestBody): Promise<void> {
    const response = await this.http.request({
      method: 'PUT',
      url: withDigest(location, digest),
      headers: { 'content-type': OCTET_STREAM, 'content-length': length },
      ...(body ? { body } : {}),
    });
    expectStatus(response, 201, `complete upload of ${digest}`);
  }

  /** POST, then one PUT ?digest= carrying the whole blob. */
  async pushMonolithic(repository: string, digest: string, size: number, body: RequestBody): Promise<void> {
    const location = await this.startUpload(repository);
    await this.completeUpload(location, digest, size, body);
  }

  /** POST, one PATCH per chunk of `chunkSize` bytes, then an empty PUT ?digest=. */
  async pushChunked(
    repository: string,
    digest: string,
    size: number,
    chunkSize: number,
    range: (start: number, end: number) => Iterable<Buffer>,
  ): Promise<void> {
    let location = await this.startUpload(repository);
    for (let start = 0; start < size; start += chunkSize) {
      const end = Math.min(size, start + chunkSize);
      location = await this.appendChunk(location, start, end - start, () => range(start, end));
    }
    await this.completeUpload(location, digest);
  }

  async pushBlob(repository: string, bytes: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = sha256(bytes);
    await this.pushMonolithic(repository, digest, bytes.length, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** PUT /v2/<name>/manifests/<reference> → the manifest's digest. `manifest` as an object or its exact bytes. */
  async putManifest(repository: string, reference: string, manifest: object | Buffer): Promise<string> {
    const body = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
    const response = await this.http.request({
      method: 'PUT',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { 'content-type': OCI_MANIFEST },
      body,
    });
    expectStatus(response, 201, `put manifest ${repository}:${reference}`);
    return sha256(body);
  }

  /** A small image: a config blob and a random layer pushed monolithically, then its manifest by tag. */
  async pushSmallImage(repository: string, tag: string, nonce: string): Promise<string> {
    return (await this.pushSmallImageDetailed(repository, tag, nonce)).digest;
  }

  /** pushSmallImage, returning what a later re-tag, pull or delete of the image needs (5 requests). */
  async pushSmallImageDetailed(repository: string, tag: string, nonce: string): Promise<SmallImage> {
    const configBytes = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce }),
    );
    const config = await this.pushBlob(repository, configBytes, 'application/vnd.oci.image.config.v1+json');
    const layer = await this.pushBlob(repository, randomBytes(SMALL_LAYER_BYTES), 'application/vnd.oci.image.layer.v1.tar+gzip');
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] }));
    const digest = await this.putManifest(repository, tag, manifest);
    return { repository, digest, manifest, layer };
  }

  /** PUT an image's manifest (the same bytes) under one more tag (1 request). */
  async retag(image: SmallImage, tag: string): Promise<void> {
    await this.putManifest(image.repository, tag, image.manifest);
  }

  /** GET the manifest by tag (its digest checked), then its layer (its size checked): 2 requests. */
  async pullSmallImage(image: SmallImage, tag: string): Promise<void> {
    await this.getManifest(image.repository, tag, image.digest);
    const bytes = await this.pullBlob(image.repository, image.layer.digest);
    if (bytes !== image.layer.size) throw new Error(`pull ${image.layer.digest}: ${bytes} bytes, expected ${image.layer.size}`);
  }

  /** DELETE /v2/<name>/manifests/<digest> → 202; the registry drops the tags that pointed at it. */
  async deleteManifest(repository: string, digest: string): Promise<void> {
    const response = await this.http.request({ method: 'DELETE', url: `/v2/${repository}/manifests/${digest}` });
    expectStatus(response, 202, `delete manifest ${repository}@${digest}`);
  }

  /** GET a blob, discarding its bytes → how many there were. */
  async pullBlob(repository: string, digest: string): Promise<number> {
    const response = await this.http.request({ method: 'GET', url: `/v2/${repository}/blobs/${digest}`, discardBody: true });
    return expectStatus(response, 200, `pull ${digest}`).bytesRead;
  }

  /** GET a manifest; checks the status and that a Docker-Content-Digest, if sent, is `digest`. */
  async getManifest(repository: string, reference: string, digest?: string): Promise<void> {
    const response = await this.http.request({
      method: 'GET',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: MANIFEST_ACCEPT },
    });
    expectStatus(response, 200, `get manifest ${repository}:${reference}`);
    const served = response.headers['docker-content-digest'];
    if (digest && served !== undefined && served !== digest) throw new Error(`manifest ${reference}: Docker-Content-Digest ${served}, expected ${digest}`);
  }
}
