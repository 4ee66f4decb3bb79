// Starts a real Portcullis process (the compiled CLI) for tests, on a free loopback port
// with a fresh data directory, and stops it again.
import { spawn, type ChildProcess } from 'node:child_process';
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

export async function startPortcullis(options: StartOptions = {}): Promise<RunningRegistry> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'portcullis-test-')));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', ...(options.args ?? [])], {
    env: {
      ...process.env,
      PORTCULLIS_LISTEN: host,
      PORTCULLIS_DATA_DIR: dataDir,
      PORTCULLIS_LOG_LEVEL: process.env.PORTCULLIS_LOG_LEVEL ?? 'info',
      PORTCULLIS_ADMIN_PASSWORD: TEST_ADMIN.password,
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
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
