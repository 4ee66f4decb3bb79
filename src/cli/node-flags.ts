// Node.js flags `portcullis serve` is meant to run with. V8 sizes its heap when the process starts,
// so they cannot be set from here: the shebang of main.js, `npm start`, the README's service unit
// and the chart's container pass them, and the server says at start-up when they are missing.
//
// --max-semi-space-size=32: a streamed blob passes through the process as a flood of short-lived
// 64 KiB socket buffers. With V8's default young generation a 1 GiB pull from S3 cost about 4 CPU
// seconds at 280-310 MB/s here; with 32 MiB semi-spaces 2.4-2.9 CPU seconds at 360-400 MB/s
// (bench/README.md, under s3-compare).
import v8 from 'node:v8';

export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32'];

/** The recommended flags this process was started without (on its command line or in NODE_OPTIONS). */
export function missingServerFlags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((flag) => flag.split('=')[0]?.replaceAll('_', '-'));
  return SERVER_NODE_FLAGS.filter((flag) => !given.includes(flag.split('=')[0]));
}

/**
 * V8 settings that apply once the process runs, set by `serve` itself. --heap-growing-percent=50:
 * V8 otherwise lets the old generation grow by up to 4× between full collections, so under a
 * steady load of small requests the resident size climbed past 250 MiB while the live heap stayed
 * near 40 MiB; growing by 20 % at a time kept the peak of 20 s of mixed load (32 clients) at
 * 140-180 MiB. But 20 % left the old generation less room than the young one can hold, and V8 then
 * starts a full collection after nearly every young one: a streamed 1 GiB pull from S3 ran 13-17
 * of them and cost 1.8 CPU-s, against none and 1.0 CPU-s at 50 %, whose mixed-load peak was the
 * same (bench/README.md, "Memory" and "2026-12-01: large pushes").
 */
export const SERVER_V8_SETTINGS: readonly string[] = ['--heap-growing-percent=50'];

export function applyServerV8Settings(): void {
  for (const setting of SERVER_V8_SETTINGS) v8.setFlagsFromString(setting);
}
