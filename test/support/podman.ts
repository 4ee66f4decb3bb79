// Runs podman with all of its state in one directory, so tests touch neither /etc nor
// /var/lib/containers/storage: its own --root/--runroot/--tmpdir, vfs storage (no fuse or
// overlay mounts), file-based events (no journald) and HOME set to the directory (podman reads
// $HOME/.config/containers). What it cannot be told to avoid: the shared blob info cache in
// /var/lib/containers/cache (hence fresh random layers per test) and /run/containers/networks.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type RunOptions, type RunResult } from './run.js';

export interface Podman {
  run(args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** `podman pull oci:DIR:TAG`; returns the image id (the config digest's hex). */
  pullOciLayout(dir: string, tag: string): Promise<string>;
}

/** Podman names an image pulled from oci:DIR `localhost/DIR`, so DIR must be a valid repository path. */
const REPOSITORY_PATH = /^(\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$/;

export async function isolatedPodman(dir: string): Promise<Podman> {
  const home = join(dir, 'home');
  await mkdir(home, { recursive: true });
  const global = [
    '--root', join(dir, 'root'),
    '--runroot', join(dir, 'runroot'),
    '--tmpdir', join(dir, 'libpod-tmp'),
    '--network-config-dir', join(dir, 'networks'),
    '--storage-driver', 'vfs',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
  const tmp = join(dir, 'tmp');
  await mkdir(tmp, { recursive: true });
  // TMPDIR: podman stages big files (archives, recompressed layers) there instead of /var/tmp.
  const runPodman = (args: readonly string[], options: RunOptions = {}) =>
    run('podman', [...global, ...args], { ...options, env: { HOME: home, TMPDIR: tmp, ...options.env } });
  return {
    run: runPodman,
    async pullOciLayout(layoutDir, tag) {
      if (!REPOSITORY_PATH.test(layoutDir)) {
        throw new Error(`podman cannot pull oci:${layoutDir}: it names the image localhost${layoutDir}, which is no valid repository`);
      }
      const { stdout } = await runPodman(['pull', '--quiet', `oci:${layoutDir}:${tag}`]);
      return stdout.trim().split('\n').pop() ?? '';
    },
  };
}
