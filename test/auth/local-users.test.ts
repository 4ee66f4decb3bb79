// Local users: the CLI that manages them and the provider that checks their passwords.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalUsers } from '../../src/auth/identity/local.js';
import { hashPassword, verifyPassword } from '../../src/auth/identity/passwords.js';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { CLI } from '../support/server.js';

let dataDir: string;

function cli(args: string[], stdin?: string): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir } }, (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(stdin ?? '');
  });
}

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'portcullis-users-'));
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
      const users = new LocalUsers(db);
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

