// Starts Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port, with the
// same RunningRegistry interface as startPortcullis(), so end-to-end tests can be checked
// against a reference implementation: PORTCULLIS_E2E_REGISTRY=reference.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCommands } from './packages.js';
import { freePort, TEST_ADMIN, type RunningRegistry } from './server.js';

/** docker-registry's config.yml: filesystem storage with deletes enabled, on `host`. */
export function referenceConfig(options: { storageDir: string; host: string; logLevel: string; accessLog: boolean }): string {
  return [
    'version: 0.1',
    'log:',
    `  level: ${options.logLevel}`,
    '  accesslog:',
    `    disabled: ${!options.accessLog}`,
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${options.storageDir}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: ${options.host}`,
    '',
  ].join('\n');
}

export async function startReferenceRegistry(): Promise<RunningRegistry> {
  const { 'docker-registry': binary } = await ensureCommands({ 'docker-registry': 'docker-registry' });
  const dataDir = await mkdtemp(join(tmpdir(), 'reference-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const configPath = join(dataDir, 'config.yml');
  // warn: the access log still shows every request
  await writeFile(configPath, referenceConfig({ storageDir: join(dataDir, 'storage'), host, logLevel: 'warn', accessLog: true }));
  let output = '';
  const child = spawn(binary ?? 'docker-registry', ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  const url = `http://${host}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry exited with ${child.exitCode}:\n${output}`);
    }
    try {
      await fetch(`${url}/v2/`);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`docker-registry did not start listening on ${host}:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // The reference registry runs without auth; the credentials are never asked for.
  return { url, admin: { ...TEST_ADMIN }, host, dataDir, output: () => output, stop, crash: stop };
}
