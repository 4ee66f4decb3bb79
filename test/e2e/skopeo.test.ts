// End-to-end: skopeo pushes an OCI layout to the registry, reads it back byte-for-byte, lists
// tags, copies between repositories (cross-repo blob mount) and deletes a manifest.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  digestsOf,
  inspectConfig,
  inspectRaw,
  listTags,
  readOciLayoutManifest,
  skopeo,
  skopeoCopy,
} from '../support/clients.js';
import { E2E, E2E_TEST_TIMEOUT_MS } from '../support/e2e.js';
import { createOciLayout, OCI_MANIFEST, type OciLayout } from '../support/oci-layout.js';
import { CommandError } from '../support/run.js';

const REPO = 'e2e/skopeo';
const COPY_REPO = 'e2e/skopeo-copy';

describe('skopeo against the registry', { timeout: E2E_TEST_TIMEOUT_MS }, () => {
  const e2e = new E2E('skopeo', { skopeo: 'skopeo' });
  let image: OciLayout;
  const expected = () => ({ manifestDigest: image.manifestDigest, configDigest: image.configDigest, layerDigests: image.layerDigests });

  before(async () => {
    await e2e.start();
    image = await createOciLayout({ dir: await e2e.tempDir('source-layout'), layers: 3 });
  });
  after(() => e2e.stop());

  it(
    'pushes a 3-layer OCI layout with the manifest digest unchanged',
    e2e.step(async () => {
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${e2e.ref(REPO, image.tag)}`);
      const served = await inspectRaw(e2e.ref(REPO, image.tag));
      assert.equal(served.manifest.mediaType, OCI_MANIFEST);
      assert.deepEqual(digestsOf(served), expected());
      const byDigest = await inspectRaw(e2e.ref(REPO, image.manifestDigest));
      assert.equal(byDigest.raw, served.raw, 'the manifest by digest differs from the manifest by tag');
      const config = await inspectConfig(e2e.ref(REPO, image.tag));
      assert.deepEqual(config.rootfs.diff_ids, image.diffIds);
    }),
  );

  it(
    'pulls the image back into a new OCI layout with identical digests',
    e2e.step(async () => {
      const dir = await e2e.tempDir('pulled-layout');
      await skopeoCopy(`docker://${e2e.ref(REPO, image.tag)}`, `oci:${dir}:${image.tag}`);
      const pulled = await readOciLayoutManifest(dir, image.tag);
      assert.deepEqual(digestsOf(pulled), expected());
    }),
  );

  it(
    'lists the tags of the repository',
    e2e.step(async () => {
      await skopeoCopy(`docker://${e2e.ref(REPO, image.tag)}`, `docker://${e2e.ref(REPO, 'second')}`);
      assert.deepEqual(await listTags(`${e2e.host}/${REPO}`), [image.tag, 'second'].sort());
      assert.equal((await inspectRaw(e2e.ref(REPO, 'second'))).digest, image.manifestDigest);
    }),
  );

  it(
    'copies the image to another repository by mounting its blobs',
    e2e.step(async () => {
      // --debug makes skopeo log each request; its blob info cache (/var/lib/containers/cache)
      // remembers that the layers live in REPO on this host, so it asks for a mount.
      const { stderr } = await skopeoCopy(
        `docker://${e2e.ref(REPO, image.tag)}`,
        `docker://${e2e.ref(COPY_REPO, image.tag)}`,
        { debug: true },
      );
      for (const digest of image.layerDigests) {
        const mountRequest = `mount=${encodeURIComponent(digest)}`;
        assert.ok(stderr.includes(mountRequest), `skopeo did not try to mount ${digest}:\n${stderr}`);
      }
      const mounted = stderr.split('\n').filter((line) => line.includes('mount OK')).length;
      assert.equal(mounted, image.layerDigests.length, `the registry did not honour every cross-repository mount:\n${stderr}`);
      assert.deepEqual(digestsOf(await inspectRaw(e2e.ref(COPY_REPO, image.tag))), expected());
    }),
  );

  it(
    'deletes the copy by digest and keeps the original intact',
    e2e.step(async () => {
      await skopeo(['delete', '--tls-verify=false', `docker://${e2e.ref(COPY_REPO, image.tag)}`]);
      for (const ref of [e2e.ref(COPY_REPO, image.tag), e2e.ref(COPY_REPO, image.manifestDigest)]) {
        await assert.rejects(inspectRaw(ref), (err: unknown) => {
          assert.ok(err instanceof CommandError, String(err));
          assert.match(err.stderr, /manifest unknown/i);
          return true;
        });
      }
      // An emptied repository may list no tags or be unknown altogether; either way not the tag.
      const tags = await listTags(`${e2e.host}/${COPY_REPO}`).catch((err: unknown) => {
        if (err instanceof CommandError && /name unknown|repository name not known/i.test(err.stderr)) return [];
        throw err;
      });
      assert.deepEqual(tags, []);

      // The original repository still serves the manifest and every blob.
      const dir = await e2e.tempDir('pulled-after-delete');
      await skopeoCopy(`docker://${e2e.ref(REPO, image.tag)}`, `oci:${dir}:${image.tag}`);
      assert.deepEqual(digestsOf(await readOciLayoutManifest(dir, image.tag)), expected());
    }),
  );
});
