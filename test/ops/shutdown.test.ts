// Graceful shutdown of `portcullis serve`: SIGTERM during a 512 MiB upload (streamed from a
// generator, never held in memory) — /readyz turns 503 while new connections are still served
// with Connection: close, then new connections are refused and an idle keep-alive connection is
// closed, the upload completes, and the process exits 0 with the blob stored whole; a request
// still running at shutdown.timeoutSeconds is cut off, logged, and the exit is 1; a second
// signal cuts off at once.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Agent, request, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { adminClient, randomName } from '../support/registry-client.js';
import { startServe, type ServeProcess } from '../support/serve-process.js';

const MiB = 1024 * 1024;
const UPLOAD_MIB = 512;

/** 512 distinct MiB from one random MiB: the same bytes on every pass, none of it kept. */
function* content(base: Buffer): Generator<Buffer> {
  for (let i = 0; i < UPLOAD_MIB; i++) {
    const chunk = Buffer.from(base);
    chunk.writeUInt32BE(i, 0);
    yield chunk;
  }
}

async function responseOf(req: ClientRequest): Promise<{ response: IncomingMessage; body: string }> {
  const [response] = (await once(req, 'response')) as [IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return { response, body: Buffer.concat(chunks).toString('utf8') };
}

/** A GET on a connection of its own. */
async function freshGet(url: string): Promise<{ response: IncomingMessage; body: string }> {
  const req = request(url, { agent: false });
  req.end();
  return responseOf(req);
}

async function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

/** An upload session and a PATCH into it that sends a little and then nothing: a request that never ends by itself. */
async function stalledPatch(server: ServeProcess): Promise<{ path: string; patch: ClientRequest }> {
  const client = adminClient(server);
  const repository = `shutdown/${randomName('stalled')}`;
  const token = await client.token([`repository:${repository}:pull,push`]);
  const started = await fetch(`${server.url}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  assert.equal(started.status, 202);
  const path = started.headers.get('Location') ?? '';
  const patch = request(new URL(path, server.url), { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' } });
  patch.on('error', () => undefined); // it is cut off
  patch.write(randomBytes(4096));
  // Until the server shows it as an upload in progress, it is not in flight yet.
  for (const until = Date.now() + 5_000; ; ) {
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    if (/^portcullis_uploads_in_progress 1$/m.test(metrics)) break;
    assert.ok(Date.now() < until, 'the PATCH reached the server');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { path, patch };
}

describe('SIGTERM', () => {
  it('during a 512 MiB upload: drains, refuses new connections, completes the upload, exits 0', async () => {
    const server = await startServe({ env: { PORTCULLIS_SHUTDOWN_DRAIN_SECONDS: '2' } });
    let restarted: ServeProcess | undefined;
    try {
      const base = randomBytes(MiB);
      const hash = createHash('sha256');
      for (const chunk of content(base)) hash.update(chunk);
      const digest = `sha256:${hash.digest('hex')}`;
      const repository = `shutdown/${randomName('large')}`;
      const token = await adminClient(server).token([`repository:${repository}:pull,push`]);

      // A kept-alive connection left idle before the signal: the server must close it, not wait for its timeout.
      const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
      const warm = request(`${server.url}/healthz`, { agent: keepAlive });
      const [idleSocket] = (await once(warm.end(), 'socket')) as [Socket];
      const idleClosed = once(idleSocket, 'close');
      assert.equal((await responseOf(warm)).response.statusCode, 200);

      const upload = request(`${server.url}/v2/${repository}/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        agent: false,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream', 'Content-Length': UPLOAD_MIB * MiB },
      });
      const answered = responseOf(upload);
      let sent = 0;
      for (const chunk of content(base)) {
        if (!upload.write(chunk)) await once(upload, 'drain');
        if (++sent !== 128) continue;

        // A quarter in: the signal. The server drains first: still accepting, but not ready.
        server.signal('SIGTERM');
        await server.waitForOutput(/"msg":"draining/);
        const ready = await freshGet(`${server.url}/readyz`);
        assert.equal(ready.response.statusCode, 503);
        assert.deepEqual(JSON.parse(ready.body), { status: 'draining' });
        assert.equal(ready.response.headers.connection, 'close', 'clients reconnect elsewhere');
        const live = await freshGet(`${server.url}/healthz`);
        assert.equal(live.response.statusCode, 200, 'alive while draining: no restart');

        // Then the listener closes: new connections are refused, the idle one is closed.
        await server.waitForOutput(/listener closed/);
        assert.ok(await refusesConnections(server.port), 'new connections are refused');
        await idleClosed;
        assert.equal(server.child.exitCode, null, 'the upload keeps the server running');
      }
      upload.end();
      const { response, body } = await answered;
      assert.equal(response.statusCode, 201, body);
      assert.equal(response.headers['docker-content-digest'], digest);
      assert.equal(response.headers.connection, 'close');
      assert.deepEqual(await server.exited, { code: 0, signal: null });
      assert.match(server.output(), /"complete":true,"msg":"portcullis stopped"/);
      keepAlive.destroy();

      // Stored whole: a restart on the same data serves it.
      restarted = await startServe({ dataDir: server.dataDir });
      const head = await adminClient(restarted).fetch(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(UPLOAD_MIB * MiB));
    } finally {
      await restarted?.dispose();
      await server.dispose();
    }
  });

  it('cuts off what is still running after shutdown.timeoutSeconds, names it, and exits 1', async () => {
    const server = await startServe({ env: { PORTCULLIS_SHUTDOWN_TIMEOUT_SECONDS: '1' } });
    try {
      const { path, patch } = await stalledPatch(server);
      const started = Date.now();
      server.signal('SIGTERM');
      assert.deepEqual(await server.exited, { code: 1, signal: null });
      assert.ok(Date.now() - started < 5_000, 'bounded by the timeout');
      const cutOff = server.output().split('\n').find((line) => line.includes('shutdown timeout'));
      assert.ok(cutOff, server.output());
      const logged = JSON.parse(cutOff) as { requests: { method: string; path: string; seconds: number }[]; timeoutSeconds: number };
      assert.equal(logged.timeoutSeconds, 1);
      assert.deepEqual(
        logged.requests.map(({ method, path: cut }) => ({ method, path: cut })),
        [{ method: 'PATCH', path }],
      );
      patch.destroy();
    } finally {
      await server.dispose();
    }
  });

  it('followed by a second signal: stops at once, naming what it cut off, and exits 1', async () => {
    const server = await startServe({ env: { PORTCULLIS_SHUTDOWN_TIMEOUT_SECONDS: '600' } });
    try {
      const { path, patch } = await stalledPatch(server);
      server.signal('SIGTERM');
      await server.waitForOutput(/listener closed/);
      const started = Date.now();
      server.signal('SIGINT');
      assert.deepEqual(await server.exited, { code: 1, signal: null });
      assert.ok(Date.now() - started < 2_000);
      const line = server.output().split('\n').find((text) => text.includes('stopping at once'));
      assert.ok(line, server.output());
      assert.deepEqual((JSON.parse(line) as { requests: { path: string }[] }).requests.map((request) => request.path), [path]);
      patch.destroy();
    } finally {
      await server.dispose();
    }
  });
});
