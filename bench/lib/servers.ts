// Starts and stops the registries that compare.ts benchmarks, each with its data in a fresh
// temporary directory that is removed when it stops.
import { referenceConfig } from '../../test/support/reference-registry.js';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_TAIL = 64 * 1024;

export interface RunningRegistry {
  name: string;
  url: string;
  dataDir: string;
  /** The last 64 KiB of the process's stdout and stderr. */
  output: () => string;
  /** SIGTERM (SIGKILL after 5 s), then removes the data directory. */
  stop: () => Promise<void>;
  /** SIGKILL and remove the data directory, for exit and signal handlers. */
  stopSync: () => void;
}

interface ProcessSpec {
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

/** The bootstrap administrator of the Portcullis under benchmark (token auth is always on). */
export const PORTCULLIS_BENCH_ADMIN = { username: 'admin', password: 'bench-admin-password' } as const;

/** `node <main.js> serve`, configured through the environment. */
export const portcullisSpec = (mainJs: string, env: Record<string, string> = {}): ProcessSpec => ({
  name: 'portcullis',
  command: process.execPath,
  args: () => [mainJs, 'serve'],
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
