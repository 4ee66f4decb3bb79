// The auth stores (users, access rules, robots, refresh tokens, audit events) on SQLite and on
// PostgreSQL: what each keeps and returns, the errors they report, and transactions across them —
// an administrative change and the audit event recording it commit together or not at all.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { pino, type Logger } from 'pino';
import { AuditLog } from '../../src/audit/events.js';
import { LocalUsers, UserError } from '../../src/auth/identity/local.js';
import type { AccessRule } from '../../src/auth/policy/rules.js';
import { AccessRuleStore } from '../../src/auth/policy/store.js';
import { RefreshTokens } from '../../src/auth/refresh-tokens.js';
import { RobotAccounts } from '../../src/auth/robots.js';
import type { AuditRecord, AuthStores, RefreshTokenRecord } from '../../src/metadata/auth-stores.js';
import { openDatabase } from '../../src/metadata/database.js';
import { DatabaseUnavailableError, UnstorableValueError } from '../../src/metadata/errors.js';
import { KnexAuthStores } from '../../src/metadata/knex-auth-stores.js';
import { METADATA_BACKENDS, type MetadataBackend } from '../support/metadata-backends.js';

/** An event the database itself refuses from now on (as a full disk or a lost privilege would), until the returned function runs. */
async function refuseAuditEvents(db: Knex, backend: MetadataBackend['name'], condition: { type?: string; actor?: string }): Promise<() => Promise<void>> {
  const [column, value] = condition.type !== undefined ? ['type', condition.type] : ['actor', condition.actor ?? ''];
  if (backend === 'SQLite') {
    await db.raw(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events WHEN NEW.${column} = '${value}' BEGIN SELECT RAISE(ABORT, 'audit event refused'); END`);
    return async () => {
      await db.raw('DROP TRIGGER refuse_audit');
    };
  }
  await db.raw(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit event refused'; END $$`);
  await db.raw(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.${column} = '${value}') EXECUTE FUNCTION refuse_audit()`);
  return async () => {
    await db.raw('DROP TRIGGER refuse_audit ON audit_events');
    await db.raw('DROP FUNCTION refuse_audit()');
  };
}

/** Whether another PostgreSQL session of this database waits for a lock. */
async function waitsForLock(db: Knex): Promise<boolean> {
  const result = (await db.raw("select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")) as { rows: { n: string }[] };
  return Number(result.rows[0]?.n ?? 0) > 0;
}

/** A logger whose error lines the test can read. */
function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'error' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

const silent = pino({ level: 'silent' });

const event = (type: string, actor: string, details?: unknown): AuditRecord => ({
  at: Date.now(),
  type,
  actor,
  ...(details !== undefined ? { details: JSON.stringify(details) } : {}),
});

const token = (id: string, name: string, createdAt: number): RefreshTokenRecord => ({
  id,
  purpose: 'registry',
  secretHash: `hash-${id}`,
  principalKind: 'user',
  principalName: name,
  provider: 'local',
  createdAt,
  expiresAt: createdAt + 60_000,
});

const RULE: AccessRule = { subject: { kind: 'group', name: 'developers' }, repositories: 'dev/**', actions: ['pull', 'push'] };

for (const backend of METADATA_BACKENDS) {
  describe(`auth stores on ${backend.name}`, () => {
    let db: Knex;
    let stores: AuthStores;
    let close: () => Promise<void>;

    before(async () => {
      const opened = await backend.open();
      db = opened.db;
      close = opened.close;
      stores = new KnexAuthStores(db);
    });
    after(() => close());

    it('users: a taken name is refused, the hash is kept but not listed, passwords change, users go', async () => {
      const { users } = stores;
      assert.equal(await users.insert({ username: 'carol', passwordHash: 'scrypt$one', admin: false, createdAt: 1000 }), true);
      assert.equal(await users.insert({ username: 'carol', passwordHash: 'scrypt$two', admin: true, createdAt: 2000 }), false);
      assert.deepEqual(await users.get('carol'), { username: 'carol', passwordHash: 'scrypt$one', admin: false, createdAt: 1000 });
      assert.equal(await users.insert({ username: 'boss', passwordHash: 'scrypt$boss', admin: true, createdAt: 3000 }), true);
      assert.deepEqual(await users.list(), [
        { username: 'boss', admin: true, createdAt: 3000 },
        { username: 'carol', admin: false, createdAt: 1000 },
      ]);
      assert.equal(await users.count(), 2);
      assert.deepEqual(await users.lockAdministrators(), ['boss']);
      assert.equal(await users.setPasswordHash('carol', 'scrypt$three'), true);
      assert.equal((await users.get('carol'))?.passwordHash, 'scrypt$three');
      assert.equal(await users.setPasswordHash('nobody', 'scrypt$x'), false);
      assert.equal(await users.delete('carol'), true);
      assert.equal(await users.delete('carol'), false);
      assert.equal(await users.get('carol'), undefined);
      assert.equal(await users.delete('boss'), true);
    });

    it('users: the bootstrap is recorded once in the life of the database', async () => {
      assert.equal(await stores.users.bootstrapRecorded(), false);
      await stores.users.recordBootstrap('admin');
      assert.equal(await stores.users.bootstrapRecorded(), true);
      await assert.rejects(stores.users.recordBootstrap('again'));
      const rows = (await db('admin_state').select('key', 'value')) as { key: string; value: string }[];
      assert.deepEqual(rows, [{ key: 'bootstrap_admin', value: 'admin' }]);
    });

    it('rules: put keeps one rule per subject and repositories (new actions, same id); deletes by id, by rule, by subject', async () => {
      const { rules } = stores;
      const first = await rules.put({ subject: 'group:dev', repositories: 'dev/**', actions: ['pull'] });
      const again = await rules.put({ subject: 'group:dev', repositories: 'dev/**', actions: ['pull', 'push'] });
      assert.equal(again.id, first.id);
      assert.deepEqual(again, { id: first.id, subject: 'group:dev', repositories: 'dev/**', actions: ['pull', 'push'] });
      const other = await rules.put({ subject: 'robot:ci', repositories: 'ci/**', actions: ['push'] });
      await rules.put({ subject: 'robot:ci', repositories: 'cache/**', actions: ['pull'] });
      const third = await rules.put({ subject: 'anonymous', repositories: 'public/**', actions: ['pull'] });
      assert.deepEqual(
        (await rules.list()).map((rule) => [rule.subject, rule.repositories, rule.actions]),
        [
          ['group:dev', 'dev/**', ['pull', 'push']],
          ['robot:ci', 'ci/**', ['push']],
          ['robot:ci', 'cache/**', ['pull']],
          ['anonymous', 'public/**', ['pull']],
        ],
      );
      assert.ok(other.id > first.id);
      // Ids no rule can have are not sent to the database (PostgreSQL would refuse them).
      assert.equal(await rules.delete(2 ** 40), false);
      assert.equal(await rules.delete(0), false);
      assert.equal(await rules.delete(third.id), true);
      assert.equal(await rules.delete(third.id), false);
      assert.equal(await rules.deleteRule('group:dev', 'dev/**'), true);
      assert.equal(await rules.deleteRule('group:dev', 'dev/**'), false);
      assert.equal(await rules.deleteSubject('robot:ci'), 2);
      assert.deepEqual(await rules.list(), []);
    });

    it('robots: a taken name is refused; revocation happens once', async () => {
      const { robots } = stores;
      const robot = { name: 'ci', secretHash: 'digest', description: 'builds', createdBy: 'admin', createdAt: 5000, expiresAt: 9_999_999_999_999 };
      assert.equal(await robots.insert(robot), true);
      assert.equal(await robots.insert({ ...robot, secretHash: 'other' }), false);
      assert.deepEqual(await robots.get('ci'), { ...robot, revokedAt: undefined });
      assert.equal(await robots.insert({ name: 'bare', secretHash: 'd2', createdBy: 'admin', createdAt: 6000 }), true);
      assert.deepEqual(await robots.get('bare'), { name: 'bare', secretHash: 'd2', description: undefined, createdBy: 'admin', createdAt: 6000, expiresAt: undefined, revokedAt: undefined });
      assert.deepEqual((await robots.list()).map((r) => r.name), ['bare', 'ci']);
      const before = Date.now();
      assert.equal(await robots.revoke('ci'), true);
      assert.equal(await robots.revoke('ci'), false);
      assert.equal(await robots.revoke('nobody'), false);
      const revokedAt = (await robots.get('ci'))?.revokedAt ?? 0;
      assert.ok(revokedAt >= before, `revoked at ${revokedAt}`);
    });

    it('refresh tokens: a principal keeps its newest; revoke one or all; use is recorded', async () => {
      const { refreshTokens } = stores;
      for (let i = 1; i <= 4; i++) await refreshTokens.insert(token(`dave-${i}`, 'dave', 1000 * i), 3);
      await refreshTokens.insert({ ...token('erin-1', 'erin', 500), principalKind: 'robot', provider: 'robot' }, 3);
      assert.deepEqual((await refreshTokens.list({ principalName: 'dave' })).map((t) => t.id), ['dave-2', 'dave-3', 'dave-4']);
      assert.deepEqual((await refreshTokens.list()).map((t) => t.id), ['erin-1', 'dave-2', 'dave-3', 'dave-4']);
      assert.deepEqual(await refreshTokens.get('dave-3'), { ...token('dave-3', 'dave', 3000), lastUsedAt: undefined, revokedAt: undefined });
      assert.equal(await refreshTokens.get('dave-1'), undefined);
      await refreshTokens.markUsed('dave-3');
      assert.ok(((await refreshTokens.get('dave-3'))?.lastUsedAt ?? 0) > 0);
      assert.equal(await refreshTokens.revoke('dave-2'), true);
      assert.equal(await refreshTokens.revoke('dave-2'), false);
      // revokeAll counts only those still active, and only the principal's kind.
      assert.equal(await refreshTokens.revokeAll('robot', 'dave'), 0);
      assert.equal(await refreshTokens.revokeAll('user', 'dave'), 2);
      assert.ok((await refreshTokens.list({ principalName: 'dave' })).every((t) => t.revokedAt !== undefined));
      assert.equal((await refreshTokens.get('erin-1'))?.revokedAt, undefined);
    });

    it('refresh tokens: each purpose keeps its own newest; expired ones go at the next insert', async () => {
      const { refreshTokens } = stores;
      for (let i = 1; i <= 3; i++) await refreshTokens.insert(token(`gina-${i}`, 'gina', 1000 * i), 3);
      for (let i = 1; i <= 3; i++) await refreshTokens.insert({ ...token(`gina-console-${i}`, 'gina', 5000 + i), purpose: 'console' }, 2);
      assert.deepEqual(
        (await refreshTokens.list({ principalName: 'gina' })).map((t) => `${t.id} ${t.purpose}`),
        ['gina-1 registry', 'gina-2 registry', 'gina-3 registry', 'gina-console-2 console', 'gina-console-3 console'],
        'console sign-ins never push out docker logins',
      );
      // gina-1 expires at 61 000: a new registry token issued later removes it, and only it.
      await refreshTokens.insert(token('gina-4', 'gina', 61_500), 5);
      assert.deepEqual((await refreshTokens.list({ principalName: 'gina' })).filter((t) => t.purpose === 'registry').map((t) => t.id), ['gina-2', 'gina-3', 'gina-4']);
    });

    it('audit: events are appended and read back newest first, by type', async () => {
      await stores.audit.append([]);
      await stores.audit.append([event('login.failure', 'x1', { reason: 'password' }), event('login.success', 'x2'), event('login.failure', 'x3')]);
      const many = Array.from({ length: 250 }, (_, i) => event('bulk', `b${i}`));
      await stores.audit.append(many);
      const failures = await stores.audit.recent({ type: 'login.failure', limit: 10 });
      assert.deepEqual(failures.map((e) => e.actor), ['x3', 'x1']);
      assert.equal(failures[1]?.details, '{"reason":"password"}');
      assert.equal(failures[0]?.details, undefined);
      const newest = await stores.audit.recent({ limit: 2 });
      assert.deepEqual(newest.map((e) => e.actor), ['b249', 'b248']);
      assert.equal((await stores.audit.recent({ type: 'bulk', limit: 1000 })).length, 250);
    });

    it('a transaction commits a change and its event together', async () => {
      const result = await stores.transaction(async (tx) => {
        const rule = await tx.rules.put({ subject: 'group:tx', repositories: 'tx/**', actions: ['pull'] });
        await tx.audit.append([event('rules.changed', 'tx-commit', { added: rule.id })]);
        return rule.id;
      });
      assert.deepEqual((await stores.rules.list()).map((rule) => rule.id), [result]);
      assert.equal((await stores.audit.recent({ type: 'rules.changed', limit: 10 }))[0]?.actor, 'tx-commit');
      assert.equal(await stores.rules.deleteSubject('group:tx'), 1);
    });

    it('a change that fails after its event was appended leaves neither', async () => {
      const failure = new Error('the change failed after its audit event was written');
      await assert.rejects(
        stores.transaction(async (tx) => {
          await tx.robots.insert({ name: 'doomed', secretHash: 'd', createdBy: 'admin', createdAt: 1 });
          await tx.rules.put({ subject: 'robot:doomed', repositories: 'doomed/**', actions: ['push'] });
          await tx.audit.append([event('robot.created', 'tx-throw')]);
          throw failure;
        }),
        (error) => error === failure,
      );
      assert.equal(await stores.robots.get('doomed'), undefined);
      assert.deepEqual(await stores.rules.list(), []);
      assert.ok(!(await stores.audit.recent({ limit: 1000 })).some((e) => e.actor === 'tx-throw'));
    });

    it('a change whose audit event the database refuses leaves neither', async () => {
      const allow = await refuseAuditEvents(db, backend.name, { type: 'robot.revoked' });
      try {
        await stores.robots.insert({ name: 'kept', secretHash: 'd', createdBy: 'admin', createdAt: 1 });
        await stores.refreshTokens.insert({ ...token('kept-1', 'kept', 1), principalKind: 'robot', provider: 'robot' }, 5);
        await assert.rejects(
          stores.transaction(async (tx) => {
            assert.equal(await tx.robots.revoke('kept'), true);
            assert.equal(await tx.refreshTokens.revokeAll('robot', 'kept'), 1);
            await tx.audit.append([event('robot.revoked', 'tx-refused')]);
          }),
          /audit event refused/,
        );
        assert.equal((await stores.robots.get('kept'))?.revokedAt, undefined);
        assert.equal((await stores.refreshTokens.get('kept-1'))?.revokedAt, undefined);
        assert.ok(!(await stores.audit.recent({ limit: 1000 })).some((e) => e.actor === 'tx-refused'));
      } finally {
        await allow();
      }
    });

    it('a nested transaction that fails undoes its own work only', async () => {
      await stores.transaction(async (tx) => {
        await tx.rules.put({ subject: 'group:outer', repositories: 'outer/**', actions: ['pull'] });
        await assert.rejects(
          tx.transaction(async (inner) => {
            await inner.rules.put({ subject: 'group:inner', repositories: 'inner/**', actions: ['pull'] });
            throw new Error('inner failure');
          }),
          /inner failure/,
        );
        await tx.audit.append([event('rules.changed', 'nested')]);
      });
      assert.deepEqual((await stores.rules.list()).map((rule) => rule.subject), ['group:outer']);
      assert.equal(await stores.rules.deleteSubject('group:outer'), 1);
    });

    it('rules replaced through AuditLog.transaction: a refused rules.changed event undoes the replacement', async () => {
      const rules = new AccessRuleStore(stores);
      const audit = new AuditLog(stores, silent);
      await rules.replaceAll([RULE]);
      const wanted: AccessRule[] = [{ subject: { kind: 'anonymous' }, repositories: 'public/**', actions: ['pull'] }];
      const allow = await refuseAuditEvents(db, backend.name, { type: 'rules.changed' });
      try {
        await assert.rejects(
          audit.transaction(async (tx) => {
            const diff = await rules.replaceAll(wanted, {}, tx);
            assert.equal(diff.removed.length, 1);
            await audit.record({ type: 'rules.changed', actor: 'admin', details: { added: diff.added.length } }, tx);
          }),
          /audit event refused/,
        );
      } finally {
        await allow();
      }
      assert.deepEqual((await rules.list()).map(({ subject, repositories, actions }) => ({ subject, repositories, actions })), [RULE]);
      // The same change with its event accepted: both are there at once, nothing waits in a batch.
      await audit.transaction(async (tx) => {
        const diff = await rules.replaceAll(wanted, {}, tx);
        await audit.record({ type: 'rules.changed', actor: 'admin\u0000', details: { added: diff.added.length } }, tx);
      });
      assert.deepEqual((await rules.list()).map((rule) => rule.repositories), ['public/**']);
      const [recorded] = await stores.audit.recent({ type: 'rules.changed', limit: 1 });
      assert.equal(recorded?.actor, 'admin\ufffd', 'sanitised like batched events');
      assert.equal(recorded?.details, '{"added":1}');
      await rules.replaceAll([]);
    });

    it('a robot, its rules and robot.created commit together or not at all (RobotAccounts, AccessRuleStore, AuditLog)', async () => {
      const robots = new RobotAccounts(stores);
      const rules = new AccessRuleStore(stores);
      const audit = new AuditLog(stores, silent);
      const create = (name: string) =>
        audit.transaction(async (tx) => {
          const created = await robots.create(name, 'admin', { description: 'nightly' }, tx);
          await rules.add({ subject: { kind: 'robot', name }, repositories: `${name}/**`, actions: ['push'] }, tx);
          await audit.record({ type: 'robot.created', actor: 'admin', details: { robot: name } }, tx);
          return created;
        });
      const allow = await refuseAuditEvents(db, backend.name, { type: 'robot.created' });
      try {
        await assert.rejects(create('nightly'), /audit event refused/);
      } finally {
        await allow();
      }
      assert.equal(await robots.get('nightly'), undefined);
      assert.deepEqual(await rules.list(), []);

      const { robot, secret } = await create('nightly');
      assert.equal(robot.name, 'nightly');
      assert.equal(await robots.authenticate('robot$nightly', secret), 'nightly');
      assert.deepEqual((await rules.list()).map((rule) => rule.repositories), ['nightly/**']);
      assert.equal((await stores.audit.recent({ type: 'robot.created', limit: 1 }))[0]?.details, '{"robot":"nightly"}');
      // A second robot of the same name: 409's error, and again nothing half-made.
      await assert.rejects(create('nightly'), /already exists/);
      assert.equal((await rules.list()).length, 1);
      assert.equal((await stores.audit.recent({ type: 'robot.created', limit: 10 })).length, 1);
      await rules.removeSubject('robot:nightly');
    });

    it('refresh tokens: issued, redeemed, revoked with their event in one transaction (RefreshTokens)', async () => {
      const refreshTokens = new RefreshTokens(stores, 60_000);
      const audit = new AuditLog(stores, silent);
      const issued = await refreshTokens.issue({ kind: 'user', name: 'frank', provider: 'ldap' });
      const listed = (await refreshTokens.list({ name: 'frank' }))[0];
      assert.deepEqual(await refreshTokens.redeem(issued), { kind: 'user', name: 'frank', provider: 'ldap', issuedAt: listed?.createdAt, expiresAt: listed?.expiresAt });
      assert.equal(await refreshTokens.redeem(`${issued}x`), undefined);
      const [info] = await refreshTokens.list({ name: 'frank' });
      assert.ok(info?.lastUsedAt !== undefined);
      assert.ok(!('secretHash' in info), 'the digest stays inside');
      await assert.rejects(
        audit.transaction(async (tx) => {
          assert.equal(await refreshTokens.revoke(info.id, tx), true);
          throw new Error('the response could not be built');
        }),
      );
      assert.ok(await refreshTokens.redeem(issued), 'a revocation rolled back leaves the token usable');
      const consoleSessions = new RefreshTokens(stores, 60_000, 'console');
      assert.equal(await consoleSessions.redeem(issued), undefined, 'a docker refresh token is no console session');
      assert.equal(await refreshTokens.redeem(await consoleSessions.issue({ kind: 'user', name: 'frank', provider: 'ldap' })), undefined, 'nor the reverse');
      await audit.transaction(async (tx) => {
        assert.equal(await refreshTokens.revoke(info.id, tx), true);
        await audit.record({ type: 'refresh_token.revoked', actor: 'admin', details: { id: info.id } }, tx);
      });
      assert.equal(await refreshTokens.redeem(issued), undefined);
    });

    it('users: the last administrator stays when two are removed at once (LocalUsers)', async () => {
      const users = new LocalUsers(stores);
      await stores.users.insert({ username: 'root1', passwordHash: 'x', admin: true, createdAt: 1 });
      await stores.users.insert({ username: 'root2', passwordHash: 'x', admin: true, createdAt: 1 });
      let second: Promise<void> | undefined;
      const first = stores.transaction(async (tx) => {
        await users.remove('root1', tx);
        // The other removal starts while this one has not committed yet.
        let settled = false;
        second = users.remove('root2');
        second.then(
          () => (settled = true),
          () => (settled = true),
        );
        // SQLite: it waits for the one connection. PostgreSQL: until it waits for our row locks
        // (or, were there none, has finished believing root1 stays).
        if (backend.name === 'PostgreSQL') while (!settled && !(await waitsForLock(db))) await new Promise((resolve) => setTimeout(resolve, 10));
      });
      const [firstOutcome] = await Promise.allSettled([first]);
      const [secondOutcome] = await Promise.allSettled([second]);
      const outcomes = [firstOutcome, secondOutcome];
      const refused = outcomes.filter((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
      assert.equal(refused.length, 1, JSON.stringify(outcomes));
      assert.ok(refused[0]?.reason instanceof UserError);
      assert.match(String(refused[0]?.reason), /last local administrator/);
      assert.equal((await stores.users.lockAdministrators()).length, 1);
      await stores.users.delete('root1');
      await stores.users.delete('root2');
    });

    it('users: added, re-passworded and removed with their events in one transaction (LocalUsers)', async () => {
      const users = new LocalUsers(stores);
      const audit = new AuditLog(stores, silent);
      await audit.transaction(async (tx) => {
        await users.add('grace', 'a long password here', {}, tx);
        await audit.record({ type: 'user.created', actor: 'cli', details: { user: 'grace' } }, tx);
      });
      assert.equal((await users.authenticate('grace', 'a long password here'))?.username, 'grace');
      await assert.rejects(users.add('grace', 'another long password'), /already exists/);
      await assert.rejects(
        audit.transaction(async (tx) => {
          await users.setPassword('grace', 'a different password', tx);
          throw new Error('refresh tokens could not be revoked');
        }),
      );
      assert.ok(await users.authenticate('grace', 'a long password here'), 'the old password still works: the change was undone');
      await assert.rejects(users.remove('nobody'), /no user nobody/);
      await users.remove('grace');
      assert.equal(await users.lookup('grace'), undefined);
      assert.equal((await stores.audit.recent({ type: 'user.created', limit: 1 }))[0]?.actor, 'cli');
    });

    it('batched events: one the database refuses is retried alone and counted lost; its batch is kept (AuditLog)', async () => {
      const { log, lines } = capturingLogger();
      const audit = new AuditLog(stores, log);
      const allow = await refuseAuditEvents(db, backend.name, { actor: 'poison' });
      try {
        for (const actor of ['batch-a', 'poison', 'batch-b']) await audit.record({ type: 'login.failure', actor, clientIp: '192.0.2.9' });
        await audit.flush();
      } finally {
        await allow();
      }
      assert.equal(audit.lost, 1);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]?.msg, 'could not record an audit event');
      const stored = (await audit.recent({ type: 'login.failure', limit: 1000 })).filter((e) => e.actor?.startsWith('batch-'));
      assert.deepEqual(stored.map((e) => [e.actor, e.clientIp]), [['batch-b', '192.0.2.9'], ['batch-a', '192.0.2.9']]);
    });

    it('values are made to fit: an address with a long IPv6 zone is kept without it (AuditLog)', async () => {
      const audit = new AuditLog(stores, silent);
      await audit.transaction((tx) => audit.record({ type: 'login.failure', actor: 'zone', clientIp: `fe80::1%${'z'.repeat(80)}` }, tx));
      await audit.transaction((tx) => audit.record({ type: 'login.failure', actor: 'short-zone', clientIp: 'fe80::1%eth0' }, tx));
      await audit.transaction((tx) => audit.record({ type: 'login.failure', actor: 'not-an-address', clientIp: 'localhost' }, tx));
      const events = await audit.recent({ type: 'login.failure', limit: 3 });
      assert.deepEqual(events.map((e) => [e.actor, e.clientIp]), [
        ['not-an-address', undefined],
        ['short-zone', 'fe80::1%eth0'],
        ['zone', 'fe80::1'],
      ]);
    });

    if (backend.name === 'PostgreSQL') {
      it('a value PostgreSQL refuses as data is an UnstorableValueError', async () => {
        await assert.rejects(stores.users.get('nul\u0000name'), (error) => error instanceof UnstorableValueError);
        await assert.rejects(
          stores.transaction((tx) => tx.audit.append([event('x'.repeat(65), 'too-long-type')])),
          (error) => error instanceof UnstorableValueError,
        );
      });
    }
  });
}

describe('auth stores on an unreachable database', () => {
  it('report DatabaseUnavailableError, inside a transaction too', async () => {
    const db = openDatabase({ driver: 'postgres', url: 'postgres://portcullis@127.0.0.1:1/none', poolMax: 1 });
    try {
      const stores = new KnexAuthStores(db);
      await assert.rejects(stores.users.get('anyone'), (error) => error instanceof DatabaseUnavailableError);
      await assert.rejects(
        stores.transaction((tx) => tx.audit.append([event('rules.changed', 'nobody')])),
        (error) => error instanceof DatabaseUnavailableError,
      );
    } finally {
      await db.destroy();
    }
  });
});
