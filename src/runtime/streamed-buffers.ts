// A streamed blob passes through the process as a flood of 64 KiB buffers, one per socket read
// (a push's body, or a pull's response from S3), each allocated outside V8's heap and garbage a
// moment later. V8 frees such buffers at its next young-generation collection, but until then
// counts them as external memory, and each 64 MiB of that starts a full mark-compact of the whole
// heap: about 20 of them per 512 MiB push, ~40 % of the server's CPU in the profile. One young
// collection per few MiB streamed (~0.5 ms each, the young generation being nearly all garbage)
// frees the buffers before they add up (bench/README.md, "2026-12-01: large pushes").
import v8 from 'node:v8';
import { pipeline, Transform, type Readable } from 'node:stream';
import { runInNewContext } from 'node:vm';

/** Streamed bytes between two young collections; at 8 MiB, full collections still came every ~100 MiB. */
export const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;

type Collect = (options: { type: 'minor' }) => void;

let collect: Collect | null | undefined;

/**
 * V8's `gc`, kept private to this module: exposed in one new context, whose function is kept, and
 * switched off again at once, so no other context (a dependency's vm, a worker) ever gets it and
 * the process's global object never has it. null where the runtime offers none (then nothing is
 * collected early).
 */
function youngCollector(): Collect | null {
  if (collect === undefined) {
    let found: unknown;
    v8.setFlagsFromString('--expose-gc');
    try {
      found = runInNewContext('typeof gc === "function" ? gc : null');
    } finally {
      v8.setFlagsFromString('--no-expose-gc');
    }
    collect = typeof found === 'function' ? (found as Collect) : null;
  }
  return collect;
}

let sinceCollection = 0;

/** Counts bytes that passed through the process in short-lived buffers; collects them every few MiB. */
export function streamed(bytes: number): void {
  sinceCollection += bytes;
  if (sinceCollection < COLLECT_EVERY_BYTES) return;
  sinceCollection = 0;
  youngCollector()?.({ type: 'minor' });
}

/** `source` as it is, its chunks counted as streamed (for a stream handed on to be piped elsewhere). */
export function counted(source: Readable): Readable {
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      streamed(chunk.length);
      done(null, chunk);
    },
  });
  // Errors and early ends travel both ways: a failed source fails the copy, a destroyed copy the source.
  pipeline(source, counter, () => undefined);
  return counter;
}
