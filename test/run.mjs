#!/usr/bin/env node
// Runs every compiled test file under dist/test with node's own test runner.
// Node 20 has no glob support for --test, so the files are listed here.
// Usage: node test/run.mjs [substring-filter ...]
//
// S3: when a selected test file imports dist/test/support/s3.js (directly, or through any module it
// imports), one Ceph RADOS Gateway is started before the tests (test/support/ceph-rgw.ts, ~5 s) and
// shared by all of them: its coordinates go to the test processes in PORTCULLIS_TEST_S3_ENDPOINT,
// _ACCESS_KEY, _SECRET_KEY and _REGION, where testS3() finds them; it is stopped when the tests end.
// With PORTCULLIS_TEST_S3_ENDPOINT already set, that server is used and none is started.
//
// Backends: the HTTP and conformance suites run twice, on the embedded default (SQLite and a
// folder) and then with PORTCULLIS_TEST_BACKEND=postgres-s3, where every server a test starts
// without choosing its own drivers gets a fresh PostgreSQL database and a fresh bucket
// (test/support/server.ts). PORTCULLIS_TEST_BACKENDS=embedded skips the second pass.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { spawn } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const filters = process.argv.slice(2);

function walk(dir) {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return walk(path);
    return entry.endsWith('.test.js') ? [path] : [];
  });
}

// A test deleted or renamed in test/ leaves its compiled file behind in dist/: run only the
// compiled tests whose source still exists.
const sources = new URL('../test/', import.meta.url).pathname;
const current = (compiled) => existsSync(join(sources, relative(root, compiled)).replace(/\.js$/, '.ts'));
const stale = walk(root).filter((f) => !current(f));
if (stale.length > 0) console.error(`skipping ${stale.length} compiled test(s) without a source: ${stale.map((f) => relative(root, f)).join(', ')}`);
const files = walk(root)
  .filter(current)
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('no test files found under', root);
  process.exit(1);
}

// Relative imports of a compiled module (static, side-effect and dynamic ones). tsc drops
// type-only imports, so this is what the module loads when it runs.
const RELATIVE_IMPORT = /\b(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g;
const S3_SUPPORT = join(root, 'support', 's3.js');
const reachesS3 = new Map();
function importsS3Support(file) {
  if (file === S3_SUPPORT) return true;
  if (reachesS3.has(file)) return reachesS3.get(file);
  reachesS3.set(file, false); // an import cycle back to this file adds nothing
  const code = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const found = [...code.matchAll(RELATIVE_IMPORT)].some(([, spec]) => importsS3Support(resolve(dirname(file), spec)));
  reachesS3.set(file, found);
  return found;
}

/** Starts the shared gateway; resolves its coordinates as environment variables and a way to stop it. */
async function sharedGateway(users) {
  const { startCephRgw } = await import('../dist/test/support/ceph-rgw.js');
  const { s3Env } = await import('../dist/test/support/s3.js');
  const started = performance.now();
  const gateway = await startCephRgw();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.error(`ceph rgw for ${users} test file(s) at ${gateway.endpoint}: started in ${seconds} s`);
  return {
    env: s3Env(gateway),
    async stop() {
      const mib = (bytes) => `${Math.round(bytes / 2 ** 20)} MiB`;
      const rss = await gateway.memory();
      console.error(`ceph rgw at the end of the run: RSS mon ${mib(rss.mon)}, osd ${mib(rss.osd)}, rgw ${mib(rss.rgw)}`);
      await gateway.stop();
    },
  };
}

const BOTH_BACKENDS = /^(?:http|conformance)\//;
// A file that chooses its drivers itself (or runs on each, or says `Backend: embedded only`) has
// no second pass to gain.
const CHOOSES_ITS_BACKEND = /\b(?:postgresEnv|storageEnv|BACKENDS)\b|PORTCULLIS_(?:METADATA_DRIVER|STORAGE_DRIVER|STORAGE_FILESYSTEM_ROOT|METADATA_SQLITE_PATH)|Backend: embedded only/;
const secondPass =
  process.env.PORTCULLIS_TEST_BACKENDS === 'embedded'
    ? []
    : files.filter((f) => BOTH_BACKENDS.test(relative(root, f)) && !CHOOSES_ITS_BACKEND.test(readFileSync(f, 'utf8')));
const s3Users = files.filter(importsS3Support).length + secondPass.length;
let gateway;
if (s3Users > 0 && !process.env.PORTCULLIS_TEST_S3_ENDPOINT) {
  try {
    gateway = await sharedGateway(s3Users);
  } catch (err) {
    console.error('could not start the Ceph RADOS Gateway the S3 tests need:', err);
    process.exit(1);
  }
}

// No --test-force-exit: every test closes what it opens, and a leaked handle shows as a hang.
// Two files at a time: most of a file's time is spent waiting on the processes it starts
// (registries, container clients, directories, the gateway), and every file has its own ports,
// folders, databases and buckets. On 2 cores this took the suite from 11m54s to 6m42s.
let running;
// SIGINT/SIGTERM reach the test runner, and the gateway is still stopped when it has ended.
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => running?.kill(signal));
function runTests(testFiles, env) {
  running = spawn(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=300000', ...testFiles], {
    stdio: 'inherit',
    env: { ...process.env, ...gateway?.env, ...env },
  });
  return new Promise((resolvePromise) => running.once('exit', (code, signal) => resolvePromise(code ?? 128 + (constants.signals[signal] ?? 0))));
}
let status = await runTests(files, {});
if (secondPass.length > 0 && status < 128) {
  console.error(`\nagain on PostgreSQL + S3: ${secondPass.length} HTTP and conformance test file(s)`);
  const again = await runTests(secondPass, { PORTCULLIS_TEST_BACKEND: 'postgres-s3' });
  status ||= again;
}
await gateway?.stop();
process.exit(status);
