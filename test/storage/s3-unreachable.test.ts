// The S3 driver's answer when the store is not there or misbehaves below S3 itself: a
// StorageUnavailableError (the HTTP layer's 503 UNAVAILABLE) naming what happened, whichever
// HTTP client the SDK runs on. Backend: none (a TCP server of the test's own on loopback).
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { StorageUnavailableError } from '../../src/storage/blob-store.js';
import { S3BlobStore } from '../../src/storage/s3.js';

/** A loopback TCP server that does `behave` with every connection; resolves to its endpoint. */
async function misbehaving(behave: (socket: Socket) => void): Promise<{ server: Server; endpoint: string }> {
  const server = createServer(behave);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return { server, endpoint: `http://127.0.0.1:${address.port}` };
}

function storeAt(endpoint: string, timeoutMs?: number): S3BlobStore {
  return new S3BlobStore({
    timeoutMs,
    bucket: 'registry',
    prefix: 'registry/',
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test-secret' },
  });
}

async function assertUnavailable(work: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(work, (error: unknown) => {
    assert.ok(error instanceof StorageUnavailableError, `not a StorageUnavailableError: ${String(error)}`);
    assert.match(error.message, message);
    return true;
  });
}

describe('the S3 driver when the store cannot answer', () => {
  const servers: Server[] = [];
  const stores: S3BlobStore[] = [];
  after(() => {
    for (const store of stores) store.close();
    for (const server of servers) server.close();
  });
  const open = async (behave: (socket: Socket) => void, timeoutMs?: number): Promise<S3BlobStore> => {
    const { server, endpoint } = await misbehaving(behave);
    servers.push(server);
    const store = storeAt(endpoint, timeoutMs);
    stores.push(store);
    return store;
  };

  it('reports a refused connection as unavailable, naming it', async () => {
    const { server, endpoint } = await misbehaving(() => undefined);
    await new Promise<void>((resolve) => server.close(() => resolve())); // the port is free again: refused
    const store = storeAt(endpoint);
    stores.push(store);
    await assertUnavailable(store.size('blobs/sha256/ab/cd'), /cannot be reached \(ECONNREFUSED\)/);
    await assertUnavailable(store.checkHealth(), /cannot be reached \(ECONNREFUSED\)/);
  });

  it('reports a connection dropped before any answer as unavailable', async () => {
    const store = await open((socket) => socket.once('data', () => socket.destroy()));
    await assertUnavailable(store.size('blobs/sha256/ab/cd'), /cannot be reached/);
    await assertUnavailable(store.read('blobs/sha256/ab/cd', { start: 0, end: 9 }), /cannot be reached/);
  });

  it('reports a store that answers 503 as unavailable, with its status', async () => {
    const store = await open((socket) =>
      socket.once('data', () => {
        const body = '<?xml version="1.0"?><Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>';
        socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
      }),
    );
    await assertUnavailable(store.read('blobs/sha256/ab/cd', { start: 0, end: 9 }), /answered 503/);
  });

  it('gives up on a store that takes a request and stays silent, after storage.s3.timeoutSeconds', { timeout: 30_000 }, async () => {
    const silent: Socket[] = [];
    const store = await open((socket) => silent.push(socket.on('data', () => undefined)), 300);
    const started = Date.now();
    await assertUnavailable(store.size('blobs/sha256/ab/cd'), /did not answer in time \(UND_ERR_HEADERS_TIMEOUT\)/);
    await assertUnavailable(store.read('blobs/sha256/ab/cd', { start: 0, end: 9 }), /did not answer in time/);
    // The SDK tries each request three times: seconds, not the 300 s undici waits by default
    // (without the setting, this test runs into its own timeout).
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
    for (const socket of silent) socket.destroy();
  });

  /** Answers any request with `size` bytes: all of them, or only `sent` and then nothing more. */
  const answering = (size: number, sent = size) => (socket: Socket) =>
    socket.once('data', () => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${size}\r\n\r\n`);
      socket.write(Buffer.alloc(sent, 7));
    });

  it('fails the reading of an object whose bytes stop coming', { timeout: 30_000 }, async () => {
    const store = await open(answering(10, 3), 300);
    const body = await store.read('blobs/sha256/ab/cd', { start: 0, end: 9 });
    assert.ok(body);
    await assert.rejects(
      (async () => {
        for await (const _chunk of body) {
          // the first 3 bytes, then the stall
        }
      })(),
      (error: unknown) => (error as { code?: unknown }).code === 'UND_ERR_BODY_TIMEOUT',
    );
  });

  it('does not time out a reading paused by a slow client', { timeout: 30_000 }, async () => {
    const size = 16 * 1024 * 1024; // far more than the socket and the stream buffer hold
    const store = await open(answering(size), 300);
    const body = await store.read('blobs/sha256/ab/cd', { start: 0, end: size - 1 });
    assert.ok(body);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // five timeouts without reading
    let read = 0;
    for await (const chunk of body) read += (chunk as Buffer).length;
    assert.equal(read, size);
  });
});
