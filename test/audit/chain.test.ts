// The audit log as a hash chain, end to end on SQLite and on PostgreSQL: events appended at once
// by every writer there is (one server, or two server processes on one PostgreSQL, plus another
// process writing directly) form one chain; that chain can be re-checked with a few lines of
// code from the documented canonical form; `portcullis audit verify` finds a changed row, a row
// whose hash was recomputed, a deleted row and a cut-off end, naming the event; the migration
// chains events recorded before the chain existed; `GET /admin/v1/audit` filters and pages; and
// the auditors' role reads the log and nothing else administrative.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Knex } from 'knex';
import { migrationSource } from '../../migrations/index.js';
import { auditRecord, type AuditEvent } from '../../src/audit/events.js';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { KnexAuthStores } from '../../src/metadata/knex-auth-stores.js';
import { accessOf, addUser, adminToken, api, basic, requestFrom, tokenFor, type ApiResponse } from '../auth/support.js';
import { createTestDatabase, postgresEnv, type TestDatabase } from '../support/postgres.js';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';

type Row = Record<string, unknown>;

interface Deployment {
  /** One server on SQLite; two server processes on one PostgreSQL database. */
  servers: RunningRegistry[];
  /** Environment for CLI commands on the same database. */
  cliEnv: Record<string, string>;
  /** The same database, opened by this process: a writer beside the servers. */
  db: Knex;
  /** One statement straight on the database (`?` placeholders), as someone with access to it would. */
  sql(statement: string, values?: unknown[]): Promise<Row[]>;
  stop(): Promise<void>;
}

interface Backend {
  name: 'SQLite' | 'PostgreSQL';
  start(): Promise<Deployment>;
  /** An empty database of this kind, opened by this process, for the migration test. */
  fresh(): Promise<{ db: Knex; cliEnv: Record<string, string>; close(): Promise<void> }>;
}

// Many failed logins from one address: the per-address throttle must not turn them into 429s.
const SERVER_ENV = { PORTCULLIS_AUTH_LOGIN_THROTTLE_FREE_FAILURES_PER_ADDRESS: '100000', PORTCULLIS_AUTH_LOGIN_THROTTLE_MIN_FAILED_LOGIN_MS: '0' };

const BACKENDS: Backend[] = [
  {
    name: 'SQLite',
    async start() {
      const server = await startPortcullis({ env: SERVER_ENV });
      const path = join(server.dataDir, 'portcullis.db');
      const db = openDatabase({ driver: 'sqlite', path });
      return {
        servers: [server],
        cliEnv: { PORTCULLIS_DATA_DIR: server.dataDir },
        db,
        async sql(statement, values = []) {
          const direct = new Database(path, { timeout: 10_000 });
          try {
            const prepared = direct.prepare(statement);
            return prepared.reader ? (prepared.all(...values) as Row[]) : (prepared.run(...values), []);
          } finally {
            direct.close();
          }
        },
        async stop() {
          await db.destroy();
          await server.stop();
        },
      };
    },
    async fresh() {
      const dir = await mkdtemp(join(tmpdir(), 'portcullis-audit-chain-'));
      const db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
      return {
        db,
        cliEnv: { PORTCULLIS_DATA_DIR: dir },
        async close() {
          await db.destroy();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    async start() {
      const database: TestDatabase = await createTestDatabase();
      // Both servers share the data folder for its signing keys, as replicas must.
      const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-audit-replicas-'));
      const env = { ...postgresEnv(database), ...SERVER_ENV };
      const first = await startPortcullis({ env, dataDir });
      const second = await startPortcullis({ env, dataDir });
      const db = openDatabase({ driver: 'postgres', url: database.url, poolMax: 4 });
      return {
        servers: [first, second],
        cliEnv: postgresEnv(database),
        db,
        async sql(statement, values = []) {
          let index = 0;
          return (await database.query(statement.replace(/\?/g, () => `$${++index}`), values)).rows as Row[];
        },
        async stop() {
          await db.destroy();
          await first.stop();
          await second.stop();
          await rm(dataDir, { recursive: true, force: true });
          await database.drop();
        },
      };
    },
    async fresh() {
      const database = await createTestDatabase();
      const db = openDatabase({ driver: 'postgres', url: database.url, poolMax: 2 });
      return {
        db,
        cliEnv: postgresEnv(database),
        async close() {
          await db.destroy();
          await database.drop();
        },
      };
    },
  },
];

/** Runs the CLI; resolves with its exit code and output. */
function cli(env: Record<string, string>, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const GENESIS = '0'.repeat(64);

/**
 * The canonical form exactly as documented (README, src/metadata/audit-chain.ts), written again here
 * without the project's code: what anyone re-checking a copy of the table would write.
 */
function recheck(rows: readonly Row[]): string {
  let previous = GENESIS;
  rows.forEach((row, index) => {
    assert.equal(Number(row.seq), index + 1, 'positions count up from 1 without gaps');
    assert.equal(row.prev_hash, previous, `event ${index + 1} links to the one before`);
    const fields = ['portcullis.audit.v1', Number(row.seq), previous, Number(row.at), row.type, row.actor_kind, row.actor, row.client_ip, row.repository, row.tag, row.old_digest, row.new_digest, row.outcome, row.reason, row.details];
    const hash = createHash('sha256').update(JSON.stringify(fields), 'utf8').digest('hex');
    assert.equal(row.hash, hash, `event ${index + 1} hashes as documented`);
    previous = hash;
  });
  return previous;
}

const CHAINED = 'id, seq, at, type, actor_kind, actor, client_ip, repository, tag, old_digest, new_digest, outcome, reason, details, prev_hash, hash';

interface Entry {
  seq: number;
  time: string;
  at: number;
  type: string;
  actorKind?: string;
  actor?: string;
  clientIp?: string;
  repository?: string;
  tag?: string;
  oldDigest?: string;
  newDigest?: string;
  outcome?: string;
  reason?: string;
  details?: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
}

/** Every page of a query, following each page's Link; the pages' sizes too. */
async function allPages(url: string, token: string, path: string): Promise<{ events: Entry[]; sizes: number[]; links: string[] }> {
  const events: Entry[] = [];
  const sizes: number[] = [];
  const links: string[] = [];
  let next: string | undefined = path;
  while (next !== undefined) {
    const response: ApiResponse<{ events: Entry[]; next?: string }> = await api<{ events: Entry[]; next?: string }>(url, token, 'GET', next);
    assert.equal(response.status, 200, response.text);
    events.push(...response.body.events);
    sizes.push(response.body.events.length);
    const link = response.headers.get('Link');
    if (link === null) {
      assert.equal(response.body.next, undefined);
      next = undefined;
    } else {
      links.push(link);
      const match = /^<([^>]+)>; rel="next"$/.exec(link);
      assert.ok(match, link);
      next = match[1] as string;
      assert.equal(new URL(next, url).searchParams.get('cursor'), response.body.next, 'the body names the same cursor');
    }
  }
  return { events, sizes, links };
}

/**
 * A failed login from a chosen loopback address (a server lets few logins from one address run
 * at once): 401, recorded as login.failure with the name tried and that address.
 */
async function failLogin(server: RunningRegistry, username: string, from: string): Promise<void> {
  const response = await requestFrom(from, `${server.url}/auth/token?service=portcullis`, { headers: { Authorization: basic({ username, password: 'not-the-password' }) } });
  assert.equal(response.status, 401, `${username}: ${response.body}`);
}

/** The loopback address the i-th failed login comes from. */
const addressFor = (i: number) => `127.0.0.${10 + (i % 20)}`;

const digest = (seed: string) => `sha256:${createHash('sha256').update(seed).digest('hex')}`;

for (const backend of BACKENDS) {
  describe(`the audit chain on ${backend.name}`, () => {
    let deployment: Deployment;
    let servers: RunningRegistry[];
    let token: string;
    /** The chain as verified after the concurrent writes: its length and head. */
    let verified: { count: number; head: string };

    before(async () => {
      deployment = await backend.start();
      servers = deployment.servers;
      token = await adminToken(servers[0] as RunningRegistry);
    });
    after(() => deployment?.stop());

    const first = () => servers[0] as RunningRegistry;
    const verify = () => cli(deployment.cliEnv, ['audit', 'verify']);
    const chainRows = () => deployment.sql(`SELECT ${CHAINED} FROM audit_events ORDER BY seq`);

    it(`events appended at once by ${backend.name === 'SQLite' ? 'the server and another process' : 'two servers and another process'} form one chain that verifies`, async () => {
      const marker = `who-${randomBytes(4).toString('hex')}`;
      const names = servers.flatMap((_, serverIndex) => Array.from({ length: 30 }, (_unused, i) => `${marker}-${serverIndex}-${i}`));
      const direct = new KnexAuthStores(deployment.db);
      await Promise.all([
        // Failed logins through every server: batched writes.
        ...names.map((name, i) => failLogin(servers[i % servers.length] as RunningRegistry, name, addressFor(i))),
        // Rule changes through every server: each in its own transaction with its event.
        ...Array.from({ length: 8 }, async (_, i) => {
          const through = servers[i % servers.length] as RunningRegistry;
          const response = await api(through.url, token, 'POST', '/admin/v1/rules', { subject: `user:${marker}-${i}`, repositories: `team-${i}/**`, actions: ['pull'] });
          assert.equal(response.status, 201, response.text);
        }),
        // And a writer that is no server at all, one event per transaction.
        ...Array.from({ length: 12 }, (_, i) =>
          direct.audit.append([auditRecord({ type: 'manifest.pushed', actor: `robot$${marker}`, repository: `${marker}/app`, newDigest: digest(`${marker}-${i}`) })]),
        ),
      ]);
      // Reading through each server writes out what it still holds in its batch.
      for (const server of servers) assert.equal((await api(server.url, token, 'GET', '/admin/v1/audit?limit=1')).status, 200);

      const result = await verify();
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const match = /^audit chain intact: (\d+) events, head ([0-9a-f]{64})\n$/.exec(result.stdout);
      assert.ok(match, result.stdout);
      verified = { count: Number(match[1]), head: match[2] as string };

      const { events } = await allPages(first().url, token, '/admin/v1/audit?limit=1000');
      assert.equal(events.length, verified.count, 'verify counted every event there is');
      assert.deepEqual(events.map((event) => event.seq), Array.from({ length: verified.count }, (_, i) => verified.count - i), 'newest first, no gaps');
      assert.equal(events[0]?.hash, verified.head, 'the head is the newest event');
      for (const [index, event] of events.entries()) assert.equal(event.prevHash, events[index + 1]?.hash ?? GENESIS);

      const failures = events.filter((event) => event.type === 'login.failure' && event.actor?.startsWith(`${marker}-`));
      assert.deepEqual(failures.map((event) => event.actor).sort(), [...names].sort(), 'every failed login once');
      for (const failure of failures) {
        assert.equal(failure.actorKind, 'user');
        assert.equal(failure.outcome, 'failure');
        assert.equal(failure.reason, 'unknown_user');
        assert.equal(failure.clientIp, addressFor(names.indexOf(failure.actor ?? '')));
      }
      const changes = events.filter((event) => event.type === 'rules.changed' && JSON.stringify(event.details).includes(marker));
      assert.equal(changes.length, 8);
      assert.ok(changes.every((event) => event.actor === 'admin' && event.actorKind === 'user' && event.outcome === 'success'));
      assert.equal(events.filter((event) => event.type === 'manifest.pushed' && event.repository === `${marker}/app`).length, 12);
    });

    it('the stored chain can be re-checked with a few lines of code, from the documented canonical form', async () => {
      const rows = await chainRows();
      assert.equal(rows.length, verified.count);
      assert.equal(recheck(rows), verified.head);
      const [head] = await deployment.sql('SELECT seq, hash FROM audit_chain_head');
      assert.deepEqual([Number(head?.seq), head?.hash], [verified.count, verified.head]);
    });

    it('a row changed in the database (an actor renamed) is found and named; put back, the chain verifies again', async () => {
      const seq = Math.ceil(verified.count / 2);
      const [row] = await deployment.sql('SELECT id, actor FROM audit_events WHERE seq = ?', [seq]);
      assert.ok(row);
      await deployment.sql('UPDATE audit_events SET actor = ? WHERE seq = ?', ['mallory', seq]);
      const broken = await verify();
      assert.equal(broken.code, 1, broken.stdout + broken.stderr);
      assert.match(broken.stdout, new RegExp(`^audit chain broken at event ${seq} \\(row id ${Number(row.id)}\\): its contents do not match its hash: stored [0-9a-f]{16}…, computed [0-9a-f]{16}…: the row was changed\\n$`));
      // The admin API (the console's Audit page) says the same; this is its first walk in this file.
      const answered = await api<{ intact: boolean; seq: number; id: number; problem: string; checkedAt: string }>(first().url, token, 'GET', '/admin/v1/audit/chain');
      assert.equal(answered.status, 200, answered.text);
      assert.deepEqual([answered.body.intact, answered.body.seq, answered.body.id], [false, seq, Number(row.id)]);
      assert.match(answered.body.problem, /the row was changed/);
      assert.ok(!Number.isNaN(Date.parse(answered.body.checkedAt)));

      await deployment.sql('UPDATE audit_events SET actor = ? WHERE seq = ?', [row.actor, seq]);
      const intact = await verify();
      assert.equal(intact.code, 0, intact.stdout);
      assert.equal(intact.stdout, `audit chain intact: ${verified.count} events, head ${verified.head}\n`);
    });

    it('a changed row whose hash was recomputed to match breaks the link of the event after it', async () => {
      const seq = Math.ceil(verified.count / 3);
      const [row] = await deployment.sql(`SELECT ${CHAINED} FROM audit_events WHERE seq = ?`, [seq]);
      assert.ok(row);
      const forged: Row = { ...row, type: 'login.success', outcome: 'success' };
      const fields = ['portcullis.audit.v1', seq, forged.prev_hash, Number(forged.at), forged.type, forged.actor_kind, forged.actor, forged.client_ip, forged.repository, forged.tag, forged.old_digest, forged.new_digest, forged.outcome, forged.reason, forged.details];
      const forgedHash = createHash('sha256').update(JSON.stringify(fields), 'utf8').digest('hex');
      await deployment.sql('UPDATE audit_events SET type = ?, outcome = ?, hash = ? WHERE seq = ?', [forged.type, forged.outcome, forgedHash, seq]);
      const broken = await verify();
      assert.equal(broken.code, 1, broken.stdout);
      assert.match(broken.stdout, new RegExp(`^audit chain broken at event ${seq + 1} \\(row id \\d+\\): its prev_hash [0-9a-f]{16}… does not match the hash of event ${seq} `));

      await deployment.sql('UPDATE audit_events SET type = ?, outcome = ?, hash = ? WHERE seq = ?', [row.type, row.outcome, row.hash, seq]);
      assert.equal((await verify()).code, 0);
    });

    it('a deleted row is found, in the middle of the chain and at its end', async () => {
      const restore = async (row: Row) => {
        const columns = Object.keys(row);
        await deployment.sql(`INSERT INTO audit_events (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`, Object.values(row));
      };
      const middle = Math.floor(verified.count / 2) + 1;
      const [inside] = await deployment.sql(`SELECT ${CHAINED} FROM audit_events WHERE seq = ?`, [middle]);
      assert.ok(inside);
      await deployment.sql('DELETE FROM audit_events WHERE seq = ?', [middle]);
      const gap = await verify();
      assert.equal(gap.code, 1, gap.stdout);
      assert.match(gap.stdout, new RegExp(`^audit chain broken at event ${middle}: event ${middle} is missing: the next event found is ${middle + 1} \\(row id \\d+\\)\\n$`));
      await restore(inside);
      assert.equal((await verify()).code, 0);

      const last = verified.count;
      const [newest] = await deployment.sql(`SELECT ${CHAINED} FROM audit_events WHERE seq = ?`, [last]);
      assert.ok(newest);
      await deployment.sql('DELETE FROM audit_events WHERE seq = ?', [last]);
      const cut = await verify();
      assert.equal(cut.code, 1, cut.stdout);
      assert.equal(cut.stdout, `audit chain broken at event ${last}: event ${last} is missing: the chain ends at event ${last - 1} but its head records ${last} events\n`);
      await restore(newest);
      const intact = await verify();
      assert.equal(intact.stdout, `audit chain intact: ${verified.count} events, head ${verified.head}\n`);
    });

    it('GET /admin/v1/audit filters by repository, type, actor, actor kind and time, newest first, in pages linked by RFC 8288 Link', async () => {
      const marker = `f${randomBytes(4).toString('hex')}`;
      const app = `${marker}/app`;
      const tool = `${marker}/tool`;
      const alice = `alice-${marker}`;
      const robot = `robot$ci-${marker}`;
      // Far in the past, so the time filters select these events only.
      const base = Date.UTC(2001, 0, 1);
      const minutes = (n: number) => base + n * 60_000;
      const recorded: [AuditEvent, number][] = [
        [{ type: 'tag.created', actor: alice, clientIp: '192.0.2.1', repository: app, tag: 'v1', newDigest: digest('one') }, minutes(0)],
        [{ type: 'tag.moved', actor: alice, clientIp: '192.0.2.1', repository: app, tag: 'v1', oldDigest: digest('one'), newDigest: digest('two') }, minutes(1)],
        [{ type: 'manifest.pushed', actor: robot, repository: tool, newDigest: digest('three') }, minutes(2)],
        [{ type: 'tag.deleted', actor: robot, repository: app, tag: 'v1', oldDigest: digest('two') }, minutes(3)],
        [{ type: 'pull.denied', actor: '', clientIp: '2001:db8::7', repository: app, tag: 'v1', outcome: 'denied', reason: 'no valid signature from a listed signer' }, minutes(4)],
        [{ type: 'signature.verified', actorKind: 'system', repository: app, newDigest: digest('two'), outcome: 'failure', reason: 'untrusted key', details: { format: 'cosign' } }, minutes(5)],
      ];
      const stores = new KnexAuthStores(deployment.db);
      for (const [event, at] of recorded) await stores.audit.append([auditRecord(event, at)]);
      const window = `since=${new Date(minutes(0)).toISOString()}&until=${minutes(60)}`;
      const query = async (parameters: string) => {
        const response = await api<{ events: Entry[]; next?: string }>(first().url, token, 'GET', `/admin/v1/audit?${parameters}`);
        assert.equal(response.status, 200, response.text);
        return response.body.events;
      };
      const types = (events: Entry[]) => events.map((event) => event.type);

      const all = await query(window);
      assert.deepEqual(types(all), ['signature.verified', 'pull.denied', 'tag.deleted', 'manifest.pushed', 'tag.moved', 'tag.created']);
      const moved = all.find((event) => event.type === 'tag.moved');
      assert.deepEqual(
        { ...moved, seq: undefined, prevHash: undefined, hash: undefined },
        {
          seq: undefined,
          time: '2001-01-01T00:01:00.000Z',
          at: minutes(1),
          type: 'tag.moved',
          actorKind: 'user',
          actor: alice,
          clientIp: '192.0.2.1',
          repository: app,
          tag: 'v1',
          oldDigest: digest('one'),
          newDigest: digest('two'),
          outcome: 'success',
          prevHash: undefined,
          hash: undefined,
        },
      );
      assert.match(moved?.hash ?? '', /^[0-9a-f]{64}$/);
      const denied = all.find((event) => event.type === 'pull.denied');
      assert.deepEqual([denied?.actorKind, denied?.outcome, denied?.reason, denied?.clientIp], ['anonymous', 'denied', 'no valid signature from a listed signer', '2001:db8::7']);
      assert.deepEqual(all.find((event) => event.type === 'signature.verified')?.details, { format: 'cosign' });

      assert.deepEqual(types(await query(`repository=${app}`)), ['signature.verified', 'pull.denied', 'tag.deleted', 'tag.moved', 'tag.created']);
      assert.deepEqual(types(await query(`repository=${app}&type=tag.created,tag.moved`)), ['tag.moved', 'tag.created']);
      assert.deepEqual(types(await query(`actor=${alice}`)), ['tag.moved', 'tag.created']);
      assert.deepEqual(types(await query(`actor=${encodeURIComponent(robot)}&type=manifest.pushed`)), ['manifest.pushed']);
      // A time with an offset: 01:02:30+01:00 is 00:02:30Z, after manifest.pushed.
      assert.deepEqual(types(await query(`actorKind=robot&since=${encodeURIComponent('2001-01-01T01:02:30+01:00')}&until=${minutes(60)}`)), ['tag.deleted']);
      assert.deepEqual(types(await query(`actorKind=system&${window}`)), ['signature.verified']);
      // since inclusive, until exclusive; either as epoch milliseconds or RFC 3339.
      assert.deepEqual(types(await query(`since=${minutes(1)}&until=2001-01-01T00:04:00Z`)), ['tag.deleted', 'manifest.pushed', 'tag.moved']);

      const paged = await allPages(first().url, token, `/admin/v1/audit?repository=${app}&${window}&limit=2`);
      assert.deepEqual(paged.sizes, [2, 2, 1]);
      assert.deepEqual(types(paged.events), ['signature.verified', 'pull.denied', 'tag.deleted', 'tag.moved', 'tag.created']);
      assert.equal(new Set(paged.events.map((event) => event.seq)).size, 5);
      // The link keeps every filter and the page size, and adds the cursor.
      const link = new URL(/^<([^>]+)>/.exec(paged.links[0] ?? '')?.[1] ?? '', first().url);
      assert.equal(link.pathname, '/admin/v1/audit');
      assert.deepEqual(
        [...link.searchParams.keys()].sort(),
        ['cursor', 'limit', 'repository', 'since', 'until'],
      );
      assert.equal(link.searchParams.get('repository'), app);
      assert.equal(link.searchParams.get('cursor'), String(paged.events[1]?.seq));
    });

    it('answers bad filter values with 400 problem documents that say what is wrong', async () => {
      const cases: [string, RegExp][] = [
        ['since=yesterday', /since must be an RFC 3339 time such as 2026-11-30T12:00:00Z, or epoch milliseconds/],
        ['until=2026-02-30T00:00:00Z', /until must be an RFC 3339 time/],
        ['since=2026-11-30T12:00:00', /since must be an RFC 3339 time/],
        ['since=2026-11-30T12:00:00Z&until=2026-11-30T11:00:00Z', /until must be later than since/],
        ['limit=0', /limit must be a whole number from 1 to 1000/],
        ['limit=1001', /limit must be a whole number from 1 to 1000/],
        ['cursor=abc', /cursor must be the value given in the Link of a previous page/],
        ['repository=Not/Valid', /repository must be a valid repository name/],
        ['actorKind=alien', /actorKind must be one of user, robot, anonymous, cli, system/],
        ['actor=al%07ice', /actor must be a user or robot name/],
        ['type=login%00', /type must be an event type such as login.failure/],
        ['type=login.failure&type=login.success', /give the query parameter type at most once/],
        ['repo=team-a/app', /unknown query parameter "repo": use type, actor, actorKind, repository, since, until, limit, cursor/],
      ];
      for (const [parameters, detail] of cases) {
        const response = await api<Problem>(first().url, token, 'GET', `/admin/v1/audit?${parameters}`);
        assert.equal(response.status, 400, `${parameters}: ${response.text}`);
        assert.equal(response.headers.get('Content-Type'), 'application/problem+json');
        assert.equal(response.body.title, 'Bad Request');
        assert.match(response.body.detail, detail, parameters);
      }
    });

    it('the migration chains events recorded before the chain existed: in id order, as documented', async () => {
      const fresh = await backend.fresh();
      try {
        const upTo004 = {
          ...migrationSource,
          getMigrations: async (loaders: readonly string[]) =>
            (await migrationSource.getMigrations(loaders)).filter((migration) => migrationSource.getMigrationName(migration) <= '20261130_004_admin_state'),
        };
        await fresh.db.migrate.latest({ migrationSource: upTo004 });
        // Ids with gaps, as PostgreSQL leaves them after rolled-back inserts.
        await fresh.db('audit_events').insert([
          { id: 3, at: 1_700_000_000_000, type: 'login.failure', actor: 'eve', client_ip: '192.0.2.66', details: '{"reason":"unknown_user"}' },
          { id: 7, at: 1_700_000_000_500, type: 'rules.changed', actor: 'admin', client_ip: '127.0.0.1', details: '{"added":{"subject":"user:eve"}}' },
          { id: 8, at: 1_700_000_001_000, type: 'login.success', actor: 'robot$ci', client_ip: null, repository: null, details: null },
        ]);
        await migrateToLatest(fresh.db);
        const rows = (await fresh.db('audit_events').orderBy('id').select(CHAINED.split(', '))) as Row[];
        assert.deepEqual(rows.map((row) => [Number(row.id), Number(row.seq)]), [[3, 1], [7, 2], [8, 3]]);
        assert.ok(rows.every((row) => row.actor_kind === null && row.outcome === null), 'what was not recorded then stays unknown');
        const head = recheck(rows);
        const result = await cli(fresh.cliEnv, ['audit', 'verify']);
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.equal(result.stdout, `audit chain intact: 3 events, head ${head}\n`);
      } finally {
        await fresh.close();
      }
    });
  });
}

describe('the auditors’ role: the action `audit` on `**`', () => {
  let server: RunningRegistry;
  let admin: string;
  const carol = { username: 'carol', password: 'carol-password-1234' };
  const dave = { username: 'dave', password: 'dave-password-1234' };

  before(async () => {
    server = await startPortcullis();
    await addUser(server.dataDir, carol.username, carol.password);
    await addUser(server.dataDir, dave.username, dave.password);
    admin = await adminToken(server);
    const rules = await api(server.url, admin, 'PUT', '/admin/v1/rules', {
      rules: [
        { subject: 'user:carol', repositories: '**', actions: ['pull', 'audit'] },
        // On part of the registry only: the log spans all of it, so this reads none of it.
        { subject: 'user:dave', repositories: 'team-a/**', actions: ['pull', 'push', 'audit'] },
      ],
    });
    assert.equal(rules.status, 200, rules.text);
  });
  after(() => server?.stop());

  const AUDIT_SCOPE = { type: 'registry', name: 'audit', actions: ['*'] };

  it('an auditor gets registry:audit:* (never registry:admin:*) and reads the audit log', async () => {
    const token = await tokenFor(server.url, carol, ['registry:audit:*', 'registry:admin:*']);
    assert.deepEqual(accessOf(token), [AUDIT_SCOPE]);
    const response = await api<{ events: Entry[] }>(server.url, token, 'GET', '/admin/v1/audit?type=rules.changed');
    assert.equal(response.status, 200, response.text);
    const [change] = response.body.events;
    assert.equal(change?.actor, 'admin');
    assert.deepEqual(
      (change?.details?.applied as { added: { subject: string }[] }).added.map((rule) => rule.subject),
      ['user:carol', 'user:dave'],
    );
  });

  it('an auditor reads the rules, the robots and access explanations, gets 403 on everything else administrative, and changes nothing', async () => {
    const token = await tokenFor(server.url, carol, ['registry:audit:*']);
    // Read-only views (the web console's, for auditors).
    for (const path of ['/admin/v1/rules', '/admin/v1/robots', '/admin/v1/access?subject=carol&repository=team-a/app', '/admin/v1/audit/chain']) {
      const response = await api(server.url, token, 'GET', path);
      assert.equal(response.status, 200, `GET ${path}: ${response.text}`);
    }
    const refused: [string, string, unknown?][] = [
      ['PUT', '/admin/v1/rules', { rules: [] }],
      ['POST', '/admin/v1/rules', { subject: 'user:carol', repositories: '**', actions: ['admin'] }],
      ['POST', '/admin/v1/robots', { name: 'carol-bot', rules: [{ repositories: '**', actions: ['push'] }] }],
      ['DELETE', '/admin/v1/rules/1'],
      ['GET', '/admin/v1/refresh-tokens'],
    ];
    for (const [method, path, body] of refused) {
      const response = await api<Problem>(server.url, token, method, path, body);
      assert.equal(response.status, 403, `${method} ${path}: ${response.text}`);
      assert.deepEqual(response.body, { type: 'about:blank', title: 'Forbidden', status: 403, detail: 'administrator rights required' });
    }
    const rules = await api<{ rules: { subject: string; actions: string[] }[] }>(server.url, admin, 'GET', '/admin/v1/rules');
    assert.deepEqual(rules.body.rules.map((rule) => [rule.subject, rule.actions]), [['user:carol', ['pull', 'audit']], ['user:dave', ['pull', 'push', 'audit']]]);
    const robots = await api<{ robots: unknown[] }>(server.url, admin, 'GET', '/admin/v1/robots');
    assert.deepEqual(robots.body.robots, []);
  });

  it('a non-auditor (audit on part of the registry only) gets no registry:audit:* and a 403 on the audit log', async () => {
    const token = await tokenFor(server.url, dave, ['registry:audit:*', 'repository:team-a/app:pull,push']);
    assert.deepEqual(accessOf(token), [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }]);
    const response = await api<Problem>(server.url, token, 'GET', '/admin/v1/audit');
    assert.equal(response.status, 403, response.text);
    assert.equal(response.body.detail, 'administrator or auditor rights required');
    assert.ok(!response.text.includes('rules.changed'));
  });

  it('a robot with `audit` on `**` reads the log (a SIEM exporter); an administrator may ask for registry:audit:* too', async () => {
    const created = await api<{ username: string; secret: string }>(server.url, admin, 'POST', '/admin/v1/robots', { name: 'siem', rules: [{ repositories: '**', actions: ['audit'] }] });
    assert.equal(created.status, 201, created.text);
    const robot = await tokenFor(server.url, { username: created.body.username, password: created.body.secret }, ['registry:audit:*', 'registry:admin:*']);
    assert.deepEqual(accessOf(robot), [AUDIT_SCOPE]);
    const read = await api<{ events: Entry[] }>(server.url, robot, 'GET', '/admin/v1/audit?type=robot.created');
    assert.equal(read.status, 200, read.text);
    assert.deepEqual(read.body.events.map((event) => event.details?.robot), ['siem']);
    assert.equal((await api(server.url, robot, 'GET', '/admin/v1/robots')).status, 200, 'read-only, as for any auditor');
    assert.equal((await api(server.url, robot, 'POST', '/admin/v1/robots', { name: 'more' })).status, 403);

    const administrator = await tokenFor(server.url, server.admin, ['registry:audit:*']);
    assert.deepEqual(accessOf(administrator), [AUDIT_SCOPE]);
    assert.equal((await api(server.url, administrator, 'GET', '/admin/v1/audit?limit=1')).status, 200);
  });
});
