// A `portcullis serve` process whose signals and exit status the test controls: the shared
// startPortcullis (./server.ts) stops with SIGTERM and a SIGKILL after 5 s and reports neither,
// which is all most tests want. Here: send any signal, wait for the exit and read its status,
// wait for a log line, and start again on the same data folder.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVER_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { CLI, freePort, TEST_ADMIN } from './server.js';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServeProcess {
  url: string;
  port: number;
  dataDir: string;
  admin: { username: string; password: string };
  child: ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /** Its exit, once it happened. */
  exited: Promise<Exit>;
  signal(name: NodeJS.Signals): void;
  /** Resolves once a printed line matches (checked every 20 ms), rejects after `ms`. */
  waitForOutput(pattern: RegExp, ms?: number): Promise<void>;
  /** SIGKILL if still running; removes the data folder when this helper made it. */
  dispose(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export interface ServeOptions {
  env?: Record<string, string>;
  /** Reuse a data folder (a restart); by default a fresh one, removed by dispose(). */
  dataDir?: string;
}

export async function startServe(options: ServeOptions = {}): Promise<ServeProcess> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'portcullis-serve-')));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, CLI, 'serve'], {
    env: {
      ...process.env,
      PORTCULLIS_LISTEN: `127.0.0.1:${port}`,
      PORTCULLIS_DATA_DIR: dataDir,
      PORTCULLIS_LOG_LEVEL: 'info',
      PORTCULLIS_ADMIN_PASSWORD: TEST_ADMIN.password,
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.stdout?.on('data', (data: Buffer) => (output += data.toString()));
  child.stderr?.on('data', (data: Buffer) => (output += data.toString()));
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`portcullis exited with ${child.exitCode}:\n${output}`);
    const ready = await fetch(`${url}/healthz`).then(
      (response) => response.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`portcullis did not start on ${url}:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return {
    url,
    port,
    dataDir,
    admin: { ...TEST_ADMIN },
    child,
    output: () => output,
    exited,
    signal: (name) => void child.kill(name),
    async waitForOutput(pattern, ms = 15_000) {
      const until = Date.now() + ms;
      while (!pattern.test(output)) {
        if (Date.now() > until) throw new Error(`no output matching ${pattern} within ${ms} ms:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async dispose() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
