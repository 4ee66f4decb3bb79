// Makes sure the external commands an end-to-end test needs exist. On a fresh CI machine (root,
// Debian) it installs the missing ones with apt-get; elsewhere it fails with a clear message.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { CommandError, run } from './run.js';

/** Directories searched besides $PATH: dockerd lives in /usr/sbin, which a non-login PATH may lack. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Absolute path of `command` (searched in $PATH, then the usual bin/sbin dirs), or undefined. */
export async function findCommand(command: string): Promise<string | undefined> {
  if (isAbsolute(command)) return (await isExecutable(command)) ? command : undefined;
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, command);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

let aptUpdated: Promise<void> | undefined;
let aptQueue: Promise<unknown> = Promise.resolve();

const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive' };
const APT_TIMEOUT_MS = 15 * 60_000;

/** apt-get update, at most once per process. */
function aptUpdate(): Promise<void> {
  aptUpdated ??= run('apt-get', ['update'], { env: APT_ENV, timeoutMs: APT_TIMEOUT_MS }).then(
    () => undefined,
    (err: unknown) => {
      aptUpdated = undefined; // let a later call retry
      throw err;
    },
  );
  return aptUpdated;
}

async function aptInstall(packages: string[]): Promise<void> {
  await aptUpdate();
  await run('apt-get', ['install', '-y', ...packages], {
    env: APT_ENV,
    timeoutMs: APT_TIMEOUT_MS,
  });
}

/**
 * Ensures every command in `commands` (command name → Debian package that provides it) is
 * installed, and returns each command's absolute path. Missing ones are installed with apt-get
 * when running as root; otherwise this throws an error naming the commands and packages.
 */
export async function ensureCommands(commands: Record<string, string>): Promise<Record<string, string>> {
  // Serialise concurrent calls: two apt-get processes would fight over the dpkg lock.
  const result = aptQueue.then(() => ensureNow(commands));
  aptQueue = result.catch(() => undefined);
  return result;
}

async function ensureNow(commands: Record<string, string>): Promise<Record<string, string>> {
  const missing: [string, string][] = [];
  for (const [command, pkg] of Object.entries(commands)) {
    if (!(await findCommand(command))) missing.push([command, pkg]);
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))];
    const list = missing.map(([command, pkg]) => `${command} (Debian package ${pkg})`).join(', ');
    if (process.getuid?.() !== 0) {
      throw new Error(
        `missing commands for end-to-end tests: ${list}. Not running as root, so not installing them; ` +
          `run: sudo apt-get update && sudo apt-get install -y ${packages.join(' ')}`,
      );
    }
    if (!(await findCommand('apt-get'))) {
      throw new Error(`missing commands for end-to-end tests: ${list}, and apt-get is not available to install them`);
    }
    try {
      await aptInstall(packages);
    } catch (err) {
      const detail = err instanceof CommandError ? err.message : String(err);
      throw new Error(`could not install ${packages.join(' ')} for end-to-end tests:\n${detail}`);
    }
  }
  const paths: Record<string, string> = {};
  for (const command of Object.keys(commands)) {
    const path = await findCommand(command);
    if (!path) throw new Error(`${command} is still missing after installing package ${commands[command] ?? '?'}`);
    paths[command] = path;
  }
  return paths;
}
