// Trust policies from the CLI (apply with its difference, dry run, export, bad files), and the
// immutable tags they declare, enforced over HTTP and against a real client.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminToken, api } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, expectError, OCI_MANIFEST, randomName, type TestRegistry } from '../support/registry-client.js';

let server: RunningRegistry;
let registry: TestRegistry;

const POLICIES = `
policies:
  - repositories: prod/**
    immutableTags: ["v*", "stable"]
  - repositories: prod/sandbox/**
    signatures: { mode: off }
`;

async function policyFile(name: string, text: string): Promise<string> {
  const path = join(server.dataDir, name);
  await writeFile(path, text);
  return path;
}

const trust = (args: string[]) => runCli(['trust', ...args], { dataDir: server.dataDir });

before(async () => {
  // Rules re-read at once, so a policy applied by the CLI is in force for the next request.
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  registry = adminClient(server);
});
after(() => server.stop());

describe('portcullis trust', () => {
  it('applies a policy file with a dry run first, shows the difference, and exports it back', async () => {
    const file = await policyFile('trust.yaml', POLICIES);
    const dry = await trust(['apply', '-f', file, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(dry.stdout, '+ prod/**\n+ prod/sandbox/**\n(dry run: nothing changed)\n');
    assert.equal((await trust(['export'])).stdout, 'policies: []\n');
    const applied = await trust(['apply', '-f', file]);
    assert.equal(applied.stdout, '+ prod/**\n+ prod/sandbox/**\n');
    assert.equal((await trust(['apply', '-f', file])).stdout, 'no changes\n');
    const exported = await trust(['export']);
    assert.match(exported.stdout, /repositories: prod\/\*\*\n {4}immutableTags:\n {6}- v\*\n {6}- stable/);
    const again = await policyFile('exported.yaml', exported.stdout);
    assert.equal((await trust(['apply', '-f', again])).stdout, 'no changes\n', 'an export applies back unchanged');
    // The change is in the audit log, once (the dry run and the runs that changed nothing are not).
    const token = await adminToken(server);
    const { body } = await api<{ events: { type: string; actorKind?: string; details?: Record<string, unknown> }[] }>(server.url, token, 'GET', '/admin/v1/audit?type=trust.changed');
    assert.equal(body.events.length, 1, JSON.stringify(body.events));
    assert.equal(body.events[0]?.actorKind, 'cli');
    // The difference, and where the policies came from.
    assert.deepEqual(body.events[0]?.details, { source: file, added: ['prod/**', 'prod/sandbox/**'], removed: [], changed: [] });
  });

  it('refuses a bad file naming the key, and changes nothing', async () => {
    const cases: [string, RegExp][] = [
      ['policies:\n  - repositories: prod/**\n    signatures: { mode: enforcing }\n', /policies\[0\]\.signatures\.mode: must be one of enforce, audit, off/],
      ['policies:\n  - repositories: PROD/**\n', /policies\[0\]\.repositories: /],
      ['policies:\n  - repositories: prod/**\n    immutableTags: ["v(1)"]\n', /policies\[0\]\.immutableTags: invalid tag glob/],
      ['policies:\n  - repositories: prod/**\n    signatures:\n      mode: enforce\n      signers: [{ name: k, gpg: keys/missing.asc }]\n', /policies\[0\]\.signatures\.signers\[0\]\.gpg: .*missing\.asc/],
      ['policies:\n  - repositories: prod/**\n    signatures: { mode: enforce }\n', /policies\[0\]\.signatures\.signers: enforce needs at least one signer/],
      ['policies:\n  - repositories: prod/**\n  - repositories: prod/**\n', /policies\[1\]\.repositories: prod\/\*\* has a policy already/],
      ['rules: []\n', /expected a top-level "policies:" list/],
    ];
    const before = (await trust(['export'])).stdout;
    for (const [text, message] of cases) {
      const result = await trust(['apply', '-f', await policyFile('bad.yaml', text)]);
      assert.equal(result.code, 2, `${text}\n${result.stdout}${result.stderr}`);
      assert.match(result.stderr, message);
    }
    assert.equal((await trust(['export'])).stdout, before);
  });
});

describe('immutable tags', () => {
  const push = (repository: string, tag: string, manifest: object) =>
    registry.fetch(`/v2/${repository}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: JSON.stringify(manifest) });

  before(async () => {
    const file = await policyFile('trust.yaml', POLICIES);
    assert.equal((await trust(['apply', '-f', file])).code, 0);
  });

  it('lets a tag be pushed once and re-pushed unchanged, and refuses to move it, naming the policy', async () => {
    const repository = `prod/${randomName()}`;
    const first = await registry.pushImage(repository, 'v1');
    const again = await push(repository, 'v1', first.manifest);
    assert.equal(again.status, 201, 'the identical digest again');
    const other = await registry.pushImage(repository, 'build-2');
    const moved = await push(repository, 'v1', other.manifest);
    await expectError(moved.clone(), 403, 'DENIED');
    assert.match(await moved.text(), /tag v1 is immutable under the trust policy for prod\/\*\*/);
    const served = await registry.fetch(`/v2/${repository}/manifests/v1`, { method: 'HEAD' });
    assert.equal(served.headers.get('Docker-Content-Digest'), first.descriptor.digest, 'the tag did not move');
    // Tags the policy does not name move as usual.
    assert.equal((await push(repository, 'latest', first.manifest)).status, 201);
    assert.equal((await push(repository, 'latest', other.manifest)).status, 201);
  });

  it('refuses to delete a protected tag, or the manifest it points at', async () => {
    const repository = `prod/${randomName()}`;
    const image = await registry.pushImage(repository, 'stable');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/stable`, { method: 'DELETE' }), 403, 'DENIED');
    await expectError(await registry.fetch(`/v2/${repository}/manifests/${image.descriptor.digest}`, { method: 'DELETE' }), 403, 'DENIED');
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/stable`, { method: 'HEAD' })).status, 200);
    // A manifest no protected tag points at goes as before.
    const loose = await registry.pushImage(repository, 'scratch');
    assert.equal((await registry.fetch(`/v2/${repository}/manifests/${loose.descriptor.digest}`, { method: 'DELETE' })).status, 202);
  });

  it('applies the most specific policy, and none outside every pattern', async () => {
    for (const repository of [`prod/sandbox/${randomName()}`, randomName()]) {
      await registry.pushImage(repository, 'v1');
      const other = await registry.pushImage(repository, 'other');
      assert.equal((await push(repository, 'v1', other.manifest)).status, 201, `${repository}: v1 moves`);
      assert.equal((await registry.fetch(`/v2/${repository}/manifests/v1`, { method: 'DELETE' })).status, 202);
    }
  });

  it('lets exactly one of simultaneous first pushes of different images take a protected tag', async () => {
    const repository = `prod/${randomName()}`;
    const images = await Promise.all(Array.from({ length: 6 }, (_, i) => registry.pushImage(repository, `candidate-${i}`)));
    const results = await Promise.all(images.map((image) => push(repository, 'v9', image.manifest)));
    const statuses = results.map((result) => result.status);
    assert.equal(statuses.filter((status) => status === 201).length, 1, statuses.join(','));
    assert.equal(statuses.filter((status) => status === 403).length, images.length - 1, statuses.join(','));
    const winner = images[statuses.indexOf(201)];
    const served = await registry.fetch(`/v2/${repository}/manifests/v9`, { method: 'HEAD' });
    assert.equal(served.headers.get('Docker-Content-Digest'), winner?.descriptor.digest);
  });
});
