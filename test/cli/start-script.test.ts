// `npm start` builds what changed (tsc is incremental, so an unchanged tree costs a second or two)
// and runs the registry on the embedded default.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { freePort } from '../support/server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('npm start', () => {
  it('builds if needed and serves the registry', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-npm-start-'));
    const port = await freePort();
    const child = spawn('npm', ['start', '--silent'], {
      cwd: ROOT,
      env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir, PORTCULLIS_LISTEN: `127.0.0.1:${port}`, PORTCULLIS_ADMIN_PASSWORD: 'a-start-script-password' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: npm, sh and node stop together
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const deadline = Date.now() + 120_000;
      let status = 0;
      while (Date.now() < deadline && child.exitCode === null) {
        status = await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.status, () => 0);
        if (status !== 0) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      // The registry answers with its token challenge: it is Portcullis, started by npm start.
      assert.equal(status, 401, `npm start did not serve the registry:\n${output}`);
      assert.doesNotMatch(output, /started without the flags/, 'npm start passes the Node.js flags the server is meant to run with');
    } finally {
      if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, 'SIGTERM');
      await exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
