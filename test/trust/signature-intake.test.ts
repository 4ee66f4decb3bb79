// Signatures that arrive as manifests, verified on arrival over HTTP and recorded on the image
// they sign: cosign `.sig` tags (keyed) and sigstore bundles as OCI referrers (keyless), each
// accepted only from the policy's signers, bound to the digest and to the repository.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminToken } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, randomName, type TestRegistry } from '../support/registry-client.js';
import { cosignPayload, createFakeSigstore, pushCosignSignature, pushSigstoreBundle, inTotoStatement, makeKey, type FakeSigstore, type TestKey } from '../support/signing.js';

const ISSUER = 'https://issuer.example';

let server: RunningRegistry;
let registry: TestRegistry;
let trusted: TestKey;
let sigstore: FakeSigstore;

interface Verification {
  format: string;
  signature: string;
  outcome: string;
  signer?: string;
  reason: string;
}

async function verifications(repository: string, digest: string): Promise<Verification[]> {
  const token = await adminToken(server);
  const query = new URLSearchParams({ repository, digest });
  const response = await fetch(`${server.url}/admin/v1/signatures?${query.toString()}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { verifications: Verification[] }).verifications;
}

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  registry = adminClient(server);
  trusted = makeKey('ecdsa-p256');
  sigstore = await createFakeSigstore();
  await writeFile(join(server.dataDir, 'cosign.pub'), trusted.publicKeyPem);
  await writeFile(join(server.dataDir, 'trusted_root.json'), JSON.stringify(sigstore.trustedRoot));
  await writeFile(
    join(server.dataDir, 'trust.yaml'),
    [
      'policies:',
      '  - repositories: signed/**',
      '    signatures:',
      '      mode: audit',
      '      signers:',
      '        - name: release-cosign',
      '          cosign: cosign.pub',
      '        - name: ci-keyless',
      `          keyless: { issuer: "${ISSUER}", subject: "https://ci.example/acme/*" }`,
      '      trustedRoot: trusted_root.json',
      '',
    ].join('\n'),
  );
  const applied = await runCli(['trust', 'apply', '-f', join(server.dataDir, 'trust.yaml')], { dataDir: server.dataDir });
  assert.equal(applied.code, 0, applied.stderr);
});
after(() => server?.stop());

describe('cosign signatures (.sig tags)', () => {
  it('records a signature by the policy key as valid, naming the signer', async () => {
    const repository = `signed/${randomName()}`;
    const image = await registry.pushImage(repository, 'v1');
    await pushCosignSignature(registry, repository, image.descriptor.digest, trusted, cosignPayload({ reference: `${server.host}/${repository}`, digest: image.descriptor.digest }));
    const [result, ...others] = await verifications(repository, image.descriptor.digest);
    assert.equal(others.length, 0);
    assert.equal(result?.format, 'cosign');
    assert.equal(result?.outcome, 'valid', result?.reason);
    assert.equal(result?.signer, 'release-cosign');
  });

  it('records as invalid: an untrusted key, a payload for another digest, a signature replayed from another repository', async () => {
    const cases: { what: string; key: () => TestKey; payload: (repository: string, digest: string, other: string) => Buffer; reason: RegExp }[] = [
      { what: 'untrusted key', key: () => makeKey('ecdsa-p256'), payload: (r, d) => cosignPayload({ reference: `${server.host}/${r}`, digest: d }), reason: /key/i },
      { what: 'another digest', key: () => trusted, payload: (r, _d, o) => cosignPayload({ reference: `${server.host}/${r}`, digest: o }), reason: /signs the manifest sha256:[0-9a-f]{64}, not/ },
      { what: 'another repository', key: () => trusted, payload: (_r, d) => cosignPayload({ reference: `${server.host}/signed/elsewhere`, digest: d }), reason: /repository|reference/i },
    ];
    for (const { what, key, payload, reason } of cases) {
      const repository = `signed/${randomName()}`;
      const image = await registry.pushImage(repository, 'v1');
      const other = await registry.pushImage(repository, 'v2');
      await pushCosignSignature(registry, repository, image.descriptor.digest, key(), payload(repository, image.descriptor.digest, other.descriptor.digest));
      const [result, ...more] = await verifications(repository, image.descriptor.digest);
      assert.equal(more.length, 0, what);
      assert.equal(result?.outcome, 'invalid', `${what}: ${JSON.stringify(result)}`);
      assert.match(result?.reason ?? '', reason, `${what}: ${result?.reason}`);
    }
  });
});

describe('sigstore bundles (referrers)', () => {
  it('records a keyless bundle from the policy identity as valid, and another identity as invalid', async () => {
    const repository = `signed/${randomName()}`;
    const good = await registry.pushImage(repository, 'good');
    const statement = inTotoStatement({ digest: good.descriptor.digest, name: `${server.host}/${repository}` });
    await pushSigstoreBundle(registry, repository, good.descriptor, await sigstore.signKeyless(statement, { subject: 'https://ci.example/acme/release', issuer: ISSUER }));
    const [valid] = await verifications(repository, good.descriptor.digest);
    assert.equal(valid?.format, 'sigstore-bundle');
    assert.equal(valid?.outcome, 'valid', valid?.reason);
    assert.equal(valid?.signer, 'ci-keyless');

    const bad = await registry.pushImage(repository, 'bad');
    const other = inTotoStatement({ digest: bad.descriptor.digest, name: `${server.host}/${repository}` });
    await pushSigstoreBundle(registry, repository, bad.descriptor, await sigstore.signKeyless(other, { subject: 'https://attacker.example/x', issuer: ISSUER }));
    const [invalid] = await verifications(repository, bad.descriptor.digest);
    assert.equal(invalid?.outcome, 'invalid');
    assert.match(invalid?.reason ?? '', /subject|identity/i);
  });
});
