// A large push streams through the server without making V8 collect its whole heap over and over:
// the 64 KiB buffers the body arrives in are freed by young collections every few MiB
// (src/runtime/streamed-buffers.ts), before they count as enough external memory to start a full
// mark-compact. Read off the server's own garbage collection counts on /metrics (Node's
// `nodejs_gc_duration_seconds` histogram, by kind), so the figure is counted, not timed.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { COLLECT_EVERY_BYTES } from '../../src/runtime/streamed-buffers.js';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, randomName, scopeFor } from '../support/registry-client.js';

const MiB = 1024 * 1024;
const BLOCKS = 256; // 256 MiB: without the young collections, about ten full ones here
const block = randomBytes(MiB);

/** 256 MiB that are never in memory at once: one random block, numbered in its first 8 bytes. */
function* blocks(): Generator<Buffer> {
  for (let i = 0; i < BLOCKS; i++) {
    const copy = Buffer.from(block);
    copy.writeBigUInt64BE(BigInt(i));
    yield copy;
  }
}

/** The server's collections of one kind so far (Node reports them a moment after they end). */
async function collections(server: RunningRegistry, kind: 'major' | 'minor'): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 100));
  const response = await fetch(`${server.url}/metrics`);
  assert.equal(response.status, 200);
  return sampleValue(parsePrometheusText(await response.text()), 'nodejs_gc_duration_seconds_count', { kind });
}

describe('streamed pushes and the garbage collector', () => {
  let server: RunningRegistry;

  before(async () => {
    server = await startPortcullis();
  });
  after(async () => server?.stop());

  it('a 256 MiB push runs young collections, not a full collection per 64 MiB received', async () => {
    const client = adminClient(server);
    const repository = randomName('streamed');
    const hash = createHash('sha256');
    for (const chunk of blocks()) hash.update(chunk);
    const digest = `sha256:${hash.digest('hex')}`;
    const path = `/v2/${repository}/blobs/uploads/?digest=${digest}`;
    const token = await client.token([scopeFor(path, 'POST') as string]);

    const fullBefore = await collections(server, 'major');
    const youngBefore = await collections(server, 'minor');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(new URL(path, server.url), {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream', 'Content-Length': BLOCKS * MiB },
      });
      req.once('response', (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      });
      req.once('error', reject);
      Readable.from(blocks()).pipe(req);
    });
    assert.equal(status, 201);
    const head = await client.fetch(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.headers.get('Content-Length'), String(BLOCKS * MiB));

    const full = (await collections(server, 'major')) - fullBefore;
    const young = (await collections(server, 'minor')) - youngBefore;
    assert.ok(full <= 3, `${full} full collections (and ${young} young ones) while 256 MiB streamed in`);
    assert.ok(young >= (BLOCKS * MiB) / COLLECT_EVERY_BYTES / 2, `only ${young} young collections while 256 MiB streamed in`);
  });
});
