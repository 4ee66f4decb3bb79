// The garbage collector as an operator runs it: on its schedule inside `serve` (gc.intervalSeconds),
// and by hand with `portcullis gc` beside the running server. A deleted image's blobs stop being
// served, their bytes leave the blob folder, the figures reach /metrics, and what is still tagged
// stays whole. Backend: embedded only (the collector itself is tested on both in test/gc and
// test/http/gc.test.ts).
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../support/cli.js';
import { adminClient, OCI_MANIFEST, type TestRegistry } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

/** Every file below `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath ?? entry.path, entry.name));
}

/** Stored copies of a blob: its committed files are named `<hex>.<generation>`. */
async function storedCopies(dataDir: string, digest: string): Promise<number> {
  const hex = digest.slice('sha256:'.length);
  return (await filesUnder(dataDir)).filter((path) => basename(path).startsWith(`${hex}.`)).length;
}

const GRACE_SECONDS = 5;

describe('garbage collection inside serve and by portcullis gc', () => {
  let server: RunningRegistry;
  let client: TestRegistry;

  before(async () => {
    // A grace of a few seconds: long enough for a push to link what it uploaded (a grace of 0
    // protects no push in flight, and the schedule runs every second), short enough for a test.
    server = await startPortcullis({
      env: { PORTCULLIS_GC_GRACE_SECONDS: String(GRACE_SECONDS), PORTCULLIS_GC_INTERVAL_SECONDS: '1' },
    });
    client = adminClient(server);
  });
  after(() => server?.stop());

  it('collects a deleted image on its schedule: its blobs unlinked, their bytes gone, the figures in /metrics', async () => {
    const kept = await client.pushImage('ops/gc', 'kept');
    const doomed = await client.pushImage('ops/gc', 'doomed');
    for (const blob of [doomed.config, ...doomed.layers]) assert.equal(await storedCopies(server.dataDir, blob.digest), 1);
    assert.equal((await client.fetch(`/v2/ops/gc/manifests/${doomed.descriptor.digest}`, { method: 'DELETE' })).status, 202);

    // Watched on disk only: a HEAD would restart the blobs' grace, as it does for a client
    // about to push a manifest that needs them. Links go after the grace, bytes a grace later.
    const deadline = Date.now() + 30_000 + 2 * GRACE_SECONDS * 1000;
    const gone = async () => {
      for (const blob of [doomed.config, ...doomed.layers]) if ((await storedCopies(server.dataDir, blob.digest)) !== 0) return false;
      return true;
    };
    while (!(await gone())) {
      assert.ok(Date.now() < deadline, 'the deleted image is collected at gc.intervalSeconds 1');
      await sleep(250);
    }
    for (const blob of [doomed.config, ...doomed.layers]) {
      assert.equal((await client.fetch(`/v2/ops/gc/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
    }

    // The image still tagged is whole and served.
    const manifest = await client.fetch('/v2/ops/gc/manifests/kept', { headers: { Accept: OCI_MANIFEST } });
    assert.equal(manifest.status, 200);
    for (const blob of [kept.config, ...kept.layers]) {
      const response = await client.fetch(`/v2/ops/gc/blobs/${blob.digest}`);
      assert.equal(response.status, 200);
      assert.equal(Buffer.from(await response.arrayBuffer()).length, blob.size);
    }

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const value = (pattern: RegExp) => Number(pattern.exec(metrics)?.[1] ?? 'NaN');
    assert.ok(value(/^portcullis_gc_runs_total\{outcome="ok"\} (\d+)/m) >= 1, metrics.split('\n').filter((line) => line.startsWith('portcullis_gc')).join('\n'));
    assert.ok(value(/^portcullis_gc_reclaimed_objects_total\{[^}]*\} (\d+)/m) >= 3);
    assert.match(metrics, /^portcullis_gc_queue_depth\{queue="blob_reviews"\} \d+/m);
  });

  it('runs one collection by hand beside the server, as a dry run first', async () => {
    const pushed = await client.pushImage('ops/by-hand', 'v1');
    assert.equal((await client.fetch(`/v2/ops/by-hand/manifests/${pushed.descriptor.digest}`, { method: 'DELETE' })).status, 202);
    // By hand, an operator may choose a grace of 0 for one collection (nothing is being pushed).
    const now = { PORTCULLIS_GC_GRACE_SECONDS: '0' };
    const dry = await runCli(['gc', '--dry-run', '--json'], { dataDir: server.dataDir, env: now });
    assert.equal(dry.code, 0, dry.stderr);
    assert.ok(JSON.parse(dry.stdout), 'the report is JSON');
    const run = await runCli(['gc'], { dataDir: server.dataDir, env: now });
    assert.equal(run.code, 0, run.stderr);
    assert.notEqual(run.stdout.trim(), '', 'it prints what it reclaimed');
    for (const blob of [pushed.config, ...pushed.layers]) {
      assert.equal((await client.fetch(`/v2/ops/by-hand/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
    }
  });
});
