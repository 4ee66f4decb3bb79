// Shared HTTP and OCI helpers for the conformance runner.
//
// RegistryClient speaks plain HTTP to a registry (global fetch), resolves the
// relative-or-absolute Locations a registry hands out, and answers 401
// challenges (Basic, and Docker token auth for Bearer). The rest of the file
// builds random OCI/Docker content and pushes it, for workflow setup.
import { createHash, randomBytes } from 'node:crypto';
import { expectHeader, expectStatus, isRecord } from './check.js';

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/** A request body sent with chunked transfer encoding (no Content-Length). */
export interface StreamedBody {
  chunks: Uint8Array[];
}

export type QueryValue = string | number | undefined;

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: Uint8Array | StreamedBody;
  /** Added to (or replacing) the query parameters already in the target URL. */
  query?: Record<string, QueryValue>;
}

export interface ClientOptions {
  /** Registry base URL, e.g. http://127.0.0.1:5000 */
  url: string;
  /** Extra headers sent with every request (e.g. a preset Authorization). */
  headers?: Record<string, string>;
  username?: string;
  password?: string;
  /** Per-request timeout; default 30 s. */
  timeoutMs?: number;
}

/** A fully read HTTP response. */
export class RegistryResponse {
  constructor(
    readonly method: string,
    readonly url: URL,
    readonly status: number,
    readonly headers: Headers,
    readonly body: Buffer,
  ) {}

  header(name: string): string | undefined {
    return this.headers.get(name) ?? undefined;
  }

  text(): string {
    return this.body.toString('utf8');
  }

  /** "PATCH /v2/x/blobs/uploads/123?_state=abc... -> 202" for failure messages (long query values cut). */
  describe(): string {
    const query = [...this.url.searchParams]
      .map(([key, value]) => `${key}=${value.length > 24 ? `${value.slice(0, 24)}...` : value}`)
      .join('&');
    return `${this.method} ${this.url.pathname}${query ? `?${query}` : ''} -> ${this.status}`;
  }
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`. */
export function parseChallenge(header: string): Challenge {
  const match = /^\s*(\S+)\s*(.*)$/.exec(header);
  const scheme = (match?.[1] ?? '').toLowerCase();
  const params: Record<string, string> = {};
  for (const m of (match?.[2] ?? '').matchAll(/([A-Za-z_][\w-]*)\s*=\s*(?:"([^"]*)"|([^\s,]*))/g)) {
    const key = m[1];
    if (key) params[key.toLowerCase()] = m[2] ?? m[3] ?? '';
  }
  return { scheme, params };
}

/** Extracts the target of `Link: <url>; rel="next"` (RFC 8288), if present. */
export function nextLink(res: RegistryResponse): string | undefined {
  const header = res.header('link');
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (m && /;\s*rel\s*=\s*"?next"?/i.test(m[2] ?? '')) return m[1];
  }
  return undefined;
}

export class RegistryClient {
  readonly baseUrl: URL;
  private readonly extraHeaders: Record<string, string>;
  private readonly basicCredentials: string | undefined;
  private readonly timeoutMs: number;
  /** Authorization header earned by answering a challenge, reused afterwards. */
  private authorization: string | undefined;
  /** Every token scope the registry asked for, so one token covers them all. */
  private readonly scopes = new Set<string>();

  constructor(options: ClientOptions) {
    this.baseUrl = new URL(options.url.endsWith('/') ? options.url : `${options.url}/`);
    this.extraHeaders = options.headers ?? {};
    this.basicCredentials =
      options.username !== undefined
        ? Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')
        : undefined;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** Resolves a path (`/v2/...`) or a registry-provided Location (relative or absolute). */
  resolve(target: string, query: Record<string, QueryValue> = {}): URL {
    const url = new URL(target, this.baseUrl);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    return url;
  }

  async request(method: string, target: string | URL, options: RequestOptions = {}): Promise<RegistryResponse> {
    const url = typeof target === 'string' ? this.resolve(target, options.query) : target;
    const first = await this.send(method, url, options);
    if (first.status !== 401) return first;
    const challenge = first.header('www-authenticate');
    if (!challenge || !(await this.answerChallenge(parseChallenge(challenge)))) return first;
    return this.send(method, url, options);
  }

  private async send(method: string, url: URL, options: RequestOptions): Promise<RegistryResponse> {
    const headers: Record<string, string> = { ...this.extraHeaders, ...options.headers };
    if (this.authorization && headers.Authorization === undefined) headers.Authorization = this.authorization;
    const init: RequestInit = { method, headers, signal: AbortSignal.timeout(this.timeoutMs) };
    if (options.body instanceof Uint8Array) {
      init.body = options.body;
    } else if (options.body) {
      init.body = streamOf(options.body.chunks);
      init.duplex = 'half';
    }
    const res = await fetch(url, init);
    const body = Buffer.from(await res.arrayBuffer());
    return new RegistryResponse(method, url, res.status, res.headers, body);
  }

  /** Returns true when a retry has a chance of succeeding. */
  private async answerChallenge(challenge: Challenge): Promise<boolean> {
    if (challenge.scheme === 'basic') {
      if (!this.basicCredentials) return false;
      const authorization = `Basic ${this.basicCredentials}`;
      if (this.authorization === authorization) return false;
      this.authorization = authorization;
      return true;
    }
    if (challenge.scheme === 'bearer' && challenge.params.realm) {
      for (const scope of (challenge.params.scope ?? '').split(' ')) if (scope) this.scopes.add(scope);
      const token = await this.fetchToken(challenge.params.realm, challenge.params.service);
      this.authorization = `Bearer ${token}`;
      return true;
    }
    return false;
  }

  /** Docker token auth: GET <realm>?service=..&scope=.. with Basic credentials (or anonymously). */
  private async fetchToken(realm: string, service: string | undefined): Promise<string> {
    const url = new URL(realm, this.baseUrl);
    if (service) url.searchParams.set('service', service);
    for (const scope of this.scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    if (this.basicCredentials) headers.Authorization = `Basic ${this.basicCredentials}`;
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw new Error(`token request to ${url.origin}${url.pathname} failed with ${res.status}`);
    const json: unknown = await res.json();
    const token = isRecord(json) ? (json.token ?? json.access_token) : undefined;
    if (typeof token !== 'string' || token === '') throw new Error('token response has no "token" or "access_token"');
    return token;
  }
}

async function* streamOf(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) yield chunk;
}

// ---------------------------------------------------------------------------
// OCI content
// ---------------------------------------------------------------------------

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** Sent as Accept on every manifest read, so registries never down-convert. */
export const MANIFEST_ACCEPT = [
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
].join(', ');

export interface Platform {
  architecture: string;
  os: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: Platform;
}

/** Any piece of content addressed by digest: a blob or a manifest. */
export interface Content {
  mediaType: string;
  bytes: Buffer;
  digest: string;
  size: number;
}

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A syntactically valid digest of random bytes: content that exists nowhere. */
export function unknownDigest(): string {
  return sha256(randomBytes(32));
}

export function randomHex(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

export function content(mediaType: string, bytes: Buffer): Content {
  return { mediaType, bytes, digest: sha256(bytes), size: bytes.length };
}

export function descriptor(c: Content, extra: Omit<Descriptor, 'mediaType' | 'digest' | 'size'> = {}): Descriptor {
  return { mediaType: c.mediaType, digest: c.digest, size: c.size, ...extra };
}

export function randomLayer(mediaType: string = MediaType.ociLayer, size = 3000): Content {
  return content(mediaType, randomBytes(size));
}

/** A small, unique image config (the nonce label makes every config's digest distinct). */
export function randomConfig(mediaType: string = MediaType.ociConfig): Content {
  const config = {
    architecture: 'amd64',
    os: 'linux',
    config: { Labels: { 'org.portcullis.conformance.nonce': randomHex() } },
    rootfs: { type: 'layers', diff_ids: [] },
  };
  return content(mediaType, Buffer.from(JSON.stringify(config)));
}

/** The OCI empty descriptor's content, `{}`. */
export function emptyConfig(): Content {
  return content(MediaType.ociEmpty, Buffer.from('{}'));
}

/**
 * Serialises a manifest. Indented on purpose: a registry that re-encodes the
 * JSON instead of storing the bytes as pushed fails the byte-for-byte checks.
 */
export function encodeManifest(mediaType: string, manifest: Record<string, unknown>): Content {
  return content(mediaType, Buffer.from(`${JSON.stringify(manifest, null, 3)}\n`));
}

export interface ImageManifestOptions {
  mediaType?: typeof MediaType.ociManifest | typeof MediaType.dockerManifest;
  config: Content;
  layers: Content[];
  artifactType?: string;
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export function imageManifest(options: ImageManifestOptions): Content {
  const mediaType = options.mediaType ?? MediaType.ociManifest;
  return encodeManifest(mediaType, {
    schemaVersion: 2,
    mediaType,
    ...(options.artifactType ? { artifactType: options.artifactType } : {}),
    config: descriptor(options.config),
    layers: options.layers.map((layer) => descriptor(layer)),
    ...(options.subject ? { subject: options.subject } : {}),
    ...(options.annotations ? { annotations: options.annotations } : {}),
  });
}

export interface IndexOptions {
  mediaType?: typeof MediaType.ociIndex | typeof MediaType.dockerManifestList;
  manifests: Descriptor[];
  artifactType?: string;
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export function indexManifest(options: IndexOptions): Content {
  const mediaType = options.mediaType ?? MediaType.ociIndex;
  return encodeManifest(mediaType, {
    schemaVersion: 2,
    mediaType,
    ...(options.artifactType ? { artifactType: options.artifactType } : {}),
    manifests: options.manifests,
    ...(options.subject ? { subject: options.subject } : {}),
    ...(options.annotations ? { annotations: options.annotations } : {}),
  });
}

/** An image manifest plus the two blobs it references. */
export interface Image {
  manifest: Content;
  config: Content;
  layer: Content;
}

/** A fresh random image (one config, one layer) of the OCI or Docker flavour. */
export function randomImage(flavour: 'oci' | 'docker' = 'oci', extra: Partial<ImageManifestOptions> = {}): Image {
  const docker = flavour === 'docker';
  const config = randomConfig(docker ? MediaType.dockerConfig : MediaType.ociConfig);
  const layer = randomLayer(docker ? MediaType.dockerLayer : MediaType.ociLayer);
  const manifest = imageManifest({
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config,
    layers: [layer],
    ...extra,
  });
  return { manifest, config, layer };
}

// ---------------------------------------------------------------------------
// Registry operations used by setup steps and checks
// ---------------------------------------------------------------------------

export const paths = {
  manifest: (repo: string, reference: string) => `/v2/${repo}/manifests/${reference}`,
  blob: (repo: string, digest: string) => `/v2/${repo}/blobs/${digest}`,
  uploads: (repo: string) => `/v2/${repo}/blobs/uploads/`,
  tags: (repo: string) => `/v2/${repo}/tags/list`,
  referrers: (repo: string, digest: string) => `/v2/${repo}/referrers/${digest}`,
  catalog: () => '/v2/_catalog',
};

export const OCTET_STREAM = { 'Content-Type': 'application/octet-stream' };

/** POST /blobs/uploads/ (empty body; fetch sends Content-Length: 0) -> 202 with a Location; returns the upload URL. */
export async function startUpload(client: RegistryClient, repo: string): Promise<URL> {
  const res = await client.request('POST', paths.uploads(repo));
  expectStatus(res, 202);
  return client.resolve(expectHeader(res, 'Location'));
}

/** PUT <location>?digest= (optionally with the final bytes) -> the raw response. */
export async function finishUpload(
  client: RegistryClient,
  location: URL,
  digest: string,
  body?: Uint8Array,
): Promise<RegistryResponse> {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  return client.request('PUT', url, body ? { body, headers: OCTET_STREAM } : {});
}

/** Pushes a blob the most widely supported way (POST, then PUT with the whole body). */
export async function pushBlob(client: RegistryClient, repo: string, blob: Content): Promise<void> {
  const location = await startUpload(client, repo);
  expectStatus(await finishUpload(client, location, blob.digest, blob.bytes), 201);
}

export async function putManifest(
  client: RegistryClient,
  repo: string,
  reference: string,
  manifest: Content,
  contentType: string = manifest.mediaType,
): Promise<RegistryResponse> {
  return client.request('PUT', paths.manifest(repo, reference), {
    body: manifest.bytes,
    headers: { 'Content-Type': contentType },
  });
}

/** PUT a manifest and insist on 201 (for setup). Reference defaults to the digest. */
export async function pushManifest(
  client: RegistryClient,
  repo: string,
  manifest: Content,
  reference: string = manifest.digest,
): Promise<void> {
  expectStatus(await putManifest(client, repo, reference, manifest), 201);
}

/** Pushes an image's blobs, then its manifest under each reference (its digest if none given). */
export async function pushImage(client: RegistryClient, repo: string, image: Image, ...references: string[]): Promise<void> {
  for (const blob of [image.config, image.layer]) await pushBlob(client, repo, blob);
  for (const reference of references.length > 0 ? references : [image.manifest.digest]) {
    await pushManifest(client, repo, image.manifest, reference);
  }
}

export async function getManifest(
  client: RegistryClient,
  repo: string,
  reference: string,
  method: 'GET' | 'HEAD' = 'GET',
): Promise<RegistryResponse> {
  return client.request(method, paths.manifest(repo, reference), { headers: { Accept: MANIFEST_ACCEPT } });
}
