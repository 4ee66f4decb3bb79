// Sends a blob's bytes from a RangeReader, into a few buffers used over and over. Streaming a
// file the usual way allocates a fresh 1 MiB buffer per chunk: V8 counts them as external memory
// and runs a full mark-compact for about every 64 MiB sent, which took half the CPU of a pull.
// Here a buffer goes back to the pool once the socket has taken its bytes (the write callback).
import type { ServerResponse } from 'node:http';
import type { RangeReader } from '../storage/blob-store.js';
import { reply, type AppContext } from './context.js';

const CHUNK = 1024 * 1024;
/** Buffers kept between pulls: enough for a few at once without holding memory for many. */
const POOLED = 8;
const pool: Buffer[] = [];

const take = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const give = (buffer: Buffer): void => {
  if (pool.length < POOLED) pool.push(buffer);
};

/**
 * Answers `status` with `headers` and exactly `length` bytes from `reader`. The headers go out
 * with the first bytes read: a read that fails before is thrown and answered like any error
 * (without the blob's headers); after, the connection is cut, so the client sees a short body
 * rather than a wrong one.
 */
export async function sendFromReader(
  ctx: AppContext,
  status: number,
  headers: Record<string, string | number>,
  reader: RangeReader,
  length: number,
): Promise<void> {
  const { res } = ctx;
  const { log } = ctx.state;
  const start = () => {
    reply(ctx, status, headers);
    ctx.respond = false;
  };
  let sent = 0;
  try {
    if (length === 0) start();
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
      if (sent === 0) start();
      sent += read;
      const flowing = res.write(read === buffer.length ? buffer : buffer.subarray(0, read), () => give(buffer));
      if (!flowing) await drainedOrClosed(res);
    }
  } catch (error) {
    if (sent > 0) {
      log.error({ err: error, sent, length }, 'blob read failed mid-response; connection cut');
      res.destroy();
      return;
    }
    throw error;
  } finally {
    await reader.close().catch(() => undefined);
  }
  if (res.destroyed) return; // the client went away
  if (sent === 0 && length > 0) throw new Error('stored blob shorter than recorded: not one byte could be read');
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
