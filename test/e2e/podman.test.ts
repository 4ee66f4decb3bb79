// End-to-end: podman (isolated storage, vfs) loads an OCI layout, pushes it to the registry
// (chunked PATCH uploads without Content-Length), removes it locally and pulls it back.
// Podman stores layers uncompressed and recompresses them on push, so the pushed manifest and
// layer digests differ from the layout's; the config digest and the diff_ids must not.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseLocalImage } from '../support/clients.js';
import { E2E, E2E_TEST_TIMEOUT_MS } from '../support/e2e.js';
import { assertLocalImage, assertRegistryServes } from '../support/image-checks.js';
import { createOciLayout, OCI_MANIFEST, type OciLayout } from '../support/oci-layout.js';
import { isolatedPodman, type Podman } from '../support/podman.js';

const REPO = 'e2e/podman';

describe('podman against the registry', { timeout: E2E_TEST_TIMEOUT_MS }, () => {
  const e2e = new E2E('podman', { skopeo: 'skopeo', podman: 'podman' });
  let image: OciLayout;
  let podman: Podman;
  let pushedDigest = '';
  const ref = () => e2e.ref(REPO, image.tag);
  const imageId = () => image.configDigest.slice('sha256:'.length);
  const inspectLocal = async (name: string) =>
    parseLocalImage((await podman.run(['image', 'inspect', name])).stdout, `podman image inspect ${name}`);

  before(async () => {
    await e2e.start();
    image = await createOciLayout({ dir: await e2e.tempDir('source-layout'), layers: 3 });
    podman = await isolatedPodman(await e2e.tempDir('podman'));
  });
  after(() => e2e.stop());

  it(
    'loads the OCI layout into its own storage',
    e2e.step(async () => {
      assert.equal(await podman.pullOciLayout(image.dir, image.tag), imageId());
      await podman.run(['tag', imageId(), ref()]);
      assertLocalImage(await inspectLocal(ref()), image);
    }),
  );

  it(
    'pushes it to the registry',
    e2e.step(async () => {
      const digestFile = join(e2e.tmp, 'podman-push.digest');
      await podman.run(['push', '--tls-verify=false', '--digestfile', digestFile, ref()]);
      pushedDigest = (await readFile(digestFile, 'utf8')).trim();
      assert.match(pushedDigest, /^sha256:[0-9a-f]{64}$/);
      await assertRegistryServes(e2e, { repository: REPO, tag: image.tag, manifestDigest: pushedDigest, mediaType: OCI_MANIFEST }, image);
    }),
  );

  it(
    'pulls it back by tag after removing the local image',
    e2e.step(async () => {
      await podman.run(['rmi', '--force', imageId()]);
      assert.equal((await podman.run(['images', '--quiet'])).stdout.trim(), '', 'the image is still in local storage');
      await podman.run(['pull', '--tls-verify=false', ref()]);
      assertLocalImage(await inspectLocal(ref()), image, e2e.ref(REPO, pushedDigest));
    }),
  );

  it(
    'pulls it back by digest',
    e2e.step(async () => {
      await podman.run(['rmi', '--force', imageId()]);
      await podman.run(['pull', '--tls-verify=false', e2e.ref(REPO, pushedDigest)]);
      assertLocalImage(await inspectLocal(e2e.ref(REPO, pushedDigest)), image, e2e.ref(REPO, pushedDigest));
    }),
  );
});
