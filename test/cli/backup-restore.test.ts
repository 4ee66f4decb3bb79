// A backup taken exactly as the README says (its shell blocks are run as written, with this
// test's folders), while the server runs, restores into a new data folder: the image comes
// back byte for byte, the administrator logs in with the same password, and tokens signed
// before the backup still verify (the signing keys came back too).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { requestToken, tokenFor } from '../auth/support.js';
import { ensureCommands } from '../support/packages.js';
import { OCI_MANIFEST, TestRegistry } from '../support/registry-client.js';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));
const MARKER = '<!-- test/cli/backup-restore.test.ts runs this block';
const REPOSITORY = 'team-a/app';
const ADMIN = { username: 'admin', password: 'the password before the backup' };

/** The shell blocks the README marks for this test, in order, without their `DATA=…` example line. */
function readmeScripts(): string[] {
  const lines = readFileSync(README, 'utf8').split('\n');
  const scripts: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!(lines[i] as string).startsWith(MARKER)) continue;
    assert.equal(lines[i + 1], '```sh', 'the marked block follows its marker');
    const end = lines.indexOf('```', i + 2);
    const block = lines.slice(i + 2, end);
    const examples = block.filter((line) => line.startsWith('DATA='));
    assert.equal(examples.length, 1, 'each block names its folders in one DATA=… line, which the test replaces');
    scripts.push(block.filter((line) => !line.startsWith('DATA=')).join('\n'));
  }
  return scripts;
}

function bash(script: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('bash', ['-euo', 'pipefail', '-c', script], { env: { ...process.env, ...env } }, (error, stdout, stderr) =>
      error ? reject(new Error(`${script}\nfailed: ${error.message}\n${stdout}${stderr}`)) : resolve(),
    );
  });
}

function cli(args: string[], dataDir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir } }, (error, stdout, stderr) =>
      error ? reject(new Error(`${args.join(' ')}: ${stderr}`)) : resolve(stdout),
    );
  });
}

async function bytesOf(registry: TestRegistry, path: string, accept?: string): Promise<{ status: number; bytes: Buffer; digest: string | null }> {
  const response = await registry.fetch(path, accept ? { headers: { Accept: accept } } : {});
  return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()), digest: response.headers.get('Docker-Content-Digest') };
}

let work: string;
let sqliteDirectory: string;
const running: RunningRegistry[] = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'portcullis-backup-'));
  // The README's online backup uses the sqlite3 tool (Debian package sqlite3).
  sqliteDirectory = dirname((await ensureCommands({ sqlite3: 'sqlite3' })).sqlite3 as string);
});
after(async () => {
  for (const server of running) await server.stop();
  await rm(work, { recursive: true, force: true });
});

describe('a backup as the README describes it', () => {
  it('restores into a new data folder: the image byte for byte, the same admin password, the same signing keys', async () => {
    const [backupScript, restoreScript] = readmeScripts();
    assert.ok(backupScript && restoreScript, 'the README marks a backup block and a restore block');
    assert.match(backupScript, /sqlite3 "\$DATA\/portcullis\.db" "\.backup /, 'the backup uses SQLite’s online backup');

    const config = join(work, 'portcullis.yaml');
    await writeFile(config, 'auth:\n  token:\n    ttlSeconds: 600\n');
    const original = join(work, 'original', 'data');
    const server = await startPortcullis({ dataDir: original, args: ['-c', config], env: { PORTCULLIS_ADMIN_PASSWORD: ADMIN.password } });
    running.push(server);
    const client = new TestRegistry(server.url, ADMIN);
    const image = await client.pushImage(REPOSITORY, 'v1', { layers: 3 });
    const manifest = await bytesOf(client, `/v2/${REPOSITORY}/manifests/v1`, OCI_MANIFEST);
    assert.equal(manifest.status, 200);
    const blobs = new Map<string, Buffer>();
    for (const { digest } of [image.config, ...image.layers]) {
      const blob = await bytesOf(client, `/v2/${REPOSITORY}/blobs/${digest}`);
      assert.equal(blob.status, 200);
      blobs.set(digest, blob.bytes);
    }
    const tokenFromBefore = await tokenFor(server.url, ADMIN, [`repository:${REPOSITORY}:pull`]);
    const keysBefore = await (await fetch(`${server.url}/auth/jwks`)).json();

    // The backup runs beside the live server.
    const backup = join(work, 'backup', 'today');
    await bash(backupScript, { DATA: original, BACKUP: backup, CONFIG: config, PATH: `${sqliteDirectory}${delimiter}${process.env.PATH ?? ''}` });
    assert.deepEqual((await readdir(backup)).sort(), ['blobs', 'keys', 'portcullis.db', 'portcullis.yaml']);
    // Pushed after the backup: not part of it.
    await client.pushImage(REPOSITORY, 'after-the-backup');
    await server.stop();

    const restored = join(work, 'restored', 'data');
    await bash(restoreScript, { DATA: restored, BACKUP: backup });
    assert.deepEqual((await readdir(restored)).sort(), ['blobs', 'keys', 'portcullis.db']);
    assert.equal(await cli(['user', 'list'], restored), 'admin (admin)\n');

    const again = await startPortcullis({
      dataDir: restored,
      args: ['-c', join(backup, 'portcullis.yaml')],
      // Would be the bootstrap password if the restored database were taken for a fresh one.
      env: { PORTCULLIS_ADMIN_PASSWORD: 'a password nobody should get' },
    });
    running.push(again);
    assert.doesNotMatch(again.output(), /created the bootstrap administrator/);

    assert.equal((await requestToken(again.url, { credentials: ADMIN })).status, 200, 'the admin password from before the backup');
    assert.equal((await requestToken(again.url, { credentials: { username: 'admin', password: 'a password nobody should get' } })).status, 401);
    assert.deepEqual(await (await fetch(`${again.url}/auth/jwks`)).json(), keysBefore, 'the same signing keys');

    const restoredClient = new TestRegistry(again.url, ADMIN);
    const pulled = await bytesOf(restoredClient, `/v2/${REPOSITORY}/manifests/v1`, OCI_MANIFEST);
    assert.equal(pulled.status, 200);
    assert.deepEqual(pulled.bytes, manifest.bytes);
    assert.equal(pulled.digest, image.descriptor.digest);
    for (const [digest, bytes] of blobs) {
      const blob = await bytesOf(restoredClient, `/v2/${REPOSITORY}/blobs/${digest}`);
      assert.equal(blob.status, 200, digest);
      assert.deepEqual(blob.bytes, bytes, digest);
    }
    assert.equal((await bytesOf(restoredClient, `/v2/${REPOSITORY}/manifests/after-the-backup`, OCI_MANIFEST)).status, 404);

    const withOldToken = await fetch(`${again.url}/v2/${REPOSITORY}/manifests/v1`, { headers: { Authorization: `Bearer ${tokenFromBefore}`, Accept: OCI_MANIFEST } });
    assert.equal(withOldToken.status, 200, 'a token signed before the backup verifies after the restore');
    assert.deepEqual(Buffer.from(await withOldToken.arrayBuffer()), manifest.bytes);
  });
});
