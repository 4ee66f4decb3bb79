// The audit trail cannot be blinded: an event the database would refuse (a NUL byte in a user
// name, an over-long value) is made storable before it is queued, and never takes the events
// queued with it down.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { adminToken, api, basic } from '../auth/support.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { randomName } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

interface AuditEntry {
  type: string;
  actor?: string;
  clientIp?: string;
}

describe('audit writes on PostgreSQL', () => {
  let database: TestDatabase;
  let server: RunningRegistry;

  before(async () => {
    database = await createTestDatabase();
    server = await startPortcullis({ env: postgresEnv(database) });
  });
  after(async () => {
    await server?.stop();
    await database?.drop();
  });

  it('records every failed login of a batch, hostile names included', async () => {
    const marker = randomName('who');
    const names = [`${marker}-plain`, `${marker}-nul\u0000byte`, `${marker}-long-${'x'.repeat(400)}`, `${marker}-bell\u0007`, `${marker}-after`];
    // Sent together, so they share one batched write.
    const responses = await Promise.all(
      names.map((name) => fetch(`${server.url}/auth/token?service=portcullis`, { headers: { Authorization: basic({ username: name, password: 'wrong-password' }) } })),
    );
    assert.deepEqual(responses.map((r) => r.status), names.map(() => 401));
    const token = await adminToken(server);
    const { body } = await api<{ events: AuditEntry[] }>(server.url, token, 'GET', '/admin/v1/audit?type=login.failure&limit=1000');
    const ours = body.events.filter((event) => event.actor?.startsWith(marker));
    assert.equal(ours.length, names.length, JSON.stringify(ours.map((e) => e.actor)));
    const actors = ours.map((event) => event.actor ?? '');
    assert.ok(actors.includes(`${marker}-nul\ufffdbyte`), 'the NUL is replaced, the rest kept');
    assert.ok(actors.includes(`${marker}-bell\ufffd`));
    const long = actors.find((actor) => actor.startsWith(`${marker}-long-`)) ?? '';
    assert.equal(long.length, 255);
    for (const event of ours) assert.equal(event.clientIp, '127.0.0.1');
  });
});
