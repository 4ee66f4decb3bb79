// Every way a signature can be wrong, over HTTP against an `enforce` policy: each bad signature is
// stored with a failed result that says why, the image stays refused to a pull-only principal,
// and the same image signed properly is then served. The cases are the attacks the trust layer
// exists for: tampering, a key or identity nobody trusts, a signature moved to another image or
// another repository, a bundle about something else, and a bundle cut short.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminToken } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { adminClient, expectError, randomName, TestRegistry, type Descriptor } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import {
  cosignPayload,
  createFakeSigstore,
  inTotoStatement,
  makeKey,
  pushCosignSignature,
  pushSigstoreBundle,
  type FakeSigstore,
  type TestKey,
} from '../support/signing.js';

const ISSUER = 'https://issuer.example';
const CI_IDENTITY = { subject: 'https://ci.example/acme/release', issuer: ISSUER };
const deployer = { username: 'deployer', password: 'a deployer password' };

let server: RunningRegistry;
let admin: TestRegistry;
let deploy: TestRegistry;
let trusted: TestKey;
let sigstore: FakeSigstore;

interface Verification {
  format: string;
  outcome: string;
  reason: string;
}

async function verifications(repository: string, digest: string): Promise<Verification[]> {
  const token = await adminToken(server);
  const response = await fetch(`${server.url}/admin/v1/signatures?${new URLSearchParams({ repository, digest }).toString()}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { verifications: Verification[] }).verifications;
}

const reference = (repository: string) => `${server.host}/${repository}`;
const statementFor = (repository: string, image: Descriptor) => inTotoStatement({ digest: image.digest, name: reference(repository) });

/** A way to sign `image` in `repository` wrongly; `other` is a second image of the same repository. */
interface Attack {
  what: string;
  format: 'cosign' | 'sigstore-bundle';
  sign(repository: string, image: Descriptor, other: Descriptor): Promise<void>;
  reason: RegExp;
}

const attacks: Attack[] = [
  {
    what: 'a payload changed after it was signed',
    format: 'cosign',
    async sign(repository, image) {
      const signed = cosignPayload({ reference: reference(repository), digest: image.digest });
      const tampered = cosignPayload({ reference: reference(repository), digest: image.digest, optional: { note: 'added later' } });
      await pushCosignSignature(admin, repository, image.digest, trusted, tampered, { signedPayload: signed });
    },
    reason: /signature/i,
  },
  {
    what: 'a key the policy does not trust',
    format: 'cosign',
    sign: (repository, image) => pushCosignSignature(admin, repository, image.digest, makeKey('ecdsa-p256'), cosignPayload({ reference: reference(repository), digest: image.digest })),
    reason: /key/i,
  },
  {
    what: 'a valid signature of another image',
    format: 'cosign',
    sign: (repository, image, other) => pushCosignSignature(admin, repository, image.digest, trusted, cosignPayload({ reference: reference(repository), digest: other.digest })),
    reason: /signs the manifest sha256:[0-9a-f]{64}, not/,
  },
  {
    what: 'a valid signature replayed from another repository',
    format: 'cosign',
    async sign(repository, image) {
      // Valid where it was made: the same image in prod/elsewhere, signed for prod/elsewhere.
      const elsewhere = `prod/elsewhere-${randomName()}`;
      const payload = cosignPayload({ reference: reference(elsewhere), digest: image.digest });
      await pushCosignSignature(admin, repository, image.digest, trusted, payload);
    },
    reason: /repository|reference/i,
  },
  {
    what: "a bundle whose statement is about another image than the referrer's subject",
    format: 'sigstore-bundle',
    sign: async (repository, image, other) => pushSigstoreBundle(admin, repository, image, await sigstore.signKeyless(statementFor(repository, other), CI_IDENTITY)),
    reason: /statement is about sha256:[0-9a-f]{64}, not the manifest/,
  },
  {
    what: 'a truncated bundle',
    format: 'sigstore-bundle',
    async sign(repository, image) {
      const bundle = await sigstore.signKeyless(statementFor(repository, image), CI_IDENTITY);
      await pushSigstoreBundle(admin, repository, image, bundle.subarray(0, Math.floor(bundle.length / 2)));
    },
    reason: /JSON|bundle/i,
  },
  {
    what: 'a keyless certificate for another identity',
    format: 'sigstore-bundle',
    sign: async (repository, image) => pushSigstoreBundle(admin, repository, image, await sigstore.signKeyless(statementFor(repository, image), { subject: 'https://ci.example/mallory/x', issuer: ISSUER })),
    reason: /subject|identity/i,
  },
  {
    what: 'a keyless certificate from another issuer',
    format: 'sigstore-bundle',
    sign: async (repository, image) => pushSigstoreBundle(admin, repository, image, await sigstore.signKeyless(statementFor(repository, image), { subject: CI_IDENTITY.subject, issuer: 'https://evil.example' })),
    reason: /issuer|identity/i,
  },
];

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  admin = adminClient(server);
  deploy = new TestRegistry(server.url, deployer);
  trusted = makeKey('ecdsa-p256');
  sigstore = await createFakeSigstore();
  const cli = (args: string[], stdin?: string) => runCli(args, { dataDir: server.dataDir, ...(stdin !== undefined ? { stdin } : {}) });
  assert.equal((await cli(['user', 'add', deployer.username, '--password-stdin'], deployer.password)).code, 0);
  await writeFile(join(server.dataDir, 'rules.yaml'), 'rules:\n  - subject: user:deployer\n    repositories: prod/**\n    actions: [pull]\n');
  assert.equal((await cli(['policy', 'apply', '-f', join(server.dataDir, 'rules.yaml')])).code, 0);
  await writeFile(join(server.dataDir, 'cosign.pub'), trusted.publicKeyPem);
  await writeFile(join(server.dataDir, 'trusted_root.json'), JSON.stringify(sigstore.trustedRoot));
  await writeFile(
    join(server.dataDir, 'trust.yaml'),
    [
      'policies:',
      '  - repositories: prod/**',
      '    signatures:',
      '      mode: enforce',
      '      signers:',
      '        - name: release-cosign',
      '          cosign: cosign.pub',
      '        - name: ci-keyless',
      `          keyless: { issuer: "${ISSUER}", subject: "https://ci.example/acme/*" }`,
      '      trustedRoot: trusted_root.json',
      '',
    ].join('\n'),
  );
  const applied = await cli(['trust', 'apply', '-f', join(server.dataDir, 'trust.yaml')]);
  assert.equal(applied.code, 0, applied.stderr);
});
after(() => server?.stop());

describe('signatures that must not count', () => {
  for (const attack of attacks) {
    it(`records ${attack.what} as failed and keeps the image refused, then serves it signed properly`, async () => {
      const repository = `prod/${randomName()}`;
      const image = await admin.pushImage(repository, 'v1');
      const other = await admin.pushImage(repository, 'v2');
      await attack.sign(repository, image.descriptor, other.descriptor);

      const [result, ...more] = await verifications(repository, image.descriptor.digest);
      assert.equal(more.length, 0);
      assert.equal(result?.format, attack.format);
      assert.equal(result?.outcome, 'invalid', JSON.stringify(result));
      assert.match(result?.reason ?? '', attack.reason);
      await expectError(await deploy.fetch(`/v2/${repository}/manifests/v1`), 403, 'DENIED');

      await pushCosignSignature(admin, repository, image.descriptor.digest, trusted, cosignPayload({ reference: reference(repository), digest: image.descriptor.digest }));
      const served = await deploy.fetch(`/v2/${repository}/manifests/v1`);
      assert.equal(served.status, 200, await served.text());
      assert.equal(served.headers.get('Docker-Content-Digest'), image.descriptor.digest);
    });
  }

  it('refuses an unsigned image disguised as a signature: under a .sig tag, or carrying a subject', async () => {
    const repository = `prod/${randomName()}`;
    const target = await admin.pushImage(repository, 'v1');
    const disguisedTag = `${target.descriptor.digest.replace(':', '-')}.sig`;
    const underSigTag = await admin.pushImage(repository, disguisedTag);
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/${disguisedTag}`), 403, 'DENIED');
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/${underSigTag.descriptor.digest}`), 403, 'DENIED');
    const referrer = await admin.pushImage(repository, 'with-subject', { extra: { subject: target.descriptor } });
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/${referrer.descriptor.digest}`), 403, 'DENIED');
    // A real signature stays readable, so clients can verify the image with it.
    const payload = cosignPayload({ reference: reference(repository), digest: target.descriptor.digest });
    await pushCosignSignature(admin, repository, target.descriptor.digest, trusted, payload);
    assert.equal((await deploy.fetch(`/v2/${repository}/manifests/${disguisedTag}`)).status, 200, 'the signature replaced the disguised image under its tag');
  });

  it('stops serving an image once the signature that vouched for it is deleted', async () => {
    const repository = `prod/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    await pushCosignSignature(admin, repository, image.descriptor.digest, trusted, cosignPayload({ reference: reference(repository), digest: image.descriptor.digest }));
    assert.equal((await deploy.fetch(`/v2/${repository}/manifests/v1`)).status, 200);
    const signatureTag = `${image.descriptor.digest.replace(':', '-')}.sig`;
    const signature = await admin.fetch(`/v2/${repository}/manifests/${signatureTag}`, { method: 'HEAD' });
    const signatureDigest = signature.headers.get('Docker-Content-Digest') ?? '';
    assert.equal((await admin.fetch(`/v2/${repository}/manifests/${signatureDigest}`, { method: 'DELETE' })).status, 202);
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/v1`), 403, 'DENIED');
    assert.deepEqual(await verifications(repository, image.descriptor.digest), [], 'its result went with it');
  });
});
