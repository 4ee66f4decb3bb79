// A full disk answers 503 with a clear error on every write path, never 500, and leaves nothing
// half-written: no visible blob, no stray upload area, a session still at its last good size.
// Blob storage is a small tmpfs mounted by the test (root is needed to mount; CI runs as root).
// Backend: embedded only (a full disk under SQLite and the blob folder; test/run.mjs runs it once).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, expectError, randomName, sha256, type TestRegistry } from '../support/registry-client.js';

const run = promisify(execFile);
const root = process.getuid?.() === 0;

/** A 16 MiB tmpfs, mounted for the tests of one suite, holding the registry's blobs or its whole data folder. */
class SmallDisk {
  mountPoint = '';
  private running?: { server: RunningRegistry; registry: TestRegistry };

  constructor(private readonly place: 'blobs' | 'data folder') {
    before(() => this.mount());
    after(() => this.unmount());
  }

  get registry(): TestRegistry {
    if (!this.running) throw new Error('the registry on the small disk is not running');
    return this.running.registry;
  }

  private async mount(): Promise<void> {
    this.mountPoint = await mkdtemp(join(tmpdir(), 'portcullis-full-'));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', this.mountPoint]);
    const server = await startPortcullis(
      this.place === 'blobs' ? { env: { PORTCULLIS_STORAGE_FILESYSTEM_ROOT: this.mountPoint } } : { dataDir: this.mountPoint },
    );
    this.running = { server, registry: adminClient(server) };
  }

  private async unmount(): Promise<void> {
    await this.running?.server.stop();
    await run('umount', [this.mountPoint]).catch(() => undefined);
    await rm(this.mountPoint, { recursive: true, force: true });
  }
}

describe('blob storage that is full', { skip: root ? false : 'mounting a small tmpfs needs root' }, () => {
  const disk = new SmallDisk('blobs');

  const uploadAreas = async () => readdir(join(disk.mountPoint, '_uploads'));

  it('answers 503 to a monolithic push that does not fit, and keeps nothing of it', async () => {
    const repository = randomName();
    const bytes = randomBytes(20 * 1024 * 1024);
    const response = await disk.registry.fetch(`/v2/${repository}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
    await expectError(response, 503, 'UNAVAILABLE');
    assert.equal((await disk.registry.fetch(`/v2/${repository}/blobs/${sha256(bytes)}`, { method: 'HEAD' })).status, 404);
    assert.deepEqual(await uploadAreas(), []);
  });

  it('answers 503 to a chunk that does not fit, keeping the session at its last good size', async () => {
    const repository = randomName();
    const started = await disk.registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    const location = started.headers.get('Location') ?? '';
    const first = randomBytes(1024 * 1024);
    assert.equal((await disk.registry.fetch(location, { method: 'PATCH', body: first })).status, 202);
    const failed = await disk.registry.fetch(location, { method: 'PATCH', body: randomBytes(20 * 1024 * 1024) });
    const text = await failed.text();
    assert.equal(failed.status, 503, text);
    assert.match(text, /blob storage is unavailable \(it is full\)/);
    const status = await disk.registry.fetch(location);
    assert.equal(status.status, 204);
    assert.equal(status.headers.get('Range'), `0-${first.length - 1}`);
    // The session is still usable: finishing it with what it holds works.
    const done = await disk.registry.fetch(`${location}?digest=${sha256(first)}`, { method: 'PUT' });
    assert.equal(done.status, 201, await done.text());
  });

  it('answers 503 when joining the parts at commit does not fit, and the blob stays invisible', async () => {
    const repository = randomName();
    const started = await disk.registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    const location = started.headers.get('Location') ?? '';
    const parts = [randomBytes(2 * 1024 * 1024), randomBytes(2 * 1024 * 1024)];
    let offset = 0;
    for (const part of parts) {
      const response = await disk.registry.fetch(location, {
        method: 'PATCH',
        headers: { 'Content-Range': `${offset}-${offset + part.length - 1}`, 'Content-Type': 'application/octet-stream' },
        body: part,
      });
      assert.equal(response.status, 202, await response.text());
      offset += part.length;
    }
    // Fill what is left, so the joined copy cannot be written.
    const filler = join(disk.mountPoint, 'filler');
    await writeFile(filler, Buffer.alloc(1)).catch(() => undefined);
    await run('sh', ['-c', `dd if=/dev/zero of=${filler} bs=64k 2>/dev/null || true`]);
    const digest = sha256(Buffer.concat(parts));
    const failed = await disk.registry.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
    assert.equal(failed.status, 503, await failed.text());
    assert.equal((await disk.registry.fetch(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD' })).status, 404);
    // Space freed: the same session commits.
    await rm(filler);
    const committed = await disk.registry.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
    assert.equal(committed.status, 201, await committed.text());
    const get = await disk.registry.fetch(`/v2/${repository}/blobs/${digest}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), Buffer.concat(parts));
  });
});

describe('a metadata database on a full disk', { skip: root ? false : 'mounting a small tmpfs needs root' }, () => {
  const disk = new SmallDisk('data folder');

  it('answers 503 to a manifest push it cannot record, shows nothing of it, and takes it once there is room', async () => {
    const repository = randomName();
    const { manifest } = await disk.registry.pushImage(repository, 'v1');
    const filler = join(disk.mountPoint, 'filler');
    await run('sh', ['-c', `dd if=/dev/zero of=${filler} bs=64k 2>/dev/null || true`]);
    const moved = { ...manifest, annotations: { 'org.example.padding': 'x'.repeat(200_000) } };
    const body = JSON.stringify(moved);
    const put = () =>
      disk.registry.fetch(`/v2/${repository}/manifests/v2`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body });
    const refused = await put();
    const text = await refused.text();
    assert.equal(refused.status, 503, text);
    assert.match(text, /UNAVAILABLE/);
    assert.equal((await disk.registry.fetch(`/v2/${repository}/manifests/v2`, { method: 'HEAD' })).status, 404);
    assert.equal((await disk.registry.fetch(`/v2/${repository}/manifests/v1`, { method: 'HEAD' })).status, 200, 'what was stored stays');
    await rm(filler);
    const accepted = await put();
    assert.equal(accepted.status, 201, await accepted.text());
  });
});
