// Node.js flags `portcullis serve` is meant to run with. V8 sizes its heap when the process starts,
// so they cannot be set from here: the shebang of main.js, `npm start`, the README's service unit
// and the chart's container pass them, and the server says at start-up when they are missing.
//
// --max-semi-space-size=32: a streamed blob passes through the process as a flood of short-lived
// 64 KiB socket buffers. With V8's default young generation a 1 GiB pull from S3 cost about 4 CPU
// seconds at 280-310 MB/s here; with 32 MiB semi-spaces 2.4-2.9 CPU seconds at 360-400 MB/s
// (bench/README.md, "Streamed pulls").
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32'];

/** The recommended flags this process was started without (on its command line or in NODE_OPTIONS). */
export function missingServerFlags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((flag) => flag.split('=')[0]?.replaceAll('_', '-'));
  return SERVER_NODE_FLAGS.filter((flag) => !given.includes(flag.split('=')[0]));
}
