// End-to-end: a private dockerd loads a docker-archive (made by skopeo from an OCI layout),
// pushes it to the registry (Docker schema 2 manifest; PATCH chunked, no Content-Type), removes
// it and pulls it back. Docker recompresses layers, so only the config and diff_ids are kept.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DOCKER_MANIFEST_V2, parseLocalImage, skopeoCopy } from '../support/clients.js';
import { startDockerd, type RunningDockerd } from '../support/dockerd.js';
import { E2E, E2E_TEST_TIMEOUT_MS } from '../support/e2e.js';
import { assertLocalImage, assertRegistryServes } from '../support/image-checks.js';
import { createOciLayout, type OciLayout } from '../support/oci-layout.js';

const REPO = 'e2e/docker';
const LOCAL_NAME = 'e2e/docker-source';

describe('docker against the registry', { timeout: E2E_TEST_TIMEOUT_MS }, () => {
  const e2e = new E2E('docker', { skopeo: 'skopeo', dockerd: 'docker.io' });
  let image: OciLayout;
  let dockerd: RunningDockerd;
  let pushedDigest = '';
  const ref = () => e2e.ref(REPO, image.tag);
  const docker = (...args: string[]) => dockerd.run(args);
  const inspectLocal = async (name: string) =>
    parseLocalImage((await docker('image', 'inspect', name)).stdout, `docker image inspect ${name}`);

  before(async () => {
    await e2e.start();
    image = await createOciLayout({ dir: await e2e.tempDir('source-layout'), layers: 3 });
    dockerd = await startDockerd();
    const started = dockerd;
    e2e.defer(() => started.stop());
    e2e.defer(() => e2e.saveLog('dockerd', started.output()));
  });
  after(() => e2e.stop());

  it(
    'loads a docker-archive made from the OCI layout',
    e2e.step(async () => {
      const archive = join(e2e.tmp, 'image.tar');
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker-archive:${archive}:${LOCAL_NAME}:${image.tag}`);
      const { stdout } = await docker('load', '--input', archive);
      assert.match(stdout, new RegExp(`Loaded image: ${LOCAL_NAME}:${image.tag}`));
      assertLocalImage(await inspectLocal(`${LOCAL_NAME}:${image.tag}`), image);
    }),
  );

  it(
    'logs in to the registry',
    e2e.step(async () => {
      const { username, password } = e2e.registry.admin;
      const { stdout } = await docker('login', '--username', username, '--password', password, e2e.host);
      assert.match(stdout, /Login Succeeded/);
    }),
  );

  it(
    'pushes it to the registry as a Docker schema 2 manifest',
    e2e.step(async () => {
      await docker('tag', `${LOCAL_NAME}:${image.tag}`, ref());
      const { stdout } = await docker('push', ref());
      const reported = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(stdout);
      assert.ok(reported?.[1], `docker push printed no digest:\n${stdout}`);
      pushedDigest = reported[1];
      await assertRegistryServes(e2e, { repository: REPO, tag: image.tag, manifestDigest: pushedDigest, mediaType: DOCKER_MANIFEST_V2 }, image);
    }),
  );

  it(
    'pulls it back by tag after removing the local image',
    e2e.step(async () => {
      await docker('rmi', `${LOCAL_NAME}:${image.tag}`, ref());
      assert.equal((await docker('images', '--all', '--quiet')).stdout.trim(), '', 'the image is still in local storage');
      const { stdout } = await docker('pull', ref());
      assert.match(stdout, new RegExp(`Digest: ${pushedDigest}`));
      assertLocalImage(await inspectLocal(ref()), image, e2e.ref(REPO, pushedDigest));
    }),
  );

  it(
    'pulls it back by digest',
    e2e.step(async () => {
      await docker('rmi', ref());
      await docker('pull', e2e.ref(REPO, pushedDigest));
      assertLocalImage(await inspectLocal(e2e.ref(REPO, pushedDigest)), image, e2e.ref(REPO, pushedDigest));
    }),
  );
});
