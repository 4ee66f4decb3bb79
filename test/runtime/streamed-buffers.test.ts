// The young collections of streamed bytes (src/runtime/streamed-buffers.ts): one per
// COLLECT_EVERY_BYTES counted, none before, V8's gc never left on the global object nor given to
// contexts made later; and a counted stream is its source, byte for byte, with errors and early
// ends passed both ways.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { runInNewContext } from 'node:vm';
import { COLLECT_EVERY_BYTES, counted, streamed } from '../../src/runtime/streamed-buffers.js';

describe('streamed buffers', () => {
  it('counts streamed bytes and collects the young generation once per COLLECT_EVERY_BYTES', async () => {
    const kinds: number[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) kinds.push((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? -1);
    });
    observer.observe({ entryTypes: ['gc'] });
    try {
      const settled = () => new Promise((resolve) => setTimeout(resolve, 50)); // entries come later
      streamed(COLLECT_EVERY_BYTES); // whatever was counted before, the next collection is due now
      await settled();
      assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), 'no young collection at the threshold');
      kinds.length = 0;
      for (let i = 0; i < 3; i++) streamed(COLLECT_EVERY_BYTES / 4);
      await settled();
      assert.equal(kinds.filter((kind) => kind === constants.NODE_PERFORMANCE_GC_MINOR).length, 0, 'collected before the threshold');
      streamed(COLLECT_EVERY_BYTES / 4);
      await settled();
      assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), 'no young collection at the threshold');
      assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'gc exposed on the global object');
      assert.equal(runInNewContext('typeof gc'), 'undefined', 'gc exposed to contexts made afterwards');
    } finally {
      observer.disconnect();
    }
});

  it('a counted stream reads as its source', async () => {
    const chunks = Array.from({ length: 100 }, () => randomBytes(64 * 1024));
    const read: Buffer[] = [];
    for await (const chunk of counted(Readable.from(chunks))) read.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(read), Buffer.concat(chunks));
  });

  it('a failing source fails its counted copy', async () => {
    const source = new PassThrough();
    const copy = counted(source);
    source.write(Buffer.alloc(10));
    source.destroy(new Error('the store went away'));
    await assert.rejects(async () => {
      for await (const chunk of copy) void chunk;
    }, /the store went away/);
  });

  it('a counted copy destroyed (the client left) destroys its source', async () => {
    const source = new PassThrough();
    const copy = counted(source);
    const closed = new Promise((resolve) => source.once('close', resolve));
    copy.destroy();
    await closed;
    assert.ok(source.destroyed);
  });
});
