// End-to-end: GPG "simple signing" with the real clients. `skopeo copy --sign-by` and
// `podman push --sign-by` store their signatures in the registry through the signature extension
// (never in a local lookaside directory, which is configured here to prove it stays empty), skopeo
// and podman verify them on pull with a signedBy policy, and ordinary unsigned copies keep working
// (every pull asks the registry for signatures and must get an empty list).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NO_TRUSTED_SIGNER } from '../../src/trust/gpg.js';
import { digestsOf, inspectRaw, readOciLayoutManifest, skopeo, skopeoCopy } from '../support/clients.js';
import { E2E, E2E_TEST_TIMEOUT_MS, registryKind } from '../support/e2e.js';
import { createGpgKey, GPG_COMMANDS, type GpgKey } from '../support/gpg.js';
import { createOciLayout, sha256Digest, type OciLayout } from '../support/oci-layout.js';
import { isolatedPodman, type Podman } from '../support/podman.js';
import { CommandError } from '../support/run.js';
import { runCli } from '../support/cli.js';

const SKOPEO_REPO = 'e2e/gpg-skopeo';
const PODMAN_REPO = 'e2e/gpg-podman';
const UNSIGNED_REPO = 'e2e/gpg-unsigned';
const TRUSTED_REPO = 'e2e/gpg-trusted';
/** Where containers/image writes signatures when nothing else is configured. */
const DEFAULT_LOOKASIDE = '/var/lib/containers/sigstore';

interface WireSignature {
  schemaVersion: number;
  name: string;
  type: string;
  content: string;
}

/** Every file below `dir` (none when it does not exist). */
async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath ?? entry.path, entry.name));
}

describe('GPG simple signing with skopeo and podman', { timeout: E2E_TEST_TIMEOUT_MS, skip: registryKind() === 'reference' ? 'the reference registry has no signature extension' : false }, () => {
  const e2e = new E2E('gpg-signatures', { podman: 'podman', ...GPG_COMMANDS });
  let key: GpgKey;
  let otherKey: GpgKey;
  let registriesD: string;
  let lookaside: string;
  let skopeoImage: OciLayout;
  let podman: Podman;
  let podmanHome: string;

  /** The signatures the registry holds for a manifest, through the extension API. */
  async function storedSignatures(repository: string, digest: string): Promise<WireSignature[]> {
    const registry = e2e.client();
    const token = await registry.token([`repository:${repository}:pull`]);
    const response = await fetch(`${e2e.registry.url}/extensions/v2/${repository}/signatures/${digest}`, { headers: { Authorization: `Bearer ${token}` } });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    return (JSON.parse(text) as { signatures: WireSignature[] }).signatures;
  }

  /** The stored verification results for a manifest, from the admin API. */
  async function verifications(repository: string, digest: string): Promise<{ signature: string; outcome: string; reason: string; signer?: string }[]> {
    const token = await e2e.client().token(['registry:admin:*']);
    const query = new URLSearchParams({ repository, digest });
    const response = await fetch(`${e2e.registry.url}/admin/v1/signatures?${query.toString()}`, { headers: { Authorization: `Bearer ${token}` } });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    return (JSON.parse(text) as { verifications: { signature: string; outcome: string; reason: string; signer?: string }[] }).verifications;
  }

  /** Checks the signature with skopeo's own verifier: by `signer`, of `manifest`, for `reference`. */
  async function assertSignedBy(signer: GpgKey, manifest: string, reference: string, signature: WireSignature): Promise<void> {
    const dir = await e2e.tempDir(`verify-${signature.name.slice(-8)}`);
    await writeFile(join(dir, 'manifest.json'), manifest);
    await writeFile(join(dir, 'signature'), Buffer.from(signature.content, 'base64'));
    const { stdout } = await skopeo(['standalone-verify', join(dir, 'manifest.json'), reference, signer.fingerprint, join(dir, 'signature')], { env: signer.env });
    assert.match(stdout, new RegExp(`Signature verified.*${sha256Digest(manifest)}`));
  }

  /** A policy.json that demands a signature by `signer` for `repository` and accepts anything else. */
  async function signedByPolicy(name: string, repository: string, signer: GpgKey): Promise<string> {
    const file = join(e2e.tmp, `${name}-policy.json`);
    const policy = {
      default: [{ type: 'insecureAcceptAnything' }],
      transports: { docker: { [`${e2e.host}/${repository}`]: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: signer.publicKeyring }] } },
    };
    await writeFile(file, JSON.stringify(policy));
    return file;
  }

  async function assertNoLookaside(repository: string, digest: string): Promise<void> {
    assert.deepEqual(await filesUnder(lookaside), [], 'a signature was written to the configured lookaside directory');
    const defaultPath = join(DEFAULT_LOOKASIDE, `${repository}@${digest.replace(':', '=')}`);
    assert.equal(existsSync(defaultPath), false, `a signature was written to ${defaultPath}`);
  }

  before(async () => {
    await e2e.start();
    key = await createGpgKey(join(e2e.tmp, 'gnupg'), 'Release Signer <release@example.test>');
    e2e.defer(() => key.close());
    otherKey = await createGpgKey(join(e2e.tmp, 'gnupg-other'), 'Someone Else <else@example.test>');
    e2e.defer(() => otherKey.close());
    // A lookaside directory the clients would write to if the registry's extension were not used.
    lookaside = await e2e.tempDir('lookaside');
    const lookasideConfig = `default-docker:\n  lookaside: file://${lookaside}\n  lookaside-staging: file://${lookaside}\n`;
    registriesD = await e2e.tempDir('registries.d');
    await writeFile(join(registriesD, 'lookaside.yaml'), lookasideConfig);
    const podmanDir = await e2e.tempDir('podman');
    podman = await isolatedPodman(podmanDir);
    podmanHome = join(podmanDir, 'home');
    await mkdir(join(podmanHome, '.config', 'containers', 'registries.d'), { recursive: true });
    await writeFile(join(podmanHome, '.config', 'containers', 'registries.d', 'lookaside.yaml'), lookasideConfig);
    skopeoImage = await createOciLayout({ dir: await e2e.tempDir('skopeo-layout'), layers: 2 });
  });
  after(() => e2e.stop());

  it(
    'skopeo copy --sign-by stores the signature in the registry, not in a lookaside directory',
    e2e.step(async () => {
      const destination = e2e.ref(SKOPEO_REPO, skopeoImage.tag);
      const { stderr } = await skopeo(
        ['--debug', '--registries.d', registriesD, 'copy', '--dest-tls-verify=false', '--sign-by', key.fingerprint, `oci:${skopeoImage.dir}:${skopeoImage.tag}`, `docker://${destination}`],
        { env: key.env },
      );
      assert.match(stderr, new RegExp(`PUT [^ ]*/extensions/v2/${SKOPEO_REPO}/signatures/${skopeoImage.manifestDigest}`));
      const served = await inspectRaw(destination);
      assert.equal(served.digest, skopeoImage.manifestDigest);

      const signatures = await storedSignatures(SKOPEO_REPO, skopeoImage.manifestDigest);
      assert.equal(signatures.length, 1);
      const [signature] = signatures as [WireSignature];
      assert.equal(signature.schemaVersion, 2);
      assert.equal(signature.type, 'atomic');
      assert.match(signature.name, new RegExp(`^${skopeoImage.manifestDigest}@[0-9a-f]{32}$`));
      await assertSignedBy(key, served.raw, destination, signature);
      await assertNoLookaside(SKOPEO_REPO, skopeoImage.manifestDigest);
      // No trust policy names a signer yet: stored and served, recorded as not (yet) trusted.
      const results = await verifications(SKOPEO_REPO, skopeoImage.manifestDigest);
      assert.deepEqual(results.map((r) => [r.signature, r.outcome, r.reason]), [[signature.name, 'invalid', NO_TRUSTED_SIGNER]]);
    }),
  );

  it(
    'skopeo copy with a signedBy policy verifies the signature on pull, and refuses it for another key',
    e2e.step(async () => {
      const source = `docker://${e2e.ref(SKOPEO_REPO, skopeoImage.tag)}`;
      const dir = join(e2e.tmp, 'pulled-signed');
      const policy = await signedByPolicy('trusted', SKOPEO_REPO, key);
      await skopeo(['--policy', policy, '--registries.d', registriesD, 'copy', '--src-tls-verify=false', source, `dir:${dir}`]);
      // dir: keeps the signatures it was given: exactly the bytes the registry stores.
      const [stored] = await storedSignatures(SKOPEO_REPO, skopeoImage.manifestDigest);
      assert.deepEqual(await readFile(join(dir, 'signature-1')), Buffer.from(stored?.content ?? '', 'base64'));
      assert.equal(sha256Digest(await readFile(join(dir, 'manifest.json'))), skopeoImage.manifestDigest);

      const untrusting = await signedByPolicy('other-key', SKOPEO_REPO, otherKey);
      await assert.rejects(
        skopeo(['--policy', untrusting, '--registries.d', registriesD, 'copy', '--src-tls-verify=false', source, `dir:${join(e2e.tmp, 'refused')}`]),
        (error: unknown) => {
          assert.ok(error instanceof CommandError, String(error));
          assert.match(error.stderr, /Source image rejected/);
          return true;
        },
      );
    }),
  );

  it(
    'podman push --sign-by stores the signature in the registry, and podman verifies it on pull',
    e2e.step(async () => {
      const image = await createOciLayout({ dir: await e2e.tempDir('podman-layout'), layers: 2 });
      const id = await podman.pullOciLayout(image.dir, image.tag);
      const destination = e2e.ref(PODMAN_REPO, image.tag);
      const digestFile = join(e2e.tmp, 'podman-signed.digest');
      await podman.run(['push', '--tls-verify=false', '--sign-by', key.fingerprint, '--digestfile', digestFile, id, `docker://${destination}`], { env: key.env });
      const digest = (await readFile(digestFile, 'utf8')).trim();
      const served = await inspectRaw(e2e.ref(PODMAN_REPO, digest));

      const signatures = await storedSignatures(PODMAN_REPO, digest);
      assert.equal(signatures.length, 1);
      await assertSignedBy(key, served.raw, destination, signatures[0] as WireSignature);
      assert.deepEqual(await filesUnder(join(podmanHome, '.local', 'share', 'containers', 'sigstore')), []);
      await assertNoLookaside(PODMAN_REPO, digest);

      await podman.run(['rmi', '--force', id]);
      const policy = await signedByPolicy('podman-trusted', PODMAN_REPO, key);
      await podman.run(['pull', '--tls-verify=false', '--signature-policy', policy, destination]);
      assert.equal((await podman.run(['image', 'inspect', '--format', '{{.Digest}}', destination])).stdout.trim(), digest);
      await podman.run(['rmi', '--force', id]);
      const untrusting = await signedByPolicy('podman-other-key', PODMAN_REPO, otherKey);
      await assert.rejects(podman.run(['pull', '--tls-verify=false', '--signature-policy', untrusting, destination]), /Source image rejected/);
    }),
  );

  it(
    'ordinary unsigned copies still work: push and pull with skopeo and podman',
    e2e.step(async () => {
      const image = await createOciLayout({ dir: await e2e.tempDir('unsigned-layout'), layers: 1 });
      const destination = e2e.ref(UNSIGNED_REPO, image.tag);
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${destination}`);
      assert.deepEqual(await storedSignatures(UNSIGNED_REPO, image.manifestDigest), []);
      const dir = await e2e.tempDir('unsigned-pulled');
      // Each pull asks for the signatures; the empty list lets it go on.
      await skopeoCopy(`docker://${destination}`, `oci:${dir}:${image.tag}`, { flags: ['--remove-signatures'] });
      assert.deepEqual(digestsOf(await readOciLayoutManifest(dir, image.tag)), {
        manifestDigest: image.manifestDigest,
        configDigest: image.configDigest,
        layerDigests: image.layerDigests,
      });
      await podman.run(['pull', '--tls-verify=false', destination]);
      await podman.run(['push', '--tls-verify=false', destination, `docker://${e2e.ref(UNSIGNED_REPO, 'from-podman')}`]);
      assert.equal((await inspectRaw(e2e.ref(UNSIGNED_REPO, 'from-podman'))).manifest.config.digest, image.configDigest);
      // A policy that demands a signature refuses the unsigned image: the (empty) list was read.
      const policy = await signedByPolicy('unsigned', UNSIGNED_REPO, key);
      await assert.rejects(
        skopeo(['--policy', policy, 'copy', '--src-tls-verify=false', `docker://${destination}`, `dir:${join(e2e.tmp, 'unsigned-refused')}`]),
        /Source image rejected: A signature was required, but no signature exists/,
      );
    }),
  );

  it(
    'verifies arriving signatures against the trust policy: the listed key is valid, another key is not',
    e2e.step(async () => {
      // The policy file names the key by a path relative to itself.
      await mkdir(join(e2e.tmp, 'keys'), { recursive: true });
      await writeFile(join(e2e.tmp, 'keys', 'release.asc'), key.armoredPublicKey);
      const policyFile = join(e2e.tmp, 'trust.yaml');
      await writeFile(policyFile, `policies:\n  - repositories: ${TRUSTED_REPO}\n    signatures:\n      mode: audit\n      signers:\n        - name: release-gpg\n          gpg: keys/release.asc\n`);
      const applied = await runCli(['trust', 'apply', '-f', policyFile], { dataDir: e2e.registry.dataDir });
      assert.equal(applied.code, 0, applied.stderr);
      await new Promise((resolve) => setTimeout(resolve, 2500)); // auth.rulesCacheSeconds
      const image = await createOciLayout({ dir: await e2e.tempDir('trusted-layout'), layers: 1 });
      const destination = e2e.ref(TRUSTED_REPO, image.tag);
      for (const signer of [key, otherKey]) {
        await skopeo(['--registries.d', registriesD, 'copy', '--dest-tls-verify=false', '--sign-by', signer.fingerprint, `oci:${image.dir}:${image.tag}`, `docker://${destination}`], {
          env: signer.env,
        });
      }
      const results = await verifications(TRUSTED_REPO, image.manifestDigest);
      assert.equal(results.length, 2, JSON.stringify(results));
      const byOutcome = Object.fromEntries(results.map((r) => [r.outcome, r]));
      assert.equal((byOutcome.valid as { signer?: string } | undefined)?.signer, 'release-gpg');
      assert.ok(byOutcome.invalid, 'the other key is recorded as not trusted');
    }),
  );
});
