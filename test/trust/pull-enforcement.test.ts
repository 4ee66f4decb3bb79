// The signature requirement at pull time: in `enforce`, a deploying principal (pull only) gets an
// image only with a valid signature from a policy signer; HEAD stays open to it and GET to the
// signers, signature artifacts stay readable; in `audit`, the pull is served and recorded.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminToken, api } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, expectError, OCI_INDEX, randomName, TestRegistry } from '../support/registry-client.js';
import { cosignPayload, makeKey, pushCosignSignature, type TestKey } from '../support/signing.js';

const deployer = { username: 'deployer', password: 'a deployer password' };

let server: RunningRegistry;
let admin: TestRegistry;
let deploy: TestRegistry;
let key: TestKey;

/** A cosign signature of `digest` by `by`, naming this registry's repository. */
async function sign(repository: string, digest: string, by: TestKey): Promise<void> {
  await pushCosignSignature(admin, repository, digest, by, cosignPayload({ reference: `${server.host}/${repository}`, digest }));
}

async function auditEvents(type: string): Promise<{ repository?: string; newDigest?: string; actor?: string }[]> {
  const { body } = await api<{ events: { repository?: string; newDigest?: string; actor?: string }[] }>(server.url, await adminToken(server), 'GET', `/admin/v1/audit?type=${type}`);
  return body.events;
}

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  admin = adminClient(server);
  deploy = new TestRegistry(server.url, deployer);
  key = makeKey('ecdsa-p256');
  const cli = (args: string[], stdin?: string) => runCli(args, { dataDir: server.dataDir, ...(stdin !== undefined ? { stdin } : {}) });
  assert.equal((await cli(['user', 'add', deployer.username, '--password-stdin'], deployer.password)).code, 0);
  await writeFile(join(server.dataDir, 'rules.yaml'), 'rules:\n  - subject: user:deployer\n    repositories: prod/**\n    actions: [pull]\n');
  assert.equal((await cli(['policy', 'apply', '-f', join(server.dataDir, 'rules.yaml')])).code, 0);
  await writeFile(join(server.dataDir, 'cosign.pub'), key.publicKeyPem);
  await writeFile(
    join(server.dataDir, 'trust.yaml'),
    [
      'policies:',
      '  - repositories: prod/**',
      '    signatures: { mode: enforce, signers: [{ name: release, cosign: cosign.pub }] }',
      '  - repositories: prod/audited/**',
      '    signatures: { mode: audit, signers: [{ name: release, cosign: cosign.pub }] }',
      '',
    ].join('\n'),
  );
  const applied = await cli(['trust', 'apply', '-f', join(server.dataDir, 'trust.yaml')]);
  assert.equal(applied.code, 0, applied.stderr);
});
after(() => server?.stop());

describe('enforce', () => {
  it('refuses an unsigned image to a pull-only principal, naming the policy, and records it', async () => {
    const repository = `prod/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    const refused = await deploy.fetch(`/v2/${repository}/manifests/v1`);
    await expectError(refused.clone(), 403, 'DENIED');
    assert.match(await refused.text(), /has no valid signature from a signer of the trust policy for prod\/\*\*/);
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/${image.descriptor.digest}`), 403, 'DENIED');
    const denied = await auditEvents('pull.denied');
    assert.ok(denied.some((event) => event.repository === repository && event.newDigest === image.descriptor.digest && event.actor === 'deployer'), JSON.stringify(denied));
  });

  it('keeps signing possible: HEAD answers the digest to a puller, GET serves a principal that may push', async () => {
    const repository = `prod/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    const head = await deploy.fetch(`/v2/${repository}/manifests/v1`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('Docker-Content-Digest'), image.descriptor.digest);
    // A signer asks for pull,push (as cosign does): its token carries push.
    assert.equal((await admin.fetch(`/v2/${repository}/manifests/v1`, {}, [`repository:${repository}:pull,push`])).status, 200);
    await expectError(await admin.fetch(`/v2/${repository}/manifests/v1`), 403, 'DENIED');
  });

  it('serves the image once a policy signer has signed it, and the signature itself all along', async () => {
    const repository = `prod/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    await sign(repository, image.descriptor.digest, makeKey('ecdsa-p256')); // an untrusted key changes nothing
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/v1`), 403, 'DENIED');
    await sign(repository, image.descriptor.digest, key);
    const served = await deploy.fetch(`/v2/${repository}/manifests/v1`);
    assert.equal(served.status, 200);
    assert.equal(served.headers.get('Docker-Content-Digest'), image.descriptor.digest);
    const signatureTag = `${image.descriptor.digest.replace(':', '-')}.sig`;
    assert.equal((await deploy.fetch(`/v2/${repository}/manifests/${signatureTag}`)).status, 200, 'signature artifacts stay readable');
  });

  it('serves an index only when it is signed itself', async () => {
    const repository = `prod/${randomName()}`;
    const child = await admin.pushImage(repository, 'amd64');
    await sign(repository, child.descriptor.digest, key);
    const index = await admin.pushManifest(repository, 'multi', { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [child.descriptor] }, OCI_INDEX);
    await expectError(await deploy.fetch(`/v2/${repository}/manifests/multi`), 403, 'DENIED');
    await sign(repository, index.digest, key);
    assert.equal((await deploy.fetch(`/v2/${repository}/manifests/multi`)).status, 200);
  });
});

describe('audit', () => {
  it('serves an unsigned image and records the unsatisfied pull', async () => {
    const repository = `prod/audited/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    assert.equal((await deploy.fetch(`/v2/${repository}/manifests/v1`)).status, 200);
    const recorded = await auditEvents('pull.unsatisfied');
    assert.ok(recorded.some((event) => event.repository === repository && event.newDigest === image.descriptor.digest), JSON.stringify(recorded));
  });
});

describe('portcullis trust check', () => {
  it('explains the policy, each signature with its outcome, and the verdict', async () => {
    const repository = `prod/${randomName()}`;
    const image = await admin.pushImage(repository, 'v1');
    const check = (image: string) => runCli(['trust', 'check', image], { dataDir: server.dataDir });

    const unsigned = await check(`${repository}:v1`);
    assert.equal(unsigned.code, 1, unsigned.stderr);
    assert.match(unsigned.stdout, new RegExp(`^image {7}${repository}:v1@${image.descriptor.digest}$`, 'm'));
    assert.match(unsigned.stdout, /^policy {6}prod\/\*\* \(signatures: enforce\)$/m);
    assert.match(unsigned.stdout, /^signatures {2}none$/m);
    assert.match(unsigned.stdout, /^verdict {5}refused to pull-only principals/m);

    await sign(repository, image.descriptor.digest, makeKey('ecdsa-p256'));
    await sign(repository, image.descriptor.digest, key);
    const signed = await check(`${repository}@${image.descriptor.digest}`);
    assert.equal(signed.code, 0, signed.stdout);
    assert.match(signed.stdout, /^ {2}valid {3}cosign {10}release {9}signed with release's key/m);
    assert.match(signed.stdout, /^ {2}invalid cosign {10}- {15}the signature does not verify/m);
    assert.match(signed.stdout, /^verdict {5}served \(valid signature from release\)$/m);

    const none = await check(`${randomName()}:v1`);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no such manifest/);
    const outside = `free/${randomName()}`;
    await admin.pushImage(outside, 'v1');
    const free = await check(`${outside}:v1`);
    assert.equal(free.code, 0);
    assert.match(free.stdout, /^policy {6}none applies: no requirements$/m);
  });
});
