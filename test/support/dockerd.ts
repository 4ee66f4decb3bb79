// Starts a private Docker daemon for end-to-end tests, without touching /etc or the system's
// daemon: vfs storage, no iptables, no bridge, its own data-root, exec-root, pidfile, socket and
// containerd namespaces in a temp dir, and an empty daemon.json instead of /etc/docker/daemon.json.
// 127.0.0.0/8 is an insecure registry by default, so `docker push 127.0.0.1:PORT/...` speaks
// plain HTTP without extra configuration.
//
// Docker client: this machine has /usr/local/bin/docker (client 28, first in PATH) and
// /usr/bin/docker (Debian's 20.10, from the same docker.io package as dockerd). Both work against
// dockerd 20.10 (client 28 negotiates the API down from 1.50 to 1.41; the push and pull are done
// by the daemon either way), but only /usr/bin/docker comes with the package that
// ensureCommands() installs on a fresh machine and is guaranteed to speak the daemon's API
// version, so that is the one used. PORTCULLIS_E2E_DOCKER_CLIENT overrides it.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCommands, findCommand } from './packages.js';
import { run, type RunOptions, type RunResult } from './run.js';

export interface RunningDockerd {
  /** Absolute path of the docker client used. */
  docker: string;
  /** DOCKER_HOST and DOCKER_CONFIG for the client. */
  env: { DOCKER_HOST: string; DOCKER_CONFIG: string };
  /** Runs the docker client against this daemon. */
  run(args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** What dockerd printed so far. */
  output(): string;
  /** Stops dockerd (and its containerd child) and removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface DockerdOptions {
  /** How long to wait for `docker version` to answer; default 90 s. */
  startTimeoutMs?: number;
}

/** Debian's client, matching dockerd 20.10; see the comment at the top of this file. */
async function dockerClient(): Promise<string> {
  const override = process.env.PORTCULLIS_E2E_DOCKER_CLIENT;
  if (override) return override;
  const debian = await findCommand('/usr/bin/docker');
  if (debian) return debian;
  const inPath = await findCommand('docker');
  if (!inPath) throw new Error('no docker client found (Debian package docker.io installs /usr/bin/docker)');
  return inPath;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Mount points at or below `dir` (dockerd bind-mounts its data-root onto itself), deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts
    .split('\n')
    .map((line) => line.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((point): point is string => point !== undefined && (point === dir || point.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
}

export async function startDockerd(options: DockerdOptions = {}): Promise<RunningDockerd> {
  const { dockerd: dockerdPath } = await ensureCommands({ dockerd: 'docker.io', containerd: 'containerd' });
  const docker = await dockerClient();
  // Short path: the socket's must stay under the 108-byte limit of unix socket paths.
  const dir = await mkdtemp(join(tmpdir(), 'pc-dockerd-'));
  const socket = join(dir, 'docker.sock');
  const configDir = join(dir, 'client-config');
  await mkdir(configDir);
  const daemonJson = join(dir, 'daemon.json');
  await writeFile(daemonJson, '{}\n');
  const env = { DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: configDir };

  let output = '';
  const child = spawn(
    dockerdPath ?? 'dockerd',
    [
      '--config-file', daemonJson,
      '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--bridge=none',
      '--storage-driver=vfs',
      '--data-root', join(dir, 'root'),
      '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'dockerd.pid'),
      '-H', env.DOCKER_HOST,
      '--containerd-namespace', `portcullis-e2e-${process.pid}`,
      '--containerd-plugins-namespace', `portcullis-e2e-${process.pid}-plugins`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', (err) => (output += `\nspawn error: ${err.message}\n`));
  const running = () => child.exitCode === null && child.signalCode === null;

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // containerd's pid is known only once dockerd started it; read it before dockerd removes it.
    const containerdPid = Number.parseInt(
      await readFile(join(dir, 'exec', 'containerd', 'containerd.pid'), 'utf8').catch(() => ''),
      10,
    );
    if (running() && child.pid !== undefined) {
      child.kill('SIGTERM');
      if (!(await waitUntil(() => !running(), 20_000))) child.kill('SIGKILL');
      await exited;
    }
    if (Number.isInteger(containerdPid) && containerdPid > 0) {
      if (!(await waitUntil(() => !isAlive(containerdPid), 10_000))) {
        process.kill(containerdPid, 'SIGKILL');
        await waitUntil(() => !isAlive(containerdPid), 5_000);
      }
    }
    // A dockerd that was killed leaves its data-root bind mount behind; rm would fail with EBUSY.
    for (const point of await mountsUnder(dir)) {
      await run('umount', ['-l', point]).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const runDocker = (args: readonly string[], runOptions: RunOptions = {}) =>
    run(docker, args, { ...runOptions, env: { ...env, ...runOptions.env } });

  const deadline = Date.now() + (options.startTimeoutMs ?? 90_000);
  let lastError = '';
  for (;;) {
    if (!running()) {
      await stop();
      throw new Error(`dockerd exited (${String(child.exitCode ?? child.signalCode)}) before answering:\n${output}`);
    }
    try {
      await runDocker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 10_000 });
      break;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`dockerd did not answer \`${docker} version\` in time:\n${lastError}\n--- dockerd ---\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }

  return { docker, env, run: runDocker, output: () => output, stop };
}
