// Portcullis on an object store that takes requests and then says nothing (a hung gateway), over
// HTTP: with storage.s3.timeoutSeconds, a request that needs the store is a 503 UNAVAILABLE that
// names the timeout within seconds, not after undici's 300 s, and the server goes on answering.
// Backend: SQLite and a TCP server of the test's own on loopback that never answers.
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { adminClient, randomName, type TestRegistry } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

describe('an object store that stays silent', () => {
  let silentStore: Server;
  const sockets = new Set<Socket>();
  let server: RunningRegistry;
  let client: TestRegistry;

  before(async () => {
    silentStore = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => undefined).on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silentStore.listen(0, '127.0.0.1', resolve));
    const address = silentStore.address();
    assert.ok(address && typeof address === 'object');
    server = await startPortcullis({
      env: {
        PORTCULLIS_STORAGE_DRIVER: 's3',
        PORTCULLIS_STORAGE_S3_BUCKET: 'registry',
        PORTCULLIS_STORAGE_S3_ENDPOINT: `http://127.0.0.1:${address.port}`,
        PORTCULLIS_STORAGE_S3_FORCE_PATH_STYLE: 'true',
        PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID: 'test',
        PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY: 'test-secret',
        PORTCULLIS_STORAGE_S3_TIMEOUT_SECONDS: '1',
      },
    });
    client = adminClient(server);
  });
  after(async () => {
    await server?.stop();
    for (const socket of sockets) socket.destroy();
    silentStore?.close();
  });

  it('answers an upload 503 UNAVAILABLE, naming the timeout, within seconds', { timeout: 60_000 }, async () => {
    const started = Date.now();
    const response = await client.fetch(`/v2/silent/${randomName()}/blobs/uploads/`, { method: 'POST' });
    const text = await response.text();
    assert.equal(response.status, 503, text);
    const body = JSON.parse(text) as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
    assert.match(body.errors[0]?.message ?? '', /blob storage is unavailable \(the object store did not answer in time \(UND_ERR_HEADERS_TIMEOUT\)\)/);
    // Three tries of one second each by the SDK, and its pauses between them.
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
  });

  it('is not ready while the store is silent, and keeps answering what needs no store', { timeout: 60_000 }, async () => {
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 503, await ready.text());
    const base = await client.fetch('/v2/');
    assert.equal(base.status, 200, await base.text());
  });
});
