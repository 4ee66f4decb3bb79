// Small helpers for talking to a registry over HTTP in tests, with Docker token auth: each
// request carries a bearer token for exactly the scope its route needs, fetched with Basic
// credentials (or anonymously) from the registry's token endpoint and cached per scope.
import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { patterns } from '../../src/http/routes/v2/index.js';
import { isValidName } from '../../src/registry/reference.js';
import type { Descriptor } from '../../src/registry/manifest-parser.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

export const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
export const randomName = (prefix = 'repo'): string => `${prefix}-${randomBytes(4).toString('hex')}`;

export type { Descriptor };

export interface Credentials {
  username: string;
  password: string;
}

/** The scope a distribution API request needs, from its path and method. */
export function scopeFor(path: string, method = 'GET'): string | undefined {
  const pathname = new URL(path, 'http://x').pathname;
  if (patterns.catalog.test(pathname)) return 'registry:catalog:*';
  const name = [patterns.tags, patterns.referrers, patterns.manifest, patterns.uploads, patterns.upload, patterns.blob]
    .map((pattern) => pattern.exec(pathname)?.groups?.name)
    .find((found) => found !== undefined);
  // An invalid name gets no scope: the registry refuses the name before it looks at the token.
  if (name === undefined || !isValidName(decodeURIComponent(name))) return undefined;
  const action = method === 'DELETE' && !patterns.upload.test(pathname) ? 'delete' : ['GET', 'HEAD'].includes(method) && !patterns.upload.test(pathname) ? 'pull' : 'pull,push';
  return `repository:${decodeURIComponent(name)}:${action}`;
}

export class TestRegistry {
  private readonly tokens = new Map<string, string>();

  /** `credentials` undefined: anonymous; `false`: send no token at all. */
  constructor(
    readonly url: string,
    readonly credentials?: Credentials | false,
  ) {}

  /** A token for these scopes, from the token endpoint; throws when the login itself fails. */
  async token(scopes: string[]): Promise<string> {
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached) return cached;
    const query = new URLSearchParams({ service: 'portcullis' });
    for (const scope of scopes) query.append('scope', scope);
    const headers: Record<string, string> = {};
    if (this.credentials) {
      headers.Authorization = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
    }
    const response = await fetch(new URL(`/auth/token?${query.toString()}`, this.url), { headers });
    assert.equal(response.status, 200, `token request failed: ${response.status} ${await response.clone().text()}`);
    const { token } = (await response.json()) as { token: string };
    this.tokens.set(key, token);
    return token;
  }

  /** A request with a token for the scope its route needs, plus `extraScopes` (e.g. pull on a mount's source). */
  async fetch(path: string, init: RequestInit = {}, extraScopes: string[] = []): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.credentials !== false && !headers.has('Authorization') && new URL(path, this.url).pathname.startsWith('/v2')) {
      const scope = scopeFor(path, init.method ?? 'GET');
      headers.set('Authorization', `Bearer ${await this.token([...(scope ? [scope] : []), ...extraScopes])}`);
    }
    return fetch(new URL(path, this.url), { ...init, headers });
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

/** A client logged in as the test registry's administrator. */
export function adminClient(server: { url: string; admin: Credentials }): TestRegistry {
  return new TestRegistry(server.url, server.admin);
}

export async function expectError(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status}: ${text}`);
  const body = JSON.parse(text) as { errors: { code: string }[] };
  assert.equal(body.errors[0]?.code, code, text);
}
