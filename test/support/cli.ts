// Runs the built `portcullis` CLI against a data folder, as an administrator would.
import { execFile } from 'node:child_process';
import { backendEnvOf, CLI } from './server.js';

export interface CliResult {
  stdout: string;
  stderr: string;
  code: number;
}

export function runCli(args: string[], options: { dataDir: string; env?: Record<string, string>; stdin?: string }): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, PORTCULLIS_DATA_DIR: options.dataDir, ...backendEnvOf(options.dataDir), ...options.env }, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(options.stdin ?? '');
  });
}
