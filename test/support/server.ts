// Starts a real Portcullis process (the compiled CLI) for tests, on a free loopback port
// with a fresh data directory, and stops it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { SERVER_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** The bootstrap administrator every test registry starts with. */
export const TEST_ADMIN = { username: 'admin', password: 'test-admin-password' } as const;

export interface RunningRegistry {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  /** Credentials of the bootstrap administrator. */
  admin: { username: string; password: string };
  /** host:port, as container clients want it */
  host: string;
  dataDir: string;
  /** Everything the process printed so far (pino JSON lines on stdout, anything on stderr). */
  output(): string;
  stop(): Promise<void>;
  /** Kills the process without any chance to clean up (a crash); the data directory stays. */
  crash(): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Reuse a data directory (e.g. to test a restart); by default a fresh temp dir is made and removed on stop. */
  dataDir?: string;
  args?: string[];
  /** 'https' when the test configures tls.*: readiness is then a TCP connect (the CA is the test's). */
  scheme?: 'http' | 'https';
  /** Node.js flags before the script; by default the ones `portcullis serve` is meant to run with. */
  nodeFlags?: readonly string[];
}

// A test file that fails or is killed must not leave registries running behind it.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function tcpConnect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

/**
 * PORTCULLIS_TEST_BACKEND=postgres-s3 (test/run.mjs sets it for its second pass over the HTTP
 * suites): a server whose test chose no metadata or storage driver gets a fresh PostgreSQL
 * database and a fresh bucket of the run's S3 gateway instead of SQLite and a folder — one pair per
 * data directory, so a restart on the same directory finds what it stored.
 */
const PRODUCTION_BACKEND = 'postgres-s3';
const productionBackends = new Map<string, Promise<{ env: Record<string, string>; remove(): Promise<void> }>>();
/** The drivers' environment of each data directory of this pass, once created. */
const backendEnvs = new Map<string, Record<string, string>>();

/**
 * The environment that reaches the metadata and storage of the server on `dataDir` (for a CLI
 * command on its data); empty on the embedded default.
 */
export function backendEnvOf(dataDir: string): Record<string, string> {
  return backendEnvs.get(dataDir) ?? {};
}

function productionBackendFor(dataDir: string, env: Record<string, string> = {}): Promise<Record<string, string>> | undefined {
  if (process.env.PORTCULLIS_TEST_BACKEND !== PRODUCTION_BACKEND) return undefined;
  if (env.PORTCULLIS_METADATA_DRIVER !== undefined || env.PORTCULLIS_STORAGE_DRIVER !== undefined) return undefined;
  let backend = productionBackends.get(dataDir);
  if (!backend) {
    backend = (async () => {
      // Loaded only for this pass: the S3 support pulls in the AWS SDK (and, named through a
      // variable, it does not make test/run.mjs start a gateway for every file that starts a server).
      const s3Support = './s3.js';
      const { freshBucket, storageEnv } = (await import(s3Support)) as typeof import('./s3.js');
      const { createTestDatabase, postgresEnv } = await import('./postgres.js');
      const database = await createTestDatabase();
      const bucket = await freshBucket('pass');
      const env = { ...postgresEnv(database), ...storageEnv(bucket) };
      backendEnvs.set(dataDir, env);
      return {
        env,
        remove: async () => {
          await bucket.remove();
          await database.drop();
        },
      };
    })();
    productionBackends.set(dataDir, backend);
  }
  return backend.then((created) => created.env);
}

/** Drops the databases and buckets of this pass once the test file is done with its servers. */
async function removeProductionBackend(dataDir: string): Promise<void> {
  const backend = productionBackends.get(dataDir);
  if (!backend) return;
  productionBackends.delete(dataDir);
  backendEnvs.delete(dataDir);
  await (await backend).remove();
}
let cleaning = false;
process.on('beforeExit', () => {
  if (cleaning || productionBackends.size === 0) return;
  cleaning = true;
  void Promise.all([...productionBackends.keys()].map((dir) => removeProductionBackend(dir).catch(() => undefined)));
});

export async function startPortcullis(options: StartOptions = {}): Promise<RunningRegistry> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'portcullis-test-')));
  const backendEnv = (await productionBackendFor(dataDir, options.env)) ?? {};
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeFlags ?? SERVER_NODE_FLAGS), CLI, 'serve', ...(options.args ?? [])], {
    env: {
      ...process.env,
      PORTCULLIS_LISTEN: host,
      PORTCULLIS_DATA_DIR: dataDir,
      PORTCULLIS_LOG_LEVEL: process.env.PORTCULLIS_LOG_LEVEL ?? 'info',
      PORTCULLIS_ADMIN_PASSWORD: TEST_ADMIN.password,
      ...backendEnv,
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const url = `${options.scheme ?? 'http'}://${host}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`portcullis exited with ${child.exitCode}:\n${output}`);
    try {
      if (options.scheme === 'https') await tcpConnect(port);
      else await fetch(`${url}/v2/`);
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`portcullis did not start listening on ${host}:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return {
    url,
    admin: { ...TEST_ADMIN },
    host,
    dataDir,
    output: () => output,
    async crash() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      if (ownDir) {
        await rm(dataDir, { recursive: true, force: true });
        await removeProductionBackend(dataDir);
      }
    },
  };
}
