// Immutable tags against real clients: skopeo, podman and docker cannot overwrite (nor skopeo
// delete) a tag a trust policy protects, and pushing the identical image again still works.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspectRaw, skopeo, skopeoCopy } from '../support/clients.js';
import { runCli } from '../support/cli.js';
import { startDockerd } from '../support/dockerd.js';
import { E2E, E2E_TEST_TIMEOUT_MS } from '../support/e2e.js';
import { createOciLayout, type OciLayout } from '../support/oci-layout.js';
import { isolatedPodman } from '../support/podman.js';
import { CommandError } from '../support/run.js';

const REPO = 'prod/e2e-immutable';

/** A client's refusal, as it reports the registry's 403. */
function refusedAsDenied(error: unknown): true {
  assert.ok(error instanceof CommandError, String(error));
  assert.match(`${error.stdout}\n${error.stderr}`, /denied|immutable|403/i);
  return true;
}

describe('immutable tags with real clients', { timeout: E2E_TEST_TIMEOUT_MS }, () => {
  const e2e = new E2E('immutable-tags', { skopeo: 'skopeo', podman: 'podman', dockerd: 'docker.io' });
  let first: OciLayout;
  let second: OciLayout;

  before(async () => {
    await e2e.start();
    const file = join(e2e.tmp, 'trust.yaml');
    await writeFile(file, `policies:\n  - repositories: prod/**\n    immutableTags: ["v*"]\n`);
    const applied = await runCli(['trust', 'apply', '-f', file], { dataDir: e2e.registry.dataDir });
    assert.equal(applied.code, 0, applied.stderr);
    // A running server re-reads its policies within auth.rulesCacheSeconds (2 s by default).
    await new Promise((resolve) => setTimeout(resolve, 2500));
    first = await createOciLayout({ dir: await e2e.tempDir('first'), layers: 1 });
    second = await createOciLayout({ dir: await e2e.tempDir('second'), layers: 1 });
  });
  after(() => e2e.stop());

  it(
    'skopeo: pushes v1 once, again unchanged, and is refused a different image and a delete',
    e2e.step(async () => {
      await skopeoCopy(`oci:${first.dir}:${first.tag}`, `docker://${e2e.ref(REPO, 'v1')}`);
      await skopeoCopy(`oci:${first.dir}:${first.tag}`, `docker://${e2e.ref(REPO, 'v1')}`);
      await assert.rejects(skopeoCopy(`oci:${second.dir}:${second.tag}`, `docker://${e2e.ref(REPO, 'v1')}`), refusedAsDenied);
      await assert.rejects(skopeo(['delete', '--tls-verify=false', `docker://${e2e.ref(REPO, 'v1')}`]), refusedAsDenied);
      assert.equal((await inspectRaw(e2e.ref(REPO, 'v1'))).digest, first.manifestDigest, 'v1 still names the first image');
    }),
  );

  it(
    'podman: cannot push another image over v1',
    e2e.step(async () => {
      const podman = await isolatedPodman(await e2e.tempDir('podman'));
      const id = await podman.pullOciLayout(second.dir, second.tag);
      await podman.run(['tag', id, e2e.ref(REPO, 'v1')]);
      await assert.rejects(podman.run(['push', '--tls-verify=false', e2e.ref(REPO, 'v1')]), refusedAsDenied);
      assert.equal((await inspectRaw(e2e.ref(REPO, 'v1'))).digest, first.manifestDigest);
      // Another tag the policy does not protect takes the same image.
      await podman.run(['tag', id, e2e.ref(REPO, 'candidate')]);
      await podman.run(['push', '--tls-verify=false', e2e.ref(REPO, 'candidate')]);
    }),
  );

  it(
    'docker: pushes v2 once, again unchanged, and is refused another image over it',
    e2e.step(async () => {
      const dockerd = await startDockerd();
      e2e.defer(() => dockerd.stop());
      const docker = (...args: string[]) => dockerd.run(args);
      const { username, password } = e2e.registry.admin;
      await docker('login', '--username', username, '--password', password, e2e.host);
      for (const [layout, name] of [[first, 'local/first'], [second, 'local/second']] as const) {
        const archive = join(e2e.tmp, `${name.replace('/', '-')}.tar`);
        await skopeoCopy(`oci:${layout.dir}:${layout.tag}`, `docker-archive:${archive}:${name}:latest`);
        await docker('load', '--input', archive);
      }
      await docker('tag', 'local/first:latest', e2e.ref(REPO, 'v2'));
      const pushed = /digest: (sha256:[0-9a-f]{64})/.exec((await docker('push', e2e.ref(REPO, 'v2'))).stdout)?.[1];
      assert.ok(pushed, 'docker push printed a digest');
      await docker('push', e2e.ref(REPO, 'v2'));
      await docker('tag', 'local/second:latest', e2e.ref(REPO, 'v2'));
      await assert.rejects(docker('push', e2e.ref(REPO, 'v2')), refusedAsDenied);
      assert.equal((await inspectRaw(e2e.ref(REPO, 'v2'))).digest, pushed, 'v2 still names the first image');
    }),
  );
});
