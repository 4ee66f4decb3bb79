// What a client controls at the network level: its X-Forwarded-For, its Host header, how many
// connections it opens and how slowly it sends. None of it may forge an address, steer the token
// realm or exhaust the server.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';

const run = promisify(execFile);

async function startupError(env: Record<string, string>): Promise<string> {
  try {
    await run(process.execPath, [CLI, 'serve'], { env: { ...process.env, PORTCULLIS_DATA_DIR: tmpdir(), ...env }, timeout: 10_000 });
  } catch (error) {
    const failure = error as { code: number; stderr: string; stdout: string };
    assert.equal(failure.code, 2, failure.stderr);
    assert.equal(failure.stdout, '', 'nothing but the message, and that on stderr');
    return failure.stderr;
  }
  throw new Error('the server started although the configuration was bad');
}

/** Request log lines of a server, parsed. */
function requestLines(server: RunningRegistry): Record<string, unknown>[] {
  return server
    .output()
    .split('\n')
    .filter((line) => line.includes('"msg":"request"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A failed login that says it comes from `forwardedFor`; resolves with the request id. */
async function failedLogin(server: RunningRegistry, forwardedFor: string | undefined, user = 'nobody'): Promise<{ status: number; id: string }> {
  const headers: Record<string, string> = { Authorization: `Basic ${Buffer.from(`${user}:wrong-password`).toString('base64')}` };
  if (forwardedFor !== undefined) headers['X-Forwarded-For'] = forwardedFor;
  const response = await fetch(`${server.url}/auth/token?service=portcullis`, { headers });
  await response.arrayBuffer();
  return { status: response.status, id: response.headers.get('X-Request-Id') ?? '' };
}

async function remoteOf(server: RunningRegistry, requestId: string): Promise<unknown> {
  for (let i = 0; i < 50; i++) {
    const line = requestLines(server).find((l) => l.reqId === requestId);
    if (line) return line.remote;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no request log line for ${requestId}`);
}

function openSocket(host: string): Promise<Socket> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname as string, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when the server closes the socket; rejects if it is still open after `ms`. */
function closedWithin(socket: Socket, ms: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed || socket.readableEnded) return resolve();
    const timer = setTimeout(() => reject(new Error(`${what}: the server kept the connection open`)), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => undefined);
    socket.resume();
  });
}

describe('trusted proxies', () => {
  it('refuses trustProxy: true and entries that are not addresses, saying why', async () => {
    assert.match(await startupError({ PORTCULLIS_HTTP_TRUST_PROXY: 'true' }), /http\.trustProxy: true is not accepted .*forge/);
    assert.match(await startupError({ PORTCULLIS_HTTP_TRUST_PROXY: '10.0.0.0/8,proxy.example' }), /"proxy\.example" is not an IP address or CIDR/);
    assert.match(await startupError({ PORTCULLIS_HTTP_TRUST_PROXY: '10.0.0.0/33' }), /not an IP address or CIDR/);
    // Behind a proxy the realm cannot be derived safely.
    assert.match(await startupError({ PORTCULLIS_HTTP_TRUST_PROXY: '127.0.0.1' }), /auth\.token\.realm is required .*reverse proxy/);
  });

  describe('behind a trusted proxy on loopback', () => {
    let server: RunningRegistry;
    before(async () => {
      server = await startPortcullis({
        env: { PORTCULLIS_HTTP_TRUST_PROXY: '127.0.0.1,10.0.0.0/8', PORTCULLIS_AUTH_TOKEN_REALM: 'https://registry.example/auth/token' },
      });
    });
    after(() => server.stop());

    it('takes the rightmost address that is not a trusted proxy', async () => {
      const forged = await failedLogin(server, '203.0.113.9, 198.51.100.7, 10.1.2.3');
      assert.equal(await remoteOf(server, forged.id), '198.51.100.7');
    });

    it('never takes something that is not an IP address', async () => {
      const junk = await failedLogin(server, '203.0.113.9, <script>alert(1)</script>');
      assert.equal(await remoteOf(server, junk.id), '127.0.0.1');
      const overflow = await failedLogin(server, '999.1.1.1');
      assert.equal(await remoteOf(server, overflow.id), '127.0.0.1');
    });

    it('announces the configured realm whatever Host the client sends', async () => {
      const response = await fetch(`${server.url}/v2/`, { headers: { 'X-Forwarded-Host': 'attacker.example', Host: 'attacker.example' } });
      assert.equal(response.headers.get('WWW-Authenticate'), 'Bearer realm="https://registry.example/auth/token",service="portcullis"');
    });
  });

  describe('without trusted proxies', () => {
    let server: RunningRegistry;
    before(async () => {
      server = await startPortcullis({ env: { PORTCULLIS_HTTP_MAX_CONNECTIONS_PER_ADDRESS: '8', PORTCULLIS_HTTP_AUTH_REQUEST_TIMEOUT_SECONDS: '1' } });
    });
    after(() => server.stop());

    it('ignores X-Forwarded-For, so a client cannot spread its failures over invented addresses', async () => {
      const first = await failedLogin(server, '203.0.113.1', 'victim');
      assert.equal(await remoteOf(server, first.id), '127.0.0.1');
      const statuses: number[] = [];
      for (let i = 2; i <= 7; i++) statuses.push((await failedLogin(server, `203.0.113.${i}`, 'victim')).status);
      assert.ok(statuses.includes(429), `the per-(name, address) budget still applies: ${statuses.join(',')}`);
    });

    it('closes connections past the per-address cap and lets new ones in once others close', async () => {
      const sockets = await Promise.all(Array.from({ length: 8 }, () => openSocket(server.host)));
      const extra = await openSocket(server.host);
      await closedWithin(extra, 5_000, 'the ninth connection');
      (sockets.pop() as Socket).destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const response = await fetch(`${server.url}/healthz`, { headers: { Connection: 'close' } });
      assert.equal(response.status, 200);
      for (const socket of sockets) socket.destroy();
    });

    it('drops a token request whose body trickles in', async () => {
      const socket = await openSocket(server.host);
      socket.write(`POST /auth/token HTTP/1.1\r\nHost: ${server.host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=`);
      await closedWithin(socket, 10_000, 'a slow token request');
      const healthy = await fetch(`${server.url}/healthz`);
      assert.equal(healthy.status, 200);
    });
  });
});

describe('startup failures', () => {
  it('explains a port in use in one line on stderr, with nothing on stdout', async () => {
    const running = await startPortcullis();
    const otherDir = await mkdtemp(join(tmpdir(), 'portcullis-second-'));
    try {
      const failure = await run(process.execPath, [CLI, 'serve'], {
        env: { ...process.env, PORTCULLIS_DATA_DIR: otherDir, PORTCULLIS_LISTEN: running.host, PORTCULLIS_LOG_LEVEL: 'silent' },
        timeout: 10_000,
      }).then(
        () => undefined,
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
      assert.ok(failure, 'the second server did not fail');
      assert.equal(failure.code, 1);
      assert.equal(failure.stdout, '');
      assert.equal(failure.stderr.trim().split('\n').length, 1, failure.stderr);
      assert.match(failure.stderr, new RegExp(`cannot listen on ${running.host.replace(/\./g, '\\.')}: the address is already in use`));
      // No bootstrap password was printed for a start that failed, so none was lost: the next
      // start of that data folder creates the administrator and shows its password.
      const next = await startPortcullis({ dataDir: otherDir, env: { PORTCULLIS_ADMIN_PASSWORD: '' } });
      try {
        for (let i = 0; i < 100 && !/with password:\s+\S+/.test(next.output()); i++) await new Promise((r) => setTimeout(r, 50));
        const password = /with password:\s+(\S+)/.exec(next.output())?.[1];
        assert.ok(password, next.output());
        const login = await fetch(`${next.url}/auth/token?service=portcullis`, {
          headers: { Authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` },
        });
        assert.equal(login.status, 200);
      } finally {
        await next.stop();
      }
    } finally {
      await running.stop();
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it('refuses a second server on the same SQLite data folder, and not a restart after a crash', async () => {
    const running = await startPortcullis();
    try {
      const message = await startupError({ PORTCULLIS_DATA_DIR: running.dataDir });
      assert.match(message, /another Portcullis server is using .*portcullis\.db \(metadata\.sqlite\.path\)/);
      await running.crash();
      const restarted = await startPortcullis({ dataDir: running.dataDir });
      assert.equal((await fetch(`${restarted.url}/healthz`)).status, 200);
      await restarted.stop();
    } finally {
      await running.stop();
      await rm(running.dataDir, { recursive: true, force: true });
    }
  });

  it('names the database setting when PostgreSQL cannot be reached, without its password', async () => {
    const message = await startupError({
      PORTCULLIS_METADATA_DRIVER: 'postgres',
      PORTCULLIS_METADATA_POSTGRES_URL: 'postgres://svc:hunter2@127.0.0.1:1/registry',
    });
    assert.match(message, /^portcullis: metadata\.postgres\.url: cannot use the database at postgres:\/\/svc:\*\*\*@127\.0\.0\.1:1\/registry: /);
    assert.doesNotMatch(message, /hunter2/);
    assert.equal(message.trim().split('\n').length, 1);
  });
});
