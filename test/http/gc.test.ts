// Garbage collection while the registry serves: 16 clients push images sharing one base layer
// into four repositories, move a tag with every push and delete images, while a collector with a
// grace of 0 runs beside the server over and over, as `portcullis gc` does (and with two
// repositories deleting untagged manifests). Afterwards: every image still tagged, and every
// untagged one its repository keeps, is complete and pullable over HTTP, byte for byte; every
// referenced blob has its link, its row and its bytes; every deleted or pruned image is gone, and
// its garbage with it: what is stored is exactly the distinct blobs of what remains (counted in
// the folder or the bucket before and after). A push that lost a race (its blob collected
// between upload and manifest: a grace of 0 protects no push in flight) is refused cleanly and
// pushed again, as clients do, and given up after a few refusals.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { gcSettingsOf, type GcReport } from '../../src/gc/index.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, OCI_MANIFEST, randomName, sha256, type TestRegistry } from '../support/registry-client.js';
import { besideServer, type BesideServer } from '../gc/beside-server.js';
import { assertConsistent } from '../gc/support.js';

const PUSHERS = 16;
const IMAGES_PER_PUSHER = 4;
/** Manifest PUTs a client makes for one image before it gives up. */
const MAX_ATTEMPTS = 10;

interface Blob {
  digest: string;
  size: number;
}

interface Image {
  repository: string;
  digest: string;
  payload: Buffer;
  blobs: Blob[];
}

describe('garbage collection while 16 clients push, retag and delete', () => {
  let server: RunningRegistry;
  let client: TestRegistry;
  let beside: BesideServer;

  before(async () => {
    server = await startPortcullis();
    client = adminClient(server);
    beside = await besideServer(server);
  });
  after(async () => {
    await beside?.close();
    await server?.stop();
  });

  async function pushBlob(repository: string, bytes: Buffer): Promise<Blob> {
    const digest = sha256(bytes);
    const response = await client.fetch(`/v2/${repository}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes });
    assert.equal(response.status, 201, await response.text());
    return { digest, size: bytes.length };
  }

  let refusedPushes = 0;

  let abandonedPushes = 0;

  /**
   * Pushes an image as a client does: HEAD each blob, upload what is missing, PUT the manifest.
   * A manifest refused because the collector took a blob in between (a grace of 0 protects no
   * push in flight) gets the blobs it names uploaded again and is sent again; after a few
   * refusals the client gives up (undefined), as a person would have to retry.
   */
  async function pushImage(repository: string, tag: string, layers: Buffer[]): Promise<Image | undefined> {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, tag, nonce: randomName() }));
    const contents = [config, ...layers];
    const blobs = contents.map((bytes) => ({ digest: sha256(bytes), size: bytes.length }));
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...blobs[0] },
      layers: blobs.slice(1).map((blob) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...blob })),
    };
    const payload = Buffer.from(JSON.stringify(manifest));
    for (const [i, bytes] of contents.entries()) {
      const head = await client.fetch(`/v2/${repository}/blobs/${blobs[i]!.digest}`, { method: 'HEAD' });
      if (head.status !== 200) await pushBlob(repository, bytes);
    }
    for (let attempt = 1; ; attempt++) {
      const response = await client.fetch(`/v2/${repository}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: payload });
      const text = await response.text();
      if (response.status === 201) return { repository, digest: sha256(payload), payload, blobs };
      assert.equal(response.status, 400, text);
      // The blobs the registry names as missing are uploaded again, and the manifest follows.
      const { errors } = JSON.parse(text) as { errors: { code: string; detail?: { missing?: { digest: string }[] } }[] };
      assert.equal(errors[0]?.code, 'MANIFEST_BLOB_UNKNOWN', text);
      refusedPushes++;
      if (attempt === MAX_ATTEMPTS) {
        abandonedPushes++;
        return undefined;
      }
      for (const missing of errors[0]?.detail?.missing ?? []) await pushBlob(repository, contents[blobs.findIndex((blob) => blob.digest === missing.digest)] as Buffer);
    }
  }

  async function deleteManifest(image: Image): Promise<void> {
    const response = await client.fetch(`/v2/${image.repository}/manifests/${image.digest}`, { method: 'DELETE' });
    assert.equal(response.status, 202, await response.text());
  }

  /** Pulls an image whole over HTTP: the manifest by digest, then each blob, checked byte for byte. */
  async function assertPullable(image: Image, why: string): Promise<void> {
    const manifest = await client.fetch(`/v2/${image.repository}/manifests/${image.digest}`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(manifest.status, 200, `${why}: ${image.repository}@${image.digest}`);
    assert.ok(Buffer.from(await manifest.arrayBuffer()).equals(image.payload));
    for (const blob of image.blobs) {
      const response = await client.fetch(`/v2/${image.repository}/blobs/${blob.digest}`);
      assert.equal(response.status, 200, `${why}: blob ${blob.digest} of ${image.repository}@${image.digest}`);
      assert.equal(sha256(Buffer.from(await response.arrayBuffer())), blob.digest);
    }
  }

  async function assertGone(image: Image, why: string): Promise<void> {
    const response = await client.fetch(`/v2/${image.repository}/manifests/${image.digest}`, { method: 'HEAD' });
    assert.equal(response.status, 404, `${why}: ${image.repository}@${image.digest}`);
  }

  const storedBytes = async () => [...(await beside.stored()).values()].reduce((sum, size) => sum + size, 0);

  it('leaves every remaining image whole and pullable, every referenced blob with its row and bytes, and no garbage', async (t) => {
    const run = randomName('gc');
    const repositories = [`${run}/keep/a`, `${run}/keep/b`, `${run}/prune/a`, `${run}/prune/b`];
    const settings = gcSettingsOf({ dataDir: server.dataDir, gc: { graceSeconds: 0, untagged: { default: 'keep', delete: [`${run}/prune/**`] } } });
    const collector = beside.collector(settings);
    const base = randomBytes(256 * 1024);
    const storedAtStart = await storedBytes();

    const reports: GcReport[] = [];
    let pushing = true;
    const collecting = (async () => {
      while (pushing) {
        // One collection after another, half a second apart: with a grace of 0 nothing protects a
        // push between its uploads and its manifest (the grace is what does), so back to back
        // collections would starve the pushes (whose uploads take longest on S3) rather than race them.
        reports.push(await collector.collect({ orphanSweepEveryMs: 60_000 }));
        await sleep(500);
      }
    })();

    /** What the test expects at the end, per image: tagged, untagged (kept or pruned by its repository), or deleted. */
    const tagged: Image[] = [];
    const untagged: Image[] = [];
    const deleted: Image[] = [];
    try {
      await Promise.all(
        Array.from({ length: PUSHERS }, async (_, pusher) => {
          const repository = repositories[pusher % repositories.length] as string;
          const images: (Image | undefined)[] = [];
          const ownTag = new Set<Image>();
          let latest: Image | undefined;
          for (let k = 0; k < IMAGES_PER_PUSHER; k++) {
            // Each push moves the pusher's `latest` tag; odd images get a tag of their own too.
            const image = await pushImage(repository, `p${pusher}-latest`, [base, randomBytes(4096 + pusher * 16 + k)]);
            images.push(image);
            if (image) latest = image;
            if (image && k % 2 === 1) {
              const own = await client.fetch(`/v2/${repository}/manifests/p${pusher}-v${k}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: image.payload });
              assert.equal(own.status, 201, await own.text()); // it is tagged `latest`: nothing of it can have gone
              ownTag.add(image);
            }
            const victim = images[1];
            if (k === 2 && victim) {
              await deleteManifest(victim); // by digest: with its tags
              deleted.push(victim);
              ownTag.delete(victim);
              if (latest === victim) latest = undefined;
            }
          }
          for (const image of images) {
            if (!image || deleted.includes(image)) continue;
            (image === latest || ownTag.has(image) ? tagged : untagged).push(image);
          }
        }),
      );
    } finally {
      pushing = false;
      await collecting;
    }

    const storedBeforeFinal = await storedBytes();
    // Once more with nothing running beside: what the last pushes and deletes left (cascades take a
    // run each). On PostgreSQL a review whose row a client's transaction held was deferred, due
    // again only after the collector's retry delay (30 s): these runs see the clock past it.
    const afterRetries = beside.collector(settings, { now: () => Date.now() + 60_000 });
    for (let i = 0; i < 5; i++) {
      const report = await afterRetries.collect();
      reports.push(report);
      if (report.manifests.reviewed === 0 && report.blobLinks.reviewed === 0) break;
    }

    assert.ok(tagged.length + untagged.length >= PUSHERS, 'pushes got through');
    for (const image of tagged) await assertPullable(image, 'tagged');
    for (const image of untagged) {
      if (image.repository.includes('/keep/')) await assertPullable(image, 'untagged, kept by its repository');
      else await assertGone(image, 'untagged, pruned by its repository');
    }
    for (const image of deleted) await assertGone(image, 'deleted');
    await assertConsistent(beside);
    assert.deepEqual(await beside.db('gc_storage_deletes').pluck('storage_key'), [], "every deleted row's bytes went (grace 0: no backup window)");

    // What is stored is exactly the distinct blobs of what remains (the sibling images too).
    const remaining = (await beside.db('manifest_references as mr').join('blobs as b', 'b.digest', 'mr.digest').distinct('b.digest', 'b.size')) as { digest: string; size: number | string }[];
    const expected = remaining.reduce((sum, row) => sum + Number(row.size), 0);
    const mine = new Set([...tagged, ...untagged.filter((image) => image.repository.includes('/keep/'))].flatMap((image) => image.blobs.map((blob) => blob.digest)));
    assert.ok([...mine].every((digest) => remaining.some((row) => row.digest === digest)), 'every blob of a remaining image is among them');
    const storedAtEnd = await storedBytes();
    if (storedAtEnd - storedAtStart !== expected) {
      const unreferenced = await beside.db('blobs as b').whereNotExists(beside.db('manifest_references as mr').whereRaw('mr.digest = b.digest')).select('b.digest', 'b.size', 'b.storage_key', 'b.created_at');
      const links = await beside.db('repository_blobs as rb').join('repositories as r', 'r.id', 'rb.repository_id').whereIn('rb.digest', unreferenced.map((row: { digest: string }) => row.digest)).select('r.name', 'rb.digest', 'rb.created_at');
      const reviews = await beside.db('gc_blob_reviews').whereIn('digest', unreferenced.map((row: { digest: string }) => row.digest)).select('*');
      t.diagnostic(`unreferenced blobs: ${JSON.stringify(unreferenced)}; their links: ${JSON.stringify(links)}; their reviews: ${JSON.stringify(reviews)}`);
    }
    assert.equal(storedAtEnd - storedAtStart, expected, 'stored bytes are the remaining images’ distinct blobs, nothing more');
    const reclaimed = reports.reduce((sum, report) => sum + report.reclaimed.bytes, 0);
    assert.ok(reclaimed > 0 && storedBeforeFinal >= storedAtEnd, 'garbage was reclaimed');
    const links = reports.reduce((sum, report) => sum + report.blobLinks.deleted, 0);
    t.diagnostic(
      `${reports.length} collections beside ${PUSHERS} pushers: ${links} links deleted, ${reclaimed} bytes reclaimed; ` +
        `${refusedPushes} manifest PUTs refused (a blob collected between its upload and the manifest, grace 0), ${abandonedPushes} images given up; ` +
        `${tagged.length} tagged, ${untagged.length} untagged and ${deleted.length} deleted images checked; ` +
        `stored ${storedBeforeFinal} → ${storedAtEnd} bytes at the final collection`,
    );
  });
});
