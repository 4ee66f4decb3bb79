// Runs an external command (a container client) without a shell, with a timeout, and turns a
// failure into an error that shows the command line, exit status, stdout and stderr.
import { execFile, type ExecFileException } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface RunOptions {
  /** Extra environment variables, merged over process.env (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill the command after this long; default 180 s (vfs storage drivers are slow). */
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 180_000;

/** Keeps error messages readable: the end of long outputs is where clients print their error. */
function tail(text: string, max = 6000): string {
  return text.length <= max ? text : `[…${text.length - max} chars cut…]\n${text.slice(-max)}`;
}

export class CommandError extends Error {
  constructor(
    readonly commandLine: string,
    readonly exitCode: number | string | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    const status = timedOut ? 'timed out' : signal ? `was killed by ${signal}` : `exited with ${String(exitCode)}`;
    super(`command ${status}: ${commandLine}\n--- stdout ---\n${tail(stdout)}\n--- stderr ---\n${tail(stderr)}`);
    this.name = 'CommandError';
  }
}

export function mergeEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(quote).join(' ');
}

type ExecFailure = ExecFileException;

function isExecFailure(err: unknown): err is ExecFailure {
  return err instanceof Error && ('code' in err || 'signal' in err);
}

export async function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeout = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const line = commandLine(cmd, args);
  if (process.env.PORTCULLIS_E2E_VERBOSE) process.stderr.write(`+ ${line}\n`);
  try {
    const { stdout, stderr } = await execFileAsync(cmd, [...args], {
      env: mergeEnv(options.env),
      cwd: options.cwd,
      timeout,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
    });
    return { stdout, stderr };
  } catch (err) {
    if (!isExecFailure(err)) throw err;
    const timedOut = err.killed === true && err.signal === 'SIGKILL';
    throw new CommandError(line, err.code ?? null, err.signal ?? null, err.stdout ?? '', err.stderr ?? '', timedOut);
  }
}
