// Manifest endpoints over HTTP: the four manifest types, validation, negotiation, deletes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import {
  adminClient,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  expectError,
  OCI_INDEX,
  OCI_MANIFEST,
  randomName,
  sha256,
  type TestRegistry,
} from '../support/registry-client.js';

let server: RunningRegistry;
let registry: TestRegistry;

before(async () => {
  server = await startPortcullis();
  registry = adminClient(server);
});
after(() => server.stop());

function put(repository: string, reference: string, body: string | Buffer, contentType?: string): Promise<Response> {
  return registry.fetch(`/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    headers: contentType ? { 'Content-Type': contentType } : {},
    body,
  });
}

describe('manifest push and pull', () => {
  for (const [label, mediaType] of [
    ['OCI image manifest', OCI_MANIFEST],
    ['Docker schema2 manifest', DOCKER_MANIFEST],
  ] as const) {
    it(`stores a ${label} and returns it byte for byte by tag and by digest`, async () => {
      const repository = randomName();
      const { descriptor } = await registry.pushImage(repository, 'v1', { mediaType });
      for (const reference of ['v1', descriptor.digest]) {
        const response = await registry.fetch(`/v2/${repository}/manifests/${reference}`, { headers: { Accept: mediaType } });
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('Content-Type'), mediaType);
        assert.equal(response.headers.get('Docker-Content-Digest'), descriptor.digest);
        const bytes = Buffer.from(await response.arrayBuffer());
        assert.equal(sha256(bytes), descriptor.digest);
        const head = await registry.fetch(`/v2/${repository}/manifests/${reference}`, { method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.equal(head.headers.get('Content-Length'), String(descriptor.size));
        assert.equal(head.headers.get('Docker-Content-Digest'), descriptor.digest);
      }
    });
  }

  for (const [label, listType, childType] of [
    ['OCI image index', OCI_INDEX, OCI_MANIFEST],
    ['Docker manifest list', DOCKER_LIST, DOCKER_MANIFEST],
  ] as const) {
    it(`stores a ${label} whose children are in the repository`, async () => {
      const repository = randomName();
      const amd = await registry.pushImage(repository, 'amd64', { mediaType: childType });
      const arm = await registry.pushImage(repository, 'arm64', { mediaType: childType });
      const index = {
        schemaVersion: 2,
        mediaType: listType,
        manifests: [
          { ...amd.descriptor, platform: { architecture: 'amd64', os: 'linux' } },
          { ...arm.descriptor, platform: { architecture: 'arm64', os: 'linux' } },
        ],
      };
      const pushed = await registry.pushManifest(repository, 'multi', index, listType);
      const get = await registry.fetch(`/v2/${repository}/manifests/multi`);
      assert.equal(get.headers.get('Content-Type'), listType);
      assert.equal(get.headers.get('Docker-Content-Digest'), pushed.digest);

      const orphanIndex = { ...index, manifests: [{ mediaType: childType, digest: sha256(randomBytes(8)), size: 10 }] };
      await expectError(await put(repository, 'broken', JSON.stringify(orphanIndex), listType), 400, 'MANIFEST_BLOB_UNKNOWN');
    });
  }

  it('moves a tag to a new manifest and keeps the old one by digest', async () => {
    const repository = randomName();
    const first = await registry.pushImage(repository, 'latest');
    const second = await registry.pushImage(repository, 'latest');
    const byTag = await registry.fetch(`/v2/${repository}/manifests/latest`, { method: 'HEAD' });
    assert.equal(byTag.headers.get('Docker-Content-Digest'), second.descriptor.digest);
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/${first.descriptor.digest}`)).status, 200);
  });

  it('accepts a push by digest and checks the body against it', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'base');
    const body = Buffer.from(JSON.stringify({ ...manifest, annotations: { note: 'by digest' } }));
    const good = await put(repository, sha256(body), body, OCI_MANIFEST);
    assert.equal(good.status, 201);
    assert.equal(good.headers.get('Location'), `/v2/${repository}/manifests/${sha256(body)}`);
    await expectError(await put(repository, sha256(Buffer.from('other')), body, OCI_MANIFEST), 400, 'DIGEST_INVALID');
  });

  it('sets OCI-Subject when the manifest has a subject', async () => {
    const repository = randomName();
    const image = await registry.pushImage(repository, 'v1');
    const empty = await registry.pushBlob(repository, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
    const signature = await registry.pushBlob(repository, randomBytes(64), 'application/vnd.example.signature');
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.signature',
      config: empty,
      layers: [signature],
      subject: image.descriptor,
    });
    const response = await put(repository, sha256(Buffer.from(body)), body, OCI_MANIFEST);
    assert.equal(response.status, 201);
    assert.equal(response.headers.get('OCI-Subject'), image.descriptor.digest);
  });

  it('answers MANIFEST_UNKNOWN for a manifest the Accept header rules out', async () => {
    const repository = randomName();
    await registry.pushImage(repository, 'v1');
    await expectError(
      await registry.fetch(`/v2/${repository}/manifests/v1`, { headers: { Accept: DOCKER_MANIFEST } }),
      404,
      'MANIFEST_UNKNOWN',
    );
    await expectError(
      await registry.fetch(`/v2/${repository}/manifests/v1`, { headers: { Accept: `${OCI_MANIFEST};q=0, ${DOCKER_MANIFEST}` } }),
      404,
      'MANIFEST_UNKNOWN',
    );
    const wildcard = await registry.fetch(`/v2/${repository}/manifests/v1`, { headers: { Accept: '*/*' } });
    assert.equal(wildcard.status, 200);
    const several = await registry.fetch(`/v2/${repository}/manifests/v1`, {
      headers: { Accept: `${DOCKER_MANIFEST}, ${OCI_MANIFEST};q=0.9` },
    });
    assert.equal(several.status, 200);
  });
});

describe('manifest validation', () => {
  it('refuses a manifest whose mediaType disagrees with Content-Type (CVE-2021-41190)', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'v1');
    await expectError(await put(repository, 'x', JSON.stringify(manifest), OCI_INDEX), 400, 'MANIFEST_INVALID');
    await expectError(await put(repository, 'z', JSON.stringify({ ...manifest, manifests: [] }), OCI_MANIFEST), 400, 'MANIFEST_INVALID');
    const ambiguous = { ...manifest, manifests: [] };
    await expectError(await put(repository, 'y', JSON.stringify({ ...ambiguous, mediaType: OCI_INDEX }), OCI_INDEX), 400, 'MANIFEST_INVALID');
  });

  it('refuses a manifest that references blobs the repository does not have', async () => {
    const repository = randomName();
    const other = randomName();
    const { manifest } = await registry.pushImage(other, 'v1');
    await registry.pushBlob(repository, randomBytes(4));
    await expectError(await put(repository, 'v1', JSON.stringify(manifest), OCI_MANIFEST), 400, 'MANIFEST_BLOB_UNKNOWN');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/v1`), 404, 'MANIFEST_UNKNOWN');
  });

  it('refuses descriptors whose size does not match the stored blob', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'v1');
    const lying = { ...manifest, config: { ...manifest.config, size: manifest.config.size + 1 } };
    await expectError(await put(repository, 'v2', JSON.stringify(lying), OCI_MANIFEST), 400, 'MANIFEST_INVALID');
  });

  it('refuses malformed manifests', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'v1');
    const cases: [string, string | undefined][] = [
      ['not json', OCI_MANIFEST],
      ['[]', OCI_MANIFEST],
      [JSON.stringify({ ...manifest, schemaVersion: 1 }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, config: undefined }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, layers: [{ mediaType: 'x', digest: 'sha256:zz', size: 1 }] }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, layers: [{ ...manifest.layers[0], size: -1 }] }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, mediaType: undefined }), 'application/json'],
      [JSON.stringify({ ...manifest, mediaType: undefined }), undefined],
      [JSON.stringify({ ...manifest, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' }), undefined],
      [JSON.stringify({ ...manifest, artifactType: 'not a media type' }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, artifactType: `application/${'x'.repeat(300)}` }), OCI_MANIFEST],
      [JSON.stringify({ ...manifest, config: { ...manifest.config, mediaType: 'bad\u0000type' } }), OCI_MANIFEST],
    ];
    for (const [body, type] of cases) {
      await expectError(await put(repository, 'bad', body, type), 400, 'MANIFEST_INVALID');
    }
    await expectError(await registry.fetch(`/v2/${repository}/manifests/bad`), 404, 'MANIFEST_UNKNOWN');
  });

  it('refuses a manifest larger than 4 MiB with 413', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'v1');
    const huge = JSON.stringify({ ...manifest, annotations: { padding: 'x'.repeat(4 * 1024 * 1024) } });
    await expectError(await put(repository, 'huge', huge, OCI_MANIFEST), 413, 'SIZE_INVALID');
  });

  it('refuses invalid tags and names', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'v1');
    const body = JSON.stringify(manifest);
    await expectError(await put(repository, '-bad', body, OCI_MANIFEST), 400, 'MANIFEST_INVALID');
    await expectError(await put(repository, 'x'.repeat(129), body, OCI_MANIFEST), 400, 'MANIFEST_INVALID');
    // No manifest can have such a reference: reading or deleting it finds nothing.
    for (const reference of ['-bad', 'x'.repeat(129), 'sha256:abc', 'md5:d41d8cd98f00b204e9800998ecf8427e']) {
      await expectError(await registry.fetch(`/v2/${repository}/manifests/${reference}`), 404, 'MANIFEST_UNKNOWN');
      const head = await registry.fetch(`/v2/${repository}/manifests/${reference}`, { method: 'HEAD' });
      assert.equal(head.status, 404);
      await expectError(await registry.fetch(`/v2/${repository}/manifests/${reference}`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
    }
    for (const name of ['UPPER/case', 'a//b', 'trailing-', `${'a'.repeat(256)}`, 'a/%2E%2E%2Fb', '_x']) {
      await expectError(await put(name, 'v1', body, OCI_MANIFEST), 400, 'NAME_INVALID');
    }
  });

  it('answers NAME_UNKNOWN and MANIFEST_UNKNOWN for what does not exist', async () => {
    await expectError(await registry.fetch(`/v2/${randomName()}/manifests/latest`), 404, 'NAME_UNKNOWN');
    const repository = randomName();
    await registry.pushImage(repository, 'v1');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/v2`), 404, 'MANIFEST_UNKNOWN');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/${sha256(Buffer.from('x'))}`), 404, 'MANIFEST_UNKNOWN');
  });
});

describe('manifest delete', () => {
  it('deletes a tag and leaves the manifest', async () => {
    const repository = randomName();
    const { descriptor } = await registry.pushImage(repository, 'v1');
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/v1`, { method: 'DELETE' })).status, 202);
    await expectError(await registry.fetch(`/v2/${repository}/manifests/v1`), 404, 'MANIFEST_UNKNOWN');
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/${descriptor.digest}`)).status, 200);
  });

  it('deletes a manifest by digest together with its tags', async () => {
    const repository = randomName();
    const { descriptor } = await registry.pushImage(repository, 'v1');
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/${descriptor.digest}`, { method: 'DELETE' })).status, 202);
    await expectError(await registry.fetch(`/v2/${repository}/manifests/${descriptor.digest}`), 404, 'MANIFEST_UNKNOWN');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/v1`), 404, 'MANIFEST_UNKNOWN');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/${descriptor.digest}`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
  });
});
