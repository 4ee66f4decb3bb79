// Local users: the CLI that manages them and the provider that checks their passwords.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KnexAuthStores } from '../../src/metadata/knex-auth-stores.js';
import { LocalUsers } from '../../src/auth/identity/local.js';
import { migrationSource } from '../../migrations/index.js';
import { hashPassword, verifyPassword } from '../../src/auth/identity/passwords.js';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { CLI, startPortcullis, TEST_ADMIN } from '../support/server.js';
import { requestToken } from './support.js';

let dataDir: string;

function cli(args: string[], stdin?: string, dir = dataDir, env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, PORTCULLIS_DATA_DIR: dir, ...env } }, (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(stdin ?? '');
  });
}

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'portcullis-users-'));
  // Management commands work on an existing registry's database: create it first.
  assert.equal((await cli(['migrate'])).code, 0);
});
after(() => rm(dataDir, { recursive: true, force: true }));

describe('local users', () => {
  it('are managed with portcullis user add/passwd/rm/list', async () => {
    const generated = await cli(['user', 'add', 'alice']);
    assert.equal(generated.code, 0);
    const password = /shown once\): (\S+)/.exec(generated.stdout)?.[1] ?? '';
    assert.ok(password.length >= 40);

    assert.equal((await cli(['user', 'add', 'root', '--admin', '--password-stdin'], 'a long admin password\n')).code, 0);
    const duplicate = await cli(['user', 'add', 'alice', '--password-stdin'], 'another long password');
    assert.equal(duplicate.code, 2);
    assert.match(duplicate.stderr, /already exists/);
    assert.match((await cli(['user', 'passwd', 'alice', '--password-stdin'], 'short')).stderr, /at least 12 characters/);
    assert.match((await cli(['user', 'add', 'Not Valid', '--password-stdin'], 'long enough password')).stderr, /invalid user name/);
    assert.equal((await cli(['user', 'list'])).stdout, 'alice\nroot (admin)\n');

    const db = openDatabase({ driver: 'sqlite', path: join(dataDir, 'portcullis.db') });
    try {
      await migrateToLatest(db);
      const users = new LocalUsers(new KnexAuthStores(db));
      assert.deepEqual(await users.authenticate('alice', password), { username: 'alice', provider: 'local', groups: [], admin: false });
      assert.equal((await users.authenticate('root', 'a long admin password'))?.admin, true);
      assert.equal(await users.authenticate('alice', 'wrong password!'), undefined);
      assert.equal(await users.authenticate('alice', ''), undefined);
      assert.equal(await users.authenticate('nobody', password), undefined);
      assert.equal(await users.authenticate('*', password), undefined);

      assert.equal((await cli(['user', 'passwd', 'alice', '--password-stdin'], 'a brand new password')).code, 0);
      assert.equal(await users.authenticate('alice', password), undefined);
      assert.ok(await users.authenticate('alice', 'a brand new password'));
      assert.equal((await cli(['user', 'rm', 'alice'])).code, 0);
      assert.equal(await users.lookup('alice'), undefined);
      assert.match((await cli(['user', 'rm', 'alice'])).stderr, /no user alice/);
    } finally {
      await db.destroy();
    }
  });

  it('hash passwords with salted scrypt', async () => {
    const a = await hashPassword('same password');
    const b = await hashPassword('same password');
    assert.notEqual(a, b);
    assert.match(a, /^scrypt\$32768\$8\$1\$/);
    assert.ok(await verifyPassword('same password', a));
    assert.ok(!(await verifyPassword('same passwore', a)));
    assert.ok(!(await verifyPassword('same password', 'md5$whatever')));
  });
});


/** A data directory of its own for one test, removed afterwards. */
async function withDataDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-admins-'));
  try {
    await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const BOOTSTRAP_MESSAGE = 'created the bootstrap administrator';

describe('the last administrator', () => {
  it('cannot be removed with portcullis user rm until another local administrator exists', async () => {
    await withDataDir(async (dir) => {
      assert.equal((await cli(['migrate'], undefined, dir)).code, 0);
      assert.equal((await cli(['user', 'add', 'root', '--admin', '--password-stdin'], 'a long admin password', dir)).code, 0);
      assert.equal((await cli(['user', 'add', 'alice', '--password-stdin'], 'a long user password', dir)).code, 0);

      const refused = await cli(['user', 'rm', 'root'], undefined, dir);
      assert.equal(refused.code, 2, refused.stdout);
      assert.equal(refused.stderr, 'portcullis: root is the last local administrator and cannot be removed; make another one first (portcullis user add NAME --admin)\n');
      assert.equal((await cli(['user', 'list'], undefined, dir)).stdout, 'alice\nroot (admin)\n');

      // Administrators from the directory (auth.adminGroups) do not count: they can vanish.
      const withDirectoryAdmins = await cli(['user', 'rm', 'root'], undefined, dir, { PORTCULLIS_AUTH_ADMIN_GROUPS: 'cn=admins,ou=groups,dc=example,dc=org' });
      assert.equal(withDirectoryAdmins.code, 2, withDirectoryAdmins.stdout);
      assert.match(withDirectoryAdmins.stderr, /root is the last local administrator/);

      assert.equal((await cli(['user', 'add', 'ops', '--admin', '--password-stdin'], 'another admin password', dir)).code, 0);
      assert.equal((await cli(['user', 'rm', 'root'], undefined, dir)).code, 0);
      assert.match((await cli(['user', 'rm', 'ops'], undefined, dir)).stderr, /ops is the last local administrator/);
      assert.equal((await cli(['user', 'rm', 'alice'], undefined, dir)).code, 0, 'other users go as before');
      assert.equal((await cli(['user', 'list'], undefined, dir)).stdout, 'ops (admin)\n');
    });
  });

  it('a removed bootstrap admin is not created again at the next start', async () => {
    await withDataDir(async (dir) => {
      const first = await startPortcullis({ dataDir: dir });
      try {
        assert.ok(first.output().includes(BOOTSTRAP_MESSAGE), first.output());
        assert.equal((await requestToken(first.url, { credentials: TEST_ADMIN })).status, 200);
      } finally {
        await first.stop();
      }
      assert.equal((await cli(['user', 'add', 'root', '--admin', '--password-stdin'], 'a long admin password', dir)).code, 0);
      assert.equal((await cli(['user', 'rm', 'admin'], undefined, dir)).code, 0);

      const second = await startPortcullis({ dataDir: dir });
      try {
        assert.ok(!second.output().includes(BOOTSTRAP_MESSAGE), second.output());
        assert.equal((await requestToken(second.url, { credentials: TEST_ADMIN })).status, 401);
      } finally {
        await second.stop();
      }
      assert.equal((await cli(['user', 'list'], undefined, dir)).stdout, 'root (admin)\n');
    });
  });

  it('removing every local user never brings a bootstrap admin back', async () => {
    await withDataDir(async (dir) => {
      assert.equal((await cli(['migrate'], undefined, dir)).code, 0);
      // Users made before the first start: the bootstrap has nothing to do, and is recorded as done.
      assert.equal((await cli(['user', 'add', 'alice', '--password-stdin'], 'a long user password', dir)).code, 0);
      const first = await startPortcullis({ dataDir: dir });
      await first.stop();
      assert.ok(!first.output().includes(BOOTSTRAP_MESSAGE), first.output());
      assert.equal((await cli(['user', 'rm', 'alice'], undefined, dir)).code, 0);
      assert.equal((await cli(['user', 'list'], undefined, dir)).stdout, '');

      for (let start = 0; start < 2; start++) {
        const again = await startPortcullis({ dataDir: dir });
        try {
          assert.equal((await requestToken(again.url, { credentials: TEST_ADMIN })).status, 401);
        } finally {
          await again.stop();
        }
        assert.ok(!again.output().includes(BOOTSTRAP_MESSAGE), again.output());
        assert.match(again.output(), /there are no local users; add an administrator with `portcullis user add NAME --admin`/);
        assert.equal((await cli(['user', 'list'], undefined, dir)).stdout, '');
      }
    });
  });

  it('a database in use before the bootstrap was recorded counts as bootstrapped; a fresh one does not', async () => {
    await withDataDir(async (dir) => {
      const db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
      try {
        // The schema as it was before the admin_state migration, with a user of its own.
        const all = await migrationSource.getMigrations([]);
        const older = all.filter((migration) => migration.name < '20261130_004_admin_state');
        assert.ok(older.length < all.length);
        await db.migrate.latest({ migrationSource: { ...migrationSource, getMigrations: async () => older } });
        const users = new LocalUsers(new KnexAuthStores(db));
        await users.add('root', 'a long admin password', { admin: true });
        await migrateToLatest(db);
        // The old version removed users freely: the table can be empty now.
        await db('users').delete();
        assert.equal(await users.bootstrap('admin', TEST_ADMIN.password), 'done-before');
        assert.equal(await users.count(), 0);
      } finally {
        await db.destroy();
      }
      const fresh = openDatabase({ driver: 'sqlite', path: join(dir, 'fresh.db') });
      try {
        await migrateToLatest(fresh);
        const users = new LocalUsers(new KnexAuthStores(fresh));
        assert.equal(await users.bootstrap('admin', TEST_ADMIN.password), 'created');
        assert.equal(await users.bootstrap('admin', TEST_ADMIN.password), 'done-before');
        assert.deepEqual((await users.list()).map((user) => [user.username, user.admin]), [['admin', true]]);
      } finally {
        await fresh.destroy();
      }
    });
  });
});
