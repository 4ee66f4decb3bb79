// Tag listing, catalog and referrers over HTTP, with pagination.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, expectError, OCI_INDEX, OCI_MANIFEST, randomName, type TestRegistry } from '../support/registry-client.js';

let server: RunningRegistry;
let registry: TestRegistry;

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_LIMITS_PAGE_MAX_ENTRIES: '5' } });
  registry = adminClient(server);
});
after(() => server.stop());

async function json<T>(path: string): Promise<{ body: T; link: string | null; response: Response }> {
  const response = await registry.fetch(path);
  assert.equal(response.status, 200);
  return { body: (await response.json()) as T, link: response.headers.get('Link'), response };
}

describe('tags/list', () => {
  it('lists tags in lexical order, pages with n and last, and links to the next page', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 'seed');
    const tags = ['b', 'a', 'C', 'c10', 'c9', 'latest', 'v1.0', 'v1.0-rc1'];
    for (const tag of tags) await registry.pushManifest(repository, tag, manifest, OCI_MANIFEST);
    const all = [...tags, 'seed'].sort();

    const first = await json<{ name: string; tags: string[] }>(`/v2/${repository}/tags/list?n=3`);
    assert.equal(first.body.name, repository);
    assert.deepEqual(first.body.tags, all.slice(0, 3));
    assert.equal(first.link, `</v2/${repository}/tags/list?n=3&last=${all[2]}>; rel="next"`);

    const collected: string[] = [];
    let next: string | null = `/v2/${repository}/tags/list?n=4`;
    while (next) {
      const page: { body: { tags: string[] }; link: string | null } = await json<{ tags: string[] }>(next);
      collected.push(...page.body.tags);
      next = page.link ? (/^<([^>]+)>/.exec(page.link)?.[1] ?? null) : null;
    }
    assert.deepEqual(collected, all);

    const afterLast = await json<{ tags: string[] }>(`/v2/${repository}/tags/list?n=2&last=latest`);
    assert.deepEqual(afterLast.body.tags, ['seed', 'v1.0']);
  });

  it('caps n at the configured maximum and pages without n', async () => {
    const repository = randomName();
    const { manifest } = await registry.pushImage(repository, 't0');
    for (let i = 1; i < 8; i++) await registry.pushManifest(repository, `t${i}`, manifest, OCI_MANIFEST);
    const big = await json<{ tags: string[] }>(`/v2/${repository}/tags/list?n=1000000`);
    assert.equal(big.body.tags.length, 5);
    assert.match(big.link ?? '', /n=5&last=t4/);
    const none = await json<{ tags: string[] }>(`/v2/${repository}/tags/list`);
    assert.equal(none.body.tags.length, 5);
    const zero = await json<{ tags: string[] }>(`/v2/${repository}/tags/list?n=0`);
    assert.deepEqual(zero.body.tags, []);
    assert.equal(zero.link, null);
  });

  it('rejects a bad n and answers NAME_UNKNOWN for a missing repository', async () => {
    const repository = randomName();
    await registry.pushImage(repository, 'v1');
    for (const n of ['-1', 'abc', '1e3']) {
      await expectError(await registry.fetch(`/v2/${repository}/tags/list?n=${n}`), 400, 'PAGINATION_NUMBER_INVALID');
    }
    await expectError(await registry.fetch(`/v2/${repository}/tags/list?last=%00`), 400, 'PAGINATION_NUMBER_INVALID');
    await expectError(await registry.fetch(`/v2/${randomName()}/tags/list`), 404, 'NAME_UNKNOWN');
  });
});

describe('_catalog', () => {
  it('lists repositories in order with pagination', async () => {
    const prefix = randomName('cat');
    for (const suffix of ['b', 'a', 'c']) await registry.pushImage(`${prefix}/${suffix}`, 'v1');
    const page = await json<{ repositories: string[] }>(`/v2/_catalog?n=2&last=${prefix}`);
    assert.deepEqual(page.body.repositories, [`${prefix}/a`, `${prefix}/b`]);
    assert.equal(page.link, `</v2/_catalog?n=2&last=${encodeURIComponent(`${prefix}/b`)}>; rel="next"`);
    const rest = await json<{ repositories: string[] }>(`/v2/_catalog?n=1&last=${prefix}/b`);
    assert.deepEqual(rest.body.repositories, [`${prefix}/c`]);
  });
});

describe('referrers', () => {
  it('returns an image index of the manifests whose subject is the digest, filtered by artifactType', async () => {
    const repository = randomName();
    const image = await registry.pushImage(repository, 'v1');
    const empty = await registry.pushBlob(repository, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
    const attach = async (artifactType: string | undefined, configType?: string) => {
      const layer = await registry.pushBlob(repository, randomBytes(32), 'application/octet-stream');
      const config = configType ? await registry.pushBlob(repository, randomBytes(16), configType) : empty;
      const manifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        ...(artifactType ? { artifactType } : {}),
        config,
        layers: [layer],
        subject: image.descriptor,
        annotations: { 'org.example.kind': artifactType ?? configType ?? 'none' },
      };
      return registry.pushManifest(repository, `sha256-${randomName()}`, manifest, OCI_MANIFEST);
    };
    const sbom = await attach('application/spdx+json');
    const signature = await attach('application/vnd.dev.cosign.artifact.sig.v1+json');
    const legacy = await attach(undefined, 'application/vnd.example.legacy.config');
    const indexReferrer = await registry.pushManifest(
      repository,
      'attestations',
      { schemaVersion: 2, mediaType: OCI_INDEX, artifactType: 'application/vnd.example.bundle', manifests: [], subject: image.descriptor },
      OCI_INDEX,
    );

    const all = await json<{ mediaType: string; manifests: { digest: string; artifactType?: string; annotations?: object }[] }>(
      `/v2/${repository}/referrers/${image.descriptor.digest}`,
    );
    assert.equal(all.response.headers.get('Content-Type'), OCI_INDEX);
    assert.equal(all.body.mediaType, OCI_INDEX);
    assert.deepEqual(
      all.body.manifests.map((m) => [m.digest, m.artifactType]),
      // newest first
      [
        [indexReferrer.digest, 'application/vnd.example.bundle'],
        [legacy.digest, 'application/vnd.example.legacy.config'],
        [signature.digest, 'application/vnd.dev.cosign.artifact.sig.v1+json'],
        [sbom.digest, 'application/spdx+json'],
      ],
    );
    assert.deepEqual(all.body.manifests[3]?.annotations, { 'org.example.kind': 'application/spdx+json' });
    assert.equal(all.response.headers.get('Link'), null);
    assert.equal(all.response.headers.get('OCI-Filters-Applied'), null);

    const filtered = await json<{ manifests: { digest: string }[] }>(
      `/v2/${repository}/referrers/${image.descriptor.digest}?artifactType=application/spdx%2Bjson`,
    );
    assert.deepEqual(filtered.body.manifests.map((m) => m.digest), [sbom.digest]);
    assert.equal(filtered.response.headers.get('OCI-Filters-Applied'), 'artifactType');

    const none = await json<{ manifests: unknown[] }>(`/v2/${repository}/referrers/${sbom.digest}`);
    assert.deepEqual(none.body.manifests, []);
    await expectError(await registry.fetch(`/v2/${repository}/referrers/sha256:nope`), 400, 'DIGEST_INVALID');
    const badFilter = await registry.fetch(`/v2/${repository}/referrers/${image.descriptor.digest}?artifactType=%00x`);
    assert.equal(badFilter.status, 400);
  });
});

describe('referrers paging', () => {
  it('pages referrers under a byte budget, newest first, so none is hidden behind large ones', async () => {
    const server = await startPortcullis({ env: { PORTCULLIS_LIMITS_REFERRERS_PAGE_MAX_BYTES: '65536' } });
    try {
      const client = adminClient(server);
      const repository = randomName();
      const image = await client.pushImage(repository, 'v1');
      const empty = await client.pushBlob(repository, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
      const pushed: string[] = [];
      for (let i = 0; i < 5; i++) {
        const manifest = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType: 'application/vnd.example.signature',
          config: empty,
          layers: [empty],
          subject: image.descriptor,
          annotations: { 'org.example.padding': 'p'.repeat(40_000), 'org.example.index': String(i) },
        };
        pushed.push((await client.pushManifest(repository, `sha256-${randomName()}`, manifest, OCI_MANIFEST)).digest);
      }
      const seen: string[] = [];
      let next: string | null = `/v2/${repository}/referrers/${image.descriptor.digest}`;
      let pages = 0;
      while (next) {
        const response = await client.fetch(next);
        assert.equal(response.status, 200);
        const body = (await response.json()) as { manifests: { digest: string }[] };
        assert.ok(body.manifests.length >= 1, 'every page makes progress');
        seen.push(...body.manifests.map((m) => m.digest));
        next = /^<([^>]+)>; rel="next"$/.exec(response.headers.get('Link') ?? '')?.[1] ?? null;
        pages++;
        assert.ok(pages <= 10, 'the pages end');
      }
      assert.ok(pages >= 3, `large referrers are spread over pages (${pages})`);
      assert.deepEqual(seen, [...pushed].reverse());
      await expectError(await client.fetch(`/v2/${repository}/referrers/${image.descriptor.digest}?last=abc`), 400, 'PAGINATION_NUMBER_INVALID');
    } finally {
      await server.stop();
    }
  });
});
