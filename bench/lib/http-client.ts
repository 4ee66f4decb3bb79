// A small HTTP client for benchmarking: keep-alive agents, streamed request bodies with
// backpressure, response bodies that can be discarded while counted, redirects for GET/HEAD,
// and Docker token auth (Bearer challenge → token from the realm with Basic credentials).
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent as UndiciAgent, request as undiciRequest } from 'undici';

/** A buffer, or a factory of a (re-playable) stream of buffers. */
export type RequestBody = Buffer | (() => Iterable<Buffer>);

export interface RequestSpec {
  method: string;
  /** Absolute URL, or a path resolved against the client's base URL. */
  url: string;
  headers?: OutgoingHttpHeaders;
  body?: RequestBody;
  /** Count the response bytes without keeping them. */
  discardBody?: boolean;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  bytesRead: number;
  url: URL;
}

export interface Credentials {
  username: string;
  password: string;
}

const MAX_REDIRECTS = 5;

export class HttpClient {
  private readonly agents = {
    'http:': new http.Agent({ keepAlive: true, maxSockets: Infinity }),
    'https:': new https.Agent({ keepAlive: true, maxSockets: Infinity }),
  };
  /**
   * Downloads whose body is only counted (blob pulls) go through undici: node:http's parser copies
   * every 64 KiB of a response into a new buffer, which made the benchmark's own client, on the
   * same two cores as the server, the limit of a pull rather than the registry.
   */
  private readonly downloads = new UndiciAgent();
  /** Authorization header per repository ('' for everything else). */
  private readonly authorizations = new Map<string, Promise<string>>();
  /**
   * Actions asked for per repository so far. A new token asks for these as well as the challenge's,
   * as Docker's client does: otherwise a DELETE (scope `delete`) and a push (`pull,push`) in one
   * repository would each replace the other's token, one token request per switch.
   */
  private readonly actions = new Map<string, Set<string>>();
  private readonly origin: string;

  constructor(
    readonly baseUrl: string,
    private readonly credentials?: Credentials,
  ) {
    this.origin = new URL(baseUrl).origin;
  }

  /** Sends a request, answering one auth challenge and following redirects of GET/HEAD. */
  async request(spec: RequestSpec): Promise<HttpResponse> {
    let url = new URL(spec.url, this.baseUrl);
    const key = repositoryOf(url.pathname);
    for (let redirects = 0; ; redirects++) {
      const sameOrigin = url.origin === this.origin;
      let response = await this.send(url, spec, sameOrigin ? await this.authorizations.get(key) : undefined);
      if (response.status === 401 && sameOrigin && this.credentials) {
        const authorization = this.authorize(key, response.headers['www-authenticate']);
        response = await this.send(url, spec, await authorization);
      }
      const location = response.headers.location;
      if (!isRedirect(response.status, spec.method) || !location || redirects === MAX_REDIRECTS) return response;
      url = new URL(location, url);
    }
  }

  /** The Authorization header this client sends for `path` (after a first request there), if any. */
  async authorizationFor(path: string): Promise<string | undefined> {
    return this.authorizations.get(repositoryOf(new URL(path, this.baseUrl).pathname));
  }

  close(): void {
    this.agents['http:'].destroy();
    this.agents['https:'].destroy();
    void this.downloads.destroy();
  }

  private authorize(key: string, challenge: string | undefined): Promise<string> {
    const authorization = this.fetchAuthorization(key, challenge ?? '');
    this.authorizations.set(key, authorization);
    authorization.catch(() => this.authorizations.delete(key));
    return authorization;
  }

  private async fetchAuthorization(key: string, challenge: string): Promise<string> {
    const { username, password } = this.credentials as Credentials;
    const basic = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
    if (!/^bearer\s/i.test(challenge)) return basic;
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (!params.realm) throw new Error(`Bearer challenge without realm: ${challenge}`);
    const tokenUrl = new URL(params.realm);
    if (params.service) tokenUrl.searchParams.set('service', params.service);
    const scope = this.widen(key, params.scope ?? (key ? `repository:${key}:pull,push` : undefined));
    if (scope) tokenUrl.searchParams.set('scope', scope);
    const response = await this.send(tokenUrl, { method: 'GET', url: tokenUrl.href }, basic);
    if (response.status !== 200) throw new Error(`token request to ${tokenUrl.origin} failed: ${describe(response)}`);
    const body = JSON.parse(response.body.toString('utf8')) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new Error('token response has no token');
    return `Bearer ${token}`;
  }

  /** `repository:<key>:<actions>` with every action asked for in that repository before; other scopes as given. */
  private widen(key: string, scope: string | undefined): string | undefined {
    const prefix = `repository:${key}:`;
    if (!key || scope === undefined || !scope.startsWith(prefix) || scope.includes(' ')) return scope;
    const actions = this.actions.get(key) ?? new Set<string>();
    for (const action of scope.slice(prefix.length).split(',')) if (action) actions.add(action);
    this.actions.set(key, actions);
    return `${prefix}${[...actions].join(',')}`;
  }

  /** One exchange, sent again if it went to a kept-alive connection that the server had just closed. */
  private async send(url: URL, spec: RequestSpec, authorization: string | undefined): Promise<HttpResponse> {
    try {
      return await this.exchange(url, spec, authorization);
    } catch (error) {
      if (!(error instanceof StaleConnectionError)) throw error;
      return this.exchange(url, spec, authorization);
    }
  }

  private async exchange(url: URL, spec: RequestSpec, authorization: string | undefined): Promise<HttpResponse> {
    if (spec.discardBody && spec.body === undefined && hasNoBody(spec.method)) return this.download(url, spec, authorization);
    const agent = url.protocol === 'https:' ? this.agents['https:'] : this.agents['http:'];
    const headers: OutgoingHttpHeaders = { ...spec.headers };
    if (authorization) headers.authorization = authorization;
    if (Buffer.isBuffer(spec.body)) headers['content-length'] ??= spec.body.length;
    else if (spec.body === undefined && !hasNoBody(spec.method)) headers['content-length'] ??= 0;
    const request = (url.protocol === 'https:' ? https : http).request(url, { method: spec.method, headers, agent });
    const responded = new Promise<IncomingMessage>((resolve, reject) => {
      request.once('response', resolve);
      request.on('error', (error: NodeJS.ErrnoException) => {
        const stale = request.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
        reject(stale ? new StaleConnectionError(error.message) : error);
      });
    });
    const sent = writeBody(request, spec.body);
    const message = await responded;
    const { body, bytesRead } = await readBody(message, spec.discardBody ?? false);
    const response = { status: message.statusCode ?? 0, headers: message.headers, body, bytesRead, url };
    if (response.status >= 400) {
      // The server may not read the rest of a streamed body: drop the connection rather than wait.
      if (typeof spec.body === 'function') request.destroy();
      return response;
    }
    const sendError = await sent;
    if (sendError) throw sendError;
    return response;
  }

  /** A GET or HEAD whose response body is counted and dropped. */
  private async download(url: URL, spec: RequestSpec, authorization: string | undefined): Promise<HttpResponse> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(spec.headers ?? {})) if (value !== undefined) headers[name] = String(value);
    if (authorization) headers.authorization = authorization;
    const response = await undiciRequest(url, { method: spec.method as 'GET' | 'HEAD', headers, dispatcher: this.downloads });
    // An error's body is kept for the message that reports it.
    const kept: Buffer[] = [];
    let bytesRead = 0;
    for await (const chunk of response.body) {
      bytesRead += (chunk as Buffer).length;
      if (response.statusCode >= 400) kept.push(chunk as Buffer);
    }
    return { status: response.statusCode, headers: response.headers as IncomingHttpHeaders, body: Buffer.concat(kept), bytesRead, url };
  }
}

class StaleConnectionError extends Error {}

/** Writes the body and ends the request; resolves to the error (if any) instead of rejecting. */
function writeBody(request: http.ClientRequest, body: RequestBody | undefined): Promise<Error | undefined> {
  if (typeof body !== 'function') {
    request.end(body);
    return Promise.resolve(undefined);
  }
  return pipeline(Readable.from(body(), { highWaterMark: 2 }), request).then(
    () => undefined,
    (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
  );
}

function readBody(message: IncomingMessage, discard: boolean): Promise<{ body: Buffer; bytesRead: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytesRead = 0;
    message.on('data', (chunk: Buffer) => {
      bytesRead += chunk.length;
      if (!discard) chunks.push(chunk);
    });
    message.once('end', () => resolve({ body: Buffer.concat(chunks), bytesRead }));
    message.once('error', reject);
    message.once('aborted', () => reject(new Error('response aborted')));
  });
}

const hasNoBody = (method: string): boolean => method === 'GET' || method === 'HEAD';

const isRedirect = (status: number, method: string): boolean =>
  [301, 302, 303, 307, 308].includes(status) && hasNoBody(method);

/** The repository named in a /v2/<name>/(blobs|manifests|tags|referrers)/… path, or ''. */
function repositoryOf(pathname: string): string {
  return /^\/v2\/(.+?)\/(?:blobs|manifests|tags|referrers)\//.exec(pathname)?.[1] ?? '';
}

/** "METHOD url → status: first bytes of the body", for error messages. */
export function describe(response: HttpResponse): string {
  const text = response.body.subarray(0, 300).toString('utf8').trim();
  return `${response.url.pathname} → ${response.status}${text ? `: ${text}` : ''}`;
}
