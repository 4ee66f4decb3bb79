// Sends a blob's bytes from a RangeReader, into a few buffers used over and over. Streaming a
// file the usual way allocates a fresh 1 MiB buffer per chunk: V8 counts them as external memory
// and runs a full mark-compact for about every 64 MiB sent, which took half the CPU of a pull.
// Here a buffer goes back to the pool once the socket has taken its bytes (the write callback).
import type { ServerResponse } from 'node:http';
import type { RangeReader } from '../storage/blob-store.js';
import type { AppContext } from './context.js';

const CHUNK = 1024 * 1024;
/** Buffers kept between pulls: enough for a few at once without holding memory for many. */
const POOLED = 8;
const pool: Buffer[] = [];

const take = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const give = (buffer: Buffer): void => {
  if (pool.length < POOLED) pool.push(buffer);
};

/**
 * Answers with exactly `length` bytes from `reader`; status and headers are already set on the
 * context. A read that fails before anything was sent is thrown (answered like any error); after,
 * the connection is cut, so the client sees a short body rather than a wrong one.
 */
export async function sendFromReader(ctx: AppContext, reader: RangeReader, length: number): Promise<void> {
  const { res } = ctx;
  const { log } = ctx.state;
  ctx.respond = false;
  let sent = 0;
  try {
    while (sent < length && !res.destroyed) {
      const buffer = take();
      let read: number;
      try {
        read = await reader.read(length - sent < buffer.length ? buffer.subarray(0, length - sent) : buffer);
      } catch (error) {
        give(buffer);
        throw error;
      }
      if (read === 0) break;
      sent += read;
      const flowing = res.write(read === buffer.length ? buffer : buffer.subarray(0, read), () => give(buffer));
      if (!flowing) await drainedOrClosed(res);
    }
  } catch (error) {
    if (sent > 0 || res.headersSent) {
      log.error({ err: error, sent, length }, 'blob read failed mid-response; connection cut');
      res.destroy();
      return;
    }
    ctx.respond = true;
    throw error;
  } finally {
    await reader.close().catch(() => undefined);
  }
  if (res.destroyed) return; // the client went away
  if (sent < length) {
    log.error({ sent, length }, 'stored blob shorter than recorded; connection cut');
    res.destroy();
    return;
  }
  res.end();
}

function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}
