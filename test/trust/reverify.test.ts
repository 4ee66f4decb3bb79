// Stored verification results never outlive the policy they were judged under: when a policy
// replaces a signer's key, the server judges every stored signature again (cosign, keyed sigstore
// bundles, GPG through the extension), from the signatures' stored bytes, and the pull follows
// the new verdict; each judgement is in the audit log, the arrival naming the pusher and the
// re-verification naming the system. A result judged under an earlier policy counts for nothing
// until then, also when the policy changed while the server was down.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { adminToken, api, sleep } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { createGpgKey, standaloneSign, type GpgKey } from '../support/gpg.js';
import { adminClient, randomName, TestRegistry } from '../support/registry-client.js';
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

const deployer = { username: 'deployer', password: 'a deployer password' };
const ENV = { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' };
/** The server looks at the policies every 2 s; a run over a few results takes far less. */
const VERDICT_DEADLINE_MS = 20_000;

interface Signer {
  cosign: TestKey;
  gpg: GpgKey;
}

let dir: string;
let dataDir: string;
let server: RunningRegistry;
let admin: TestRegistry;
let deploy: TestRegistry;
let sigstore: FakeSigstore;
let keyA: Signer;
let keyB: Signer;

/** One signed image per format, each in a repository of its own. */
const images: Record<'cosign' | 'bundle' | 'gpg', { repository: string; digest: string }> = {
  cosign: { repository: '', digest: '' },
  bundle: { repository: '', digest: '' },
  gpg: { repository: '', digest: '' },
};

const cli = (args: string[], stdin?: string) => runCli(args, { dataDir, ...(stdin !== undefined ? { stdin } : {}) });

/** `portcullis trust apply` of the enforce policy for prod/**, its signers holding `keys` (plus `extra` cosign signers). */
async function applyPolicy(keys: Signer, extra: TestKey[] = []): Promise<void> {
  await writeFile(join(dataDir, 'cosign.pub'), keys.cosign.publicKeyPem);
  await writeFile(join(dataDir, 'release.asc'), keys.gpg.armoredPublicKey);
  await writeFile(join(dataDir, 'trusted_root.json'), JSON.stringify(sigstore.trustedRoot));
  const extraSigners: string[] = [];
  for (const [index, key] of extra.entries()) {
    await writeFile(join(dataDir, `extra-${index}.pub`), key.publicKeyPem);
    extraSigners.push(`        - name: extra-${index}`, `          cosign: extra-${index}.pub`);
  }
  await writeFile(
    join(dataDir, 'trust.yaml'),
    [
      'policies:',
      '  - repositories: prod/**',
      '    signatures:',
      '      mode: enforce',
      '      signers:',
      '        - name: release-cosign',
      '          cosign: cosign.pub',
      '        - name: release-gpg',
      '          gpg: release.asc',
      ...extraSigners,
      '      trustedRoot: trusted_root.json',
      '',
    ].join('\n'),
  );
  const applied = await cli(['trust', 'apply', '-f', join(dataDir, 'trust.yaml')]);
  assert.equal(applied.code, 0, applied.stderr);
}

/** The status a pull-only principal gets for each image, by format. */
async function pullStatuses(): Promise<Record<keyof typeof images, number>> {
  const status = async ({ repository, digest }: { repository: string; digest: string }) => (await deploy.fetch(`/v2/${repository}/manifests/${digest}`)).status;
  return { cosign: await status(images.cosign), bundle: await status(images.bundle), gpg: await status(images.gpg) };
}

/** Asks `look` until it answers `wanted` or the deadline passes; then compares. */
async function until<T>(look: () => Promise<T>, wanted: T): Promise<void> {
  const deadline = Date.now() + VERDICT_DEADLINE_MS;
  let seen = await look();
  while (!isDeepStrictEqual(seen, wanted) && Date.now() < deadline) {
    await sleep(200);
    seen = await look();
  }
  assert.deepEqual(seen, wanted);
}

/** Waits until every image answers `status` to the deployer. */
const untilEvery = (status: number) => until(pullStatuses, { cosign: status, bundle: status, gpg: status });

/** The outcome of the server's latest judgement (its own, not an arrival's) of each image's signature. */
async function latestReverifications(): Promise<Record<keyof typeof images, string | undefined>> {
  const latest = async ({ repository }: { repository: string }) =>
    (await auditEvents('signature.verified', repository)).filter((event) => event.actorKind === 'system').at(-1)?.outcome;
  return { cosign: await latest(images.cosign), bundle: await latest(images.bundle), gpg: await latest(images.gpg) };
}

interface AuditEvent {
  type: string;
  actorKind?: string;
  actor?: string;
  repository?: string;
  newDigest?: string;
  outcome?: string;
  reason?: string;
  details?: { format?: string; signer?: string; cause?: string; previousOutcome?: string };
}

/** A repository's audit events of `type`, oldest first. */
async function auditEvents(type: string, repository: string): Promise<AuditEvent[]> {
  const query = new URLSearchParams({ type, repository, limit: '1000' });
  const { status, body } = await api<{ events: AuditEvent[] }>(server.url, await adminToken(server), 'GET', `/admin/v1/audit?${query.toString()}`);
  assert.equal(status, 200, JSON.stringify(body));
  return body.events.reverse();
}

/** Stores a GPG signature of a manifest through the signature extension, as skopeo does. */
async function putGpgSignature(repository: string, digest: string, content: Buffer): Promise<void> {
  const token = await admin.token([`repository:${repository}:pull,push`]);
  const body = { schemaVersion: 2, name: `${digest}@${randomBytes(16).toString('hex')}`, type: 'atomic', content: content.toString('base64') };
  const response = await fetch(`${server.url}/extensions/v2/${repository}/signatures/${digest}`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 201, await response.text());
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-reverify-'));
  dataDir = join(dir, 'data');
  sigstore = await createFakeSigstore();
  keyA = { cosign: makeKey('ecdsa-p256'), gpg: await createGpgKey(join(dir, 'gpg-a'), 'Release A <a@example.test>') };
  keyB = { cosign: makeKey('ecdsa-p256'), gpg: await createGpgKey(join(dir, 'gpg-b'), 'Release B <b@example.test>') };
  // A data directory of the test's own: the server is restarted on it below.
  server = await startPortcullis({ env: ENV, dataDir });
  admin = adminClient(server);
  deploy = new TestRegistry(server.url, deployer);
  assert.equal((await cli(['user', 'add', deployer.username, '--password-stdin'], deployer.password)).code, 0);
  await writeFile(join(dataDir, 'rules.yaml'), 'rules:\n  - subject: user:deployer\n    repositories: prod/**\n    actions: [pull]\n');
  assert.equal((await cli(['policy', 'apply', '-f', join(dataDir, 'rules.yaml')])).code, 0);
  await applyPolicy(keyA);

  // Each image signed with key A, in its format.
  for (const format of ['cosign', 'bundle', 'gpg'] as const) {
    const repository = `prod/${randomName(format)}`;
    const image = await admin.pushImage(repository, 'v1');
    const digest = image.descriptor.digest;
    images[format] = { repository, digest };
    const reference = `${server.host}/${repository}`;
    if (format === 'cosign') await pushCosignSignature(admin, repository, digest, keyA.cosign, cosignPayload({ reference, digest }));
    if (format === 'bundle') await pushSigstoreBundle(admin, repository, image.descriptor, await sigstore.signWithKey(inTotoStatement({ digest, name: reference }), keyA.cosign));
    if (format === 'gpg') await putGpgSignature(repository, digest, await standaloneSign(keyA.gpg, Buffer.from(JSON.stringify(image.manifest)), `${reference}:v1`, dir));
  }
});

after(async () => {
  await server?.stop();
  await keyA?.gpg.close();
  await keyB?.gpg.close();
  await rm(dir, { recursive: true, force: true });
});

describe('when a policy replaces a signer key', () => {
  it('serves each image signed with the key in force, and records each arrival naming the pusher', async () => {
    assert.deepEqual(await pullStatuses(), { cosign: 200, bundle: 200, gpg: 200 });
    for (const [format, { repository, digest }] of Object.entries(images)) {
      const stored = await auditEvents('signature.stored', repository);
      const verified = await auditEvents('signature.verified', repository);
      assert.equal(stored.length, 1, `${format}: ${JSON.stringify(stored)}`);
      assert.deepEqual([stored[0]?.actor, stored[0]?.actorKind, stored[0]?.newDigest], ['admin', 'user', digest], format);
      assert.deepEqual(
        verified.map((event) => [event.actor, event.actorKind, event.outcome, event.newDigest]),
        [['admin', 'user', 'success', digest]],
        `${format}: ${JSON.stringify(verified)}`,
      );
    }
  });

  it('judges every stored signature again: the images are refused under the new key, and served again when key A is back', async () => {
    await applyPolicy(keyB);
    // (Refused at once: the results of the earlier policy count for nothing. Judged again, they stay refused.)
    await until(latestReverifications, { cosign: 'failure', bundle: 'failure', gpg: 'failure' });
    assert.deepEqual(await pullStatuses(), { cosign: 403, bundle: 403, gpg: 403 });
    const refused = await deploy.fetch(`/v2/${images.cosign.repository}/manifests/${images.cosign.digest}`);
    assert.match(await refused.text(), /DENIED/);

    // Served again only once judged again under key A: the results of key B's policy are stale too.
    await applyPolicy(keyA);
    await untilEvery(200);
    assert.deepEqual(await latestReverifications(), { cosign: 'success', bundle: 'success', gpg: 'success' });
  });

  it('records each judgement again as the system’s, with the verdict it replaced', async () => {
    for (const [format, { repository, digest }] of Object.entries(images)) {
      const system = (await auditEvents('signature.verified', repository)).filter((event) => event.actorKind === 'system');
      assert.deepEqual(
        system.map((event) => [event.outcome, event.details?.previousOutcome, event.details?.cause, event.newDigest]),
        [
          ['failure', 'valid', 'trust policy changed', digest],
          ['success', 'invalid', 'trust policy changed', digest],
        ],
        `${format}: ${JSON.stringify(system)}`,
      );
      assert.equal(system[0]?.actor, undefined, format);
      assert.ok((system[0]?.reason ?? '').length > 0, format);
    }
  });
});

describe('when the policy changed while the server was down', () => {
  it('counts no result of the earlier policy, and judges them again when the server starts', async () => {
    await server.stop();
    // The same key A, but the policy is another one (one more signer): every verdict is stale.
    await applyPolicy(keyA, [makeKey('ecdsa-p256')]);
    const stale = await cli(['trust', 'check', `${images.cosign.repository}@${images.cosign.digest}`]);
    assert.equal(stale.code, 1, `a result judged under the earlier policy must not satisfy this one:\n${stale.stdout}${stale.stderr}`);

    server = await startPortcullis({ env: ENV, dataDir });
    admin = adminClient(server);
    deploy = new TestRegistry(server.url, deployer);
    await untilEvery(200);
    const current = await cli(['trust', 'check', `${images.cosign.repository}@${images.cosign.digest}`]);
    assert.equal(current.code, 0, current.stdout);
    const system = (await auditEvents('signature.verified', images.gpg.repository)).filter((event) => event.actorKind === 'system');
    assert.deepEqual(system.at(-1) && [system.at(-1)?.outcome, system.at(-1)?.details?.previousOutcome], ['success', 'valid']);
  });
});
