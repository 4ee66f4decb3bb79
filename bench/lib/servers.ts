// Starts and stops the registries that compare.ts and s3-compare.ts benchmark, each with its data
// (or, on S3, just its configuration) in a fresh temporary directory that is removed when it stops.
import { SERVER_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { referenceConfig } from '../../test/support/reference-registry.js';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readMemory, type ResidentMemory } from './process-memory.js';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_TAIL = 64 * 1024;

export interface RunningRegistry {
  name: string;
  url: string;
  dataDir: string;
  /** The server's process id. */
  pid: number;
  /** The server's resident memory now and its peak (VmRSS, VmHWM), or undefined once it is gone. */
  memory: () => ResidentMemory | undefined;
  /** The last 64 KiB of the process's stdout and stderr. */
  output: () => string;
  /** SIGTERM (SIGKILL after 5 s), then removes the data directory. */
  stop: () => Promise<void>;
  /** SIGKILL and remove the data directory, for exit and signal handlers. */
  stopSync: () => void;
}

export interface ProcessSpec {
  name: string;
  command: string;
  args: (dataDir: string, host: string) => string[];
  env?: (dataDir: string, host: string) => NodeJS.ProcessEnv;
  /** Writes files the process needs into its data directory before it starts. */
  prepare?: (dataDir: string, host: string) => void;
}

/** Debian's docker-registry (CNCF distribution 2.8), filesystem storage, request logging off. */
export const referenceSpec = (binary: string): ProcessSpec => ({
  name: 'reference',
  command: binary,
  args: (dataDir) => ['serve', join(dataDir, 'config.yml')],
  // No access log: it costs the reference CPU that Portcullis (at warn) does not spend.
  prepare: (dataDir, host) =>
    writeFileSync(join(dataDir, 'config.yml'), referenceConfig({ storageDir: join(dataDir, 'storage'), host, logLevel: 'error', accessLog: false })),
});

/** Where the reference registry keeps its blobs and metadata when it runs on S3. */
export interface ReferenceS3Store {
  /** http://host:port of an S3-compatible store (path-style). */
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Key prefix inside the bucket, e.g. /registry. */
  rootDirectory: string;
}

/**
 * docker-registry's config.yml on S3: the `storage.s3` driver with `regionendpoint` (path-style
 * requests to that endpoint), Debian's in-memory blob descriptor cache, no auth, request logging
 * off. `redirect`: blob GETs answered with a 307 to a presigned URL of the object (distribution's
 * default with S3), or streamed through the registry (`storage.redirect.disable`).
 */
export function referenceS3Config(store: ReferenceS3Store, host: string, redirect: boolean): string {
  // JSON strings are valid YAML double-quoted scalars: the secret key may hold '/', '+' or '='.
  const quoted = JSON.stringify;
  return [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  s3:',
    `    accesskey: ${quoted(store.accessKeyId)}`,
    `    secretkey: ${quoted(store.secretAccessKey)}`,
    `    region: ${quoted(store.region)}`,
    `    regionendpoint: ${quoted(store.endpoint)}`,
    `    bucket: ${quoted(store.bucket)}`,
    `    secure: ${store.endpoint.startsWith('https:')}`,
    '    v4auth: true',
    `    rootdirectory: ${quoted(store.rootDirectory)}`,
    '  cache:',
    '    blobdescriptor: inmemory',
    '  delete:',
    '    enabled: true',
    '  redirect:',
    `    disable: ${!redirect}`,
    'http:',
    `  addr: ${host}`,
    '',
  ].join('\n');
}

/** Debian's docker-registry (CNCF distribution 2.8) on S3; see referenceS3Config. */
export const referenceS3Spec = (binary: string, store: ReferenceS3Store, redirect: boolean): ProcessSpec => ({
  name: redirect ? 'reference-s3' : 'reference-s3-streamed',
  command: binary,
  args: (dataDir) => ['serve', join(dataDir, 'config.yml')],
  // Its S3 driver panics at start when AWS_CA_BUNDLE is set (as it is on this machine).
  env: () => {
    const { AWS_CA_BUNDLE: _bundle, ...env } = process.env;
    return env;
  },
  // 0600: the file holds the store's secret key.
  prepare: (dataDir, host) => writeFileSync(join(dataDir, 'config.yml'), referenceS3Config(store, host, redirect), { mode: 0o600 }),
});

/** The bootstrap administrator of the Portcullis under benchmark (token auth is always on). */
export const PORTCULLIS_BENCH_ADMIN = { username: 'admin', password: 'bench-admin-password' } as const;

/** `node <main.js> serve`, configured through the environment. */
export const portcullisSpec = (mainJs: string, env: Record<string, string> = {}): ProcessSpec => ({
  name: 'portcullis',
  command: process.execPath,
  args: () => [...SERVER_NODE_FLAGS, mainJs, 'serve'],
  env: (dataDir, host) => ({
    ...process.env,
    PORTCULLIS_LISTEN: host,
    PORTCULLIS_DATA_DIR: join(dataDir, 'data'),
    PORTCULLIS_LOG_LEVEL: 'warn',
    PORTCULLIS_ADMIN_PASSWORD: PORTCULLIS_BENCH_ADMIN.password,
    ...env,
  }),
});

/** Starts the process on a free loopback port and waits until GET /v2/ answers. */
export async function startRegistry(spec: ProcessSpec, tmpBase: string): Promise<RunningRegistry> {
  const dataDir = mkdtempSync(join(tmpBase, `portcullis-bench-${spec.name}-`));
  const host = `127.0.0.1:${await freePort()}`;
  let child: ChildProcess | undefined;
  let output = '';
  const stopSync = () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    spec.prepare?.(dataDir, host);
    child = spawn(spec.command, spec.args(dataDir, host), {
      env: spec.env?.(dataDir, host) ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (data: Buffer) => (output = (output + data.toString()).slice(-OUTPUT_TAIL));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const started = child;
    const exited = new Promise<void>((resolve) => {
      started.once('exit', () => resolve());
      started.once('error', (error) => {
        keep(Buffer.from(`${spec.command}: ${error.message}\n`));
        resolve();
      });
    });
    const registry: RunningRegistry = {
      name: spec.name,
      url: `http://${host}`,
      dataDir,
      pid: started.pid ?? -1,
      memory: () => (started.pid === undefined ? undefined : readMemory(started.pid)),
      output: () => output,
      stop: () => stopProcess(started, exited).finally(stopSync),
      stopSync,
    };
    await waitReady(registry.url, exited, () => `${spec.name} (${spec.command}) did not start:\n${output}`);
    return registry;
  } catch (error) {
    stopSync();
    throw error;
  }
}

async function stopProcess(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

async function waitReady(url: string, exited: Promise<void>, failure: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await answers(`${url}/v2/`))) {
    if (gone || Date.now() > deadline) throw new Error(failure());
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Whether GET url gets any HTTP response (200, 401, …). */
function answers(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get(url, { timeout: 1000 }, (response) => {
      response.resume();
      resolve(true);
    });
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Flushes dirty pages, so the previous run's writes do not slow the next one. */
export function syncDisks(): Promise<void> {
  return new Promise((resolve) => spawn('sync', { stdio: 'ignore' }).once('close', () => resolve()).once('error', () => resolve()));
}

/** The checkout this benchmark was built from (the folder holding package.json). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the project root (package.json)');
    dir = parent;
  }
  return dir;
}
