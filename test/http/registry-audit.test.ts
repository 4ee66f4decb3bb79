// Every change to what a repository holds is in the audit log, written in the transaction that
// makes it, on SQLite and on PostgreSQL: manifest pushes, tag creations, moves and deletions,
// manifest and blob deletions, and the moves and deletions an immutable tag refused. A change
// whose event the database refuses is refused whole; concurrent pushes of one tag leave a
// history in which each move starts where the previous one ended.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEntry } from '../../src/audit/events.js';
import { adminToken, api } from '../auth/support.js';
import { BACKENDS, cli, type Backend } from '../support/audit-backends.js';
import { adminClient, OCI_MANIFEST, randomName, sha256, type TestRegistry } from '../support/registry-client.js';
import type { RunningRegistry } from '../support/server.js';

/** What an event says, without its place in the chain or its time. */
const gist = ({ type, tag, oldDigest, newDigest, outcome }: AuditEntry) => ({
  type,
  ...(tag !== undefined ? { tag } : {}),
  ...(oldDigest !== undefined ? { oldDigest } : {}),
  ...(newDigest !== undefined ? { newDigest } : {}),
  outcome,
});

for (const backend of BACKENDS) {
  describe(`registry changes in the audit log on ${backend.name}`, () => {
    let running: Awaited<ReturnType<Backend['start']>>;
    let server: RunningRegistry;
    let client: TestRegistry;
    let token: string;

    before(async () => {
      running = await backend.start({ PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' });
      server = running.server;
      client = adminClient(server);
      token = await adminToken(server);
    });
    after(() => running?.stop());

    /** The events about one repository, oldest first. */
    async function history(repository: string): Promise<AuditEntry[]> {
      const { status, body } = await api<{ events: AuditEntry[] }>(server.url, token, 'GET', `/admin/v1/audit?repository=${encodeURIComponent(repository)}&limit=1000`);
      assert.equal(status, 200);
      return body.events.reverse();
    }

    const remove = async (path: string) => (await client.fetch(path, { method: 'DELETE' })).status;

    it('records pushes, tag creation, moves and deletions, and manifest and blob deletions, naming who and from where', async () => {
      const repository = `audited/${randomName()}`;
      const first = await client.pushImage(repository, 'v1');
      await client.pushManifest(repository, 'v1', first.manifest, OCI_MANIFEST); // the same again: no tag event
      const second = await client.pushImage(repository, 'v1');
      await client.pushManifest(repository, 'v2', first.manifest, OCI_MANIFEST);
      assert.equal(await remove(`/v2/${repository}/manifests/v1`), 202);
      assert.equal(await remove(`/v2/${repository}/manifests/${first.descriptor.digest}`), 202);
      const layer = second.layers[0]?.digest ?? '';
      assert.equal(await remove(`/v2/${repository}/blobs/${layer}`), 202);

      const events = await history(repository);
      const a = first.descriptor.digest;
      const b = second.descriptor.digest;
      assert.deepEqual(events.map(gist), [
        { type: 'manifest.pushed', tag: 'v1', newDigest: a, outcome: 'success' },
        { type: 'tag.created', tag: 'v1', newDigest: a, outcome: 'success' },
        { type: 'manifest.pushed', tag: 'v1', newDigest: a, outcome: 'success' },
        { type: 'manifest.pushed', tag: 'v1', newDigest: b, outcome: 'success' },
        { type: 'tag.moved', tag: 'v1', oldDigest: a, newDigest: b, outcome: 'success' },
        { type: 'manifest.pushed', tag: 'v2', newDigest: a, outcome: 'success' },
        { type: 'tag.created', tag: 'v2', newDigest: a, outcome: 'success' },
        { type: 'tag.deleted', tag: 'v1', oldDigest: b, outcome: 'success' },
        { type: 'tag.deleted', tag: 'v2', oldDigest: a, outcome: 'success' },
        { type: 'manifest.deleted', oldDigest: a, outcome: 'success' },
        { type: 'blob.deleted', oldDigest: layer, outcome: 'success' },
      ]);
      for (const event of events) {
        assert.equal(event.actor, server.admin.username);
        assert.equal(event.actorKind, 'user');
        assert.equal(event.repository, repository);
        assert.equal(event.clientIp, '127.0.0.1');
      }
      assert.deepEqual(events.find((event) => event.type === 'manifest.deleted')?.details, { tags: ['v2'] });

      const verified = await cli(running.cliEnv, ['audit', 'verify']);
      assert.equal(verified.code, 0, verified.stderr);
    });

    it('records no push that failed, and refuses a push or delete whose event the database refuses, keeping what was there', async () => {
      const repository = `audited/${randomName()}`;
      const image = await client.pushImage(repository, 'v1');
      const missing = { ...image.manifest, layers: [{ ...image.layers[0], digest: `sha256:${'0'.repeat(64)}` }] };
      const refusedPush = await client.fetch(`/v2/${repository}/manifests/v2`, {
        method: 'PUT',
        headers: { 'Content-Type': OCI_MANIFEST },
        body: JSON.stringify(missing),
      });
      assert.equal(refusedPush.status, 400);

      const allow = await running.refuse('tag.moved');
      try {
        const other = { ...image.manifest, annotations: { note: 'another image' } };
        const push = await client.fetch(`/v2/${repository}/manifests/v1`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: JSON.stringify(other) });
        assert.equal(push.status, 500, await push.text());
        const head = await client.fetch(`/v2/${repository}/manifests/v1`, { method: 'HEAD' });
        assert.equal(head.headers.get('Docker-Content-Digest'), image.descriptor.digest, 'v1 did not move');
        const strayDigest = sha256(Buffer.from(JSON.stringify(other)));
        assert.equal((await client.fetch(`/v2/${repository}/manifests/${strayDigest}`, { method: 'HEAD' })).status, 404, 'the refused manifest was not stored');
      } finally {
        await allow();
      }
      const allowDelete = await running.refuse('tag.deleted');
      try {
        assert.equal(await remove(`/v2/${repository}/manifests/v1`), 500);
        assert.equal((await client.fetch(`/v2/${repository}/manifests/v1`, { method: 'HEAD' })).status, 200, 'v1 is still there');
      } finally {
        await allowDelete();
      }
      const events = await history(repository);
      assert.deepEqual(
        events.map((event) => event.type),
        ['manifest.pushed', 'tag.created'],
        'only the first push is recorded',
      );
    });

    it('records the moves and deletions an immutable tag refused, as denied, with the reason', async () => {
      const file = join(server.dataDir, `trust-${randomName()}.yaml`);
      await writeFile(file, 'policies:\n  - repositories: locked/**\n    immutableTags: ["v*"]\n');
      const applied = await cli(running.cliEnv, ['trust', 'apply', '-f', file]);
      assert.equal(applied.code, 0, applied.stderr);
      const repository = `locked/${randomName()}`;
      const first = await client.pushImage(repository, 'v1');
      const other = { ...first.manifest, annotations: { note: 'a replacement' } };
      const move = await client.fetch(`/v2/${repository}/manifests/v1`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: JSON.stringify(other) });
      assert.equal(move.status, 403);
      assert.equal(await remove(`/v2/${repository}/manifests/v1`), 403);
      assert.equal(await remove(`/v2/${repository}/manifests/${first.descriptor.digest}`), 403);

      const events = await history(repository);
      const denied = events.filter((event) => event.outcome === 'denied');
      assert.deepEqual(
        denied.map((event) => ({ type: event.type, tag: event.tag, oldDigest: event.oldDigest })),
        [
          { type: 'tag.moved', tag: 'v1', oldDigest: first.descriptor.digest },
          { type: 'tag.deleted', tag: 'v1', oldDigest: first.descriptor.digest },
          { type: 'manifest.deleted', tag: undefined, oldDigest: first.descriptor.digest },
        ],
        JSON.stringify(events) + server.output().split('\n').filter((line) => /"level":[45]0/.test(line)).join('\n'),
      );
      for (const event of denied) assert.match(event.reason ?? '', /immutable under the trust policy for locked\/\*\*/);
    });

    it('keeps one consistent history when many pushes move one tag at once', async () => {
      const repository = `audited/${randomName()}`;
      const base = await client.pushImage(repository, 'base');
      const pushes = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          client.fetch(`/v2/${repository}/manifests/latest`, {
            method: 'PUT',
            headers: { 'Content-Type': OCI_MANIFEST },
            body: JSON.stringify({ ...base.manifest, annotations: { racer: String(i) } }),
          }),
        ),
      );
      assert.deepEqual(pushes.map((response) => response.status), Array(8).fill(201), server.output().split('\n').filter((line) => line.includes('"level":50')).join('\n'));
      const moves = (await history(repository)).filter((event) => event.tag === 'latest' && event.type.startsWith('tag.'));
      assert.equal(moves[0]?.type, 'tag.created');
      assert.equal(moves.length, 8, 'each push created or moved the tag once');
      for (let i = 1; i < moves.length; i++) {
        assert.equal(moves[i]?.type, 'tag.moved');
        assert.equal(moves[i]?.oldDigest, moves[i - 1]?.newDigest, 'each move starts where the previous one ended');
      }
      const head = await client.fetch(`/v2/${repository}/manifests/latest`, { method: 'HEAD' });
      assert.equal(head.headers.get('Docker-Content-Digest'), moves[moves.length - 1]?.newDigest, 'the last move is where the tag points');
    });
  });
}
