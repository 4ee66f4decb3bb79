// A rolling restart under load fails no request. Two replicas on one PostgreSQL database, one
// blob folder and one signing key, behind a small load balancer written here that routes only to
// replicas whose /readyz answered 200 at its last look (every 100 ms, as a Kubernetes Service's
// endpoints follow readiness) and never retries. Clients push (a monolithic blob, a chunked
// upload whose requests may land on either replica, a manifest) and pull without pause while
// each replica in turn gets SIGTERM, exits 0, and is started again; not one request may fail.
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { OCI_MANIFEST, randomName, sha256 } from '../support/registry-client.js';
import { startServe, type Exit, type ServeProcess } from '../support/serve-process.js';
import { TEST_ADMIN } from '../support/server.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade']);

function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name)));
}

interface Endpoint {
  url: string;
  ready: boolean;
  /** requests routed to it */
  served: number;
  /** why it last stopped being ready: its /readyz said no, or it could not be reached */
  leftBecause?: 'not ready' | 'unreachable';
}

/**
 * Routes each request to the next endpoint whose /readyz answered 200 at the last look, through
 * kept-alive upstream connections, and streams both ways. A request with no ready endpoint, or
 * whose upstream fails, gets 502/503: it is never retried, so every fault shows.
 */
class ReadinessBalancer {
  readonly endpoints = new Map<string, Endpoint>();
  private readonly upstream = new Agent({ keepAlive: true, maxSockets: 32 });
  private readonly server: Server;
  private poller: NodeJS.Timeout | undefined;
  private next = 0;
  url = '';

  constructor(private readonly onFailure: (what: string) => void) {
    this.server = createServer((incoming, outgoing) => {
      const ready = [...this.endpoints.values()].filter((endpoint) => endpoint.ready);
      const target = ready[this.next++ % Math.max(ready.length, 1)];
      if (!target) {
        this.onFailure(`no ready endpoint for ${incoming.method} ${incoming.url}`);
        outgoing.writeHead(503).end();
        incoming.resume();
        return;
      }
      target.served++;
      const proxied = request(new URL(incoming.url ?? '/', target.url), { method: incoming.method, headers: endToEnd(incoming.headers), agent: this.upstream });
      proxied.on('response', (response) => {
        outgoing.writeHead(response.statusCode ?? 502, endToEnd(response.headers));
        response.pipe(outgoing);
      });
      proxied.on('error', (error) => {
        this.onFailure(`${incoming.method} ${incoming.url} via ${target.url}: ${error.message}`);
        if (outgoing.headersSent) outgoing.destroy();
        else outgoing.writeHead(502).end();
      });
      incoming.pipe(proxied);
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
    const look = async (endpoint: Endpoint): Promise<void> => {
      let ready: boolean;
      let reachable = true;
      try {
        const response = await fetch(`${endpoint.url}/readyz`, { signal: AbortSignal.timeout(1_000) });
        await response.arrayBuffer();
        ready = response.status === 200;
      } catch {
        ready = false;
        reachable = false;
      }
      if (endpoint.ready && !ready) endpoint.leftBecause = reachable ? 'not ready' : 'unreachable';
      endpoint.ready = ready;
    };
    this.poller = setInterval(() => void Promise.all([...this.endpoints.values()].map(look)), 100);
  }

  add(url: string): void {
    this.endpoints.set(url, { url, ready: false, served: 0 });
  }

  remove(url: string): void {
    this.endpoints.delete(url);
  }

  async readyAt(url: string): Promise<void> {
    for (const until = Date.now() + 15_000; !this.endpoints.get(url)?.ready; await sleep(20)) {
      assert.ok(Date.now() < until, `${url} became ready`);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.poller);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.upstream.destroy();
  }
}

describe('a rolling restart of two replicas under load', () => {
  let dir: string;
  let database: TestDatabase;
  let env: Record<string, string>;
  const replicas: ServeProcess[] = [];
  const failures: string[] = [];
  let balancer: ReadinessBalancer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-rolling-'));
    const keyFile = join(dir, 'signing.pem');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    database = await createTestDatabase();
    env = {
      ...postgresEnv(database),
      PORTCULLIS_STORAGE_FILESYSTEM_ROOT: join(dir, 'blobs'),
      PORTCULLIS_AUTH_TOKEN_KEY_FILE: keyFile,
      PORTCULLIS_SHUTDOWN_DRAIN_SECONDS: '2',
      PORTCULLIS_SHUTDOWN_TIMEOUT_SECONDS: '30',
      PORTCULLIS_LOG_LEVEL: 'warn',
    };
    replicas.push(...(await Promise.all([startServe({ env }), startServe({ env })])));
    balancer = new ReadinessBalancer((what) => failures.push(what));
    await balancer.start();
    for (const replica of replicas) balancer.add(replica.url);
    await Promise.all(replicas.map((replica) => balancer.readyAt(replica.url)));
  });
  after(async () => {
    await balancer?.stop();
    await Promise.all(replicas.map((replica) => replica.dispose()));
    await database?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('fails no request while each replica in turn is stopped with SIGTERM and started again', async () => {
    let requests = 0;
    let pushed = 0;
    /** One request through the balancer; anything but the expected status is a failure. */
    const send = async (what: string, path: string, expected: number, init: RequestInit & { token?: string } = {}): Promise<Response | undefined> => {
      requests++;
      const headers = new Headers(init.headers);
      if (init.token) headers.set('Authorization', `Bearer ${init.token}`);
      try {
        const response = await fetch(new URL(path, balancer.url), { ...init, headers });
        if (response.status !== expected) {
          failures.push(`${what}: ${response.status} ${(await response.text()).slice(0, 300)}`);
          return undefined;
        }
        return response;
      } catch (error) {
        failures.push(`${what}: ${(error as Error).message}`);
        return undefined;
      }
    };
    const login = async (repository: string): Promise<string> => {
      const credentials = Buffer.from(`${TEST_ADMIN.username}:${TEST_ADMIN.password}`).toString('base64');
      const response = await send('token', `/auth/token?service=portcullis&scope=repository:${repository}:pull,push`, 200, { headers: { Authorization: `Basic ${credentials}` } });
      return response ? ((await response.json()) as { token: string }).token : '';
    };

    /** Push an image (monolithic config, chunked layer, manifest) and pull it back, again and again. */
    let running = true;
    const worker = async (k: number): Promise<void> => {
      const repository = `rolling/w${k}-${randomName()}`;
      let token = '';
      for (let round = 0; running; round++) {
        // A token now and then, as clients log in again (through the balancer too).
        if (round % 5 === 0 || token === '') token = await login(repository);
        const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', round, k }));
        const layer = randomBytes(2048 + round);
        if (!(await send('config', `/v2/${repository}/blobs/uploads/?digest=${sha256(config)}`, 201, { method: 'POST', body: config, token }))) continue;
        const session = await send('upload start', `/v2/${repository}/blobs/uploads/`, 202, { method: 'POST', token });
        const location = session?.headers.get('Location');
        if (!location) continue;
        const patched = await send('upload chunk', location, 202, {
          method: 'PATCH',
          body: layer.subarray(0, 1000),
          token,
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '0-999' },
        });
        const next = patched?.headers.get('Location');
        if (!next) continue;
        const separator = next.includes('?') ? '&' : '?';
        const finished = await send('upload finish', `${next}${separator}digest=${sha256(layer)}`, 201, {
          method: 'PUT',
          body: layer.subarray(1000),
          token,
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        if (!finished) continue;
        const manifest = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_MANIFEST,
            config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
            layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
          }),
        );
        const tag = `r${round}`;
        if (!(await send('manifest push', `/v2/${repository}/manifests/${tag}`, 201, { method: 'PUT', body: manifest, token, headers: { 'Content-Type': OCI_MANIFEST } }))) continue;
        pushed++;
        const pulled = await send('manifest pull', `/v2/${repository}/manifests/${tag}`, 200, { token, headers: { Accept: OCI_MANIFEST } });
        if (pulled && sha256(Buffer.from(await pulled.arrayBuffer())) !== sha256(manifest)) failures.push('manifest pull: other bytes');
        const blob = await send('blob pull', `/v2/${repository}/blobs/${sha256(layer)}`, 200, { token });
        if (blob && !Buffer.from(await blob.arrayBuffer()).equals(layer)) failures.push('blob pull: other bytes');
      }
    };
    const workers = [0, 1, 2].map(worker);

    const exits: Exit[] = [];
    /** Why the balancer stopped routing to each stopped replica, and whether it had served traffic. */
    const departures: { leftBecause?: string; served: boolean }[] = [];
    try {
      await sleep(500);
      for (const index of [0, 1]) {
        const old = replicas[index] as ServeProcess;
        old.signal('SIGTERM');
        exits.push(await old.exited);
        const endpoint = balancer.endpoints.get(old.url);
        departures.push({ leftBecause: endpoint?.leftBecause, served: (endpoint?.served ?? 0) > 0 });
        balancer.remove(old.url);
        const fresh = await startServe({ env });
        replicas[index] = fresh;
        balancer.add(fresh.url);
        await balancer.readyAt(fresh.url);
        await sleep(500);
      }
    } finally {
      running = false;
      await Promise.all(workers);
    }

    assert.deepEqual(failures, []);
    // Taken out on its /readyz (draining), not found unreachable: it was still accepting then.
    assert.deepEqual(departures, [
      { leftBecause: 'not ready', served: true },
      { leftBecause: 'not ready', served: true },
    ]);
    assert.deepEqual(exits, [
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);
    assert.ok(pushed >= 10, `${pushed} images pushed, ${requests} requests`);
    for (const replica of replicas) assert.ok((balancer.endpoints.get(replica.url)?.served ?? 0) > 0, 'the restarted replicas take traffic');
  });
});
