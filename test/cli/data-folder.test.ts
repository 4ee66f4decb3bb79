// Only `serve` and `migrate` create a data folder; the management commands refuse a missing
// database, say where they looked and which setting decides it, and leave nothing behind.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { CLI, startPortcullis, TEST_ADMIN } from '../support/server.js';

interface CliResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** The environment without any Portcullis setting of the caller's, plus `extra`. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PORTCULLIS_') || key.startsWith('PORTCULLIS_TEST_')) env[key] = value;
  }
  return { ...env, ...extra };
}

function cli(args: string[], options: { env?: Record<string, string>; cwd?: string; stdin?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: cleanEnv(options.env ?? {}), cwd: options.cwd }, (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(options.stdin ?? '');
  });
}

let root: string;
let rulesFile: string;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'portcullis-cli-data-'));
  rulesFile = join(root, 'rules.yaml');
  await writeFile(rulesFile, 'rules:\n  - subject: authenticated\n    repositories: team-a/**\n    actions: [pull]\n');
});
after(() => rm(root, { recursive: true, force: true }));

/** Every command that manages an existing registry, as an operator would type it. */
const MANAGEMENT_COMMANDS: { args: string[]; stdin?: string }[] = [
  { args: ['user', 'list'] },
  { args: ['user', 'add', 'alice', '--password-stdin'], stdin: 'a long enough password' },
  { args: ['user', 'add', 'bob'] },
  { args: ['user', 'passwd', 'alice', '--password-stdin'], stdin: 'a long enough password' },
  { args: ['user', 'rm', 'alice'] },
  { args: ['policy', 'export'] },
  { args: ['policy', 'apply', '-f', '<rules>'] },
  { args: ['policy', 'apply', '-f', '<rules>', '--dry-run'] },
  { args: ['access', 'check', 'alice', 'team-a/app'] },
  { args: ['keys', 'list'] },
  { args: ['keys', 'rotate'] },
];

const withRules = (args: string[]) => args.map((arg) => (arg === '<rules>' ? rulesFile : arg));

describe('a management command on a data folder with no database', () => {
  it('exits non-zero naming the database path and PORTCULLIS_DATA_DIR, and creates nothing', async () => {
    const empty = join(root, 'empty');
    await mkdir(empty);
    const missing = join(root, 'missing', 'data');
    for (const dataDir of [empty, missing]) {
      for (const command of MANAGEMENT_COMMANDS) {
        const result = await cli(withRules(command.args), { env: { PORTCULLIS_DATA_DIR: dataDir }, ...(command.stdin ? { stdin: command.stdin } : {}) });
        const line = `portcullis ${command.args.join(' ')} with dataDir ${dataDir}`;
        assert.equal(result.code, 2, `${line}: ${result.stdout}${result.stderr}`);
        assert.equal(result.stdout, '', line);
        assert.ok(
          result.stderr.startsWith(`portcullis: no Portcullis database at ${join(dataDir, 'portcullis.db')} (dataDir ${dataDir}, from PORTCULLIS_DATA_DIR). `),
          `${line}: ${result.stderr}`,
        );
        assert.match(result.stderr, /Only `portcullis serve` and `portcullis migrate` create one\./);
        assert.match(result.stderr, /-c FILE \/ PORTCULLIS_CONFIG/);
      }
      assert.deepEqual(existsSync(dataDir) ? await readdir(dataDir) : 'absent', dataDir === empty ? [] : 'absent');
    }
  });

  it('names metadata.sqlite.path, the configuration file, or the default ./data, whichever decided', async () => {
    const cwd = join(root, 'cwd');
    await mkdir(cwd);

    const byDefault = await cli(['user', 'list'], { cwd });
    assert.equal(byDefault.code, 2);
    assert.ok(
      byDefault.stderr.startsWith(`portcullis: no Portcullis database at ${join(cwd, 'data', 'portcullis.db')} (dataDir ./data in ${cwd}: the default, as no configuration file was given). `),
      byDefault.stderr,
    );

    const sqliteFile = join(root, 'elsewhere', 'registry.db');
    const bySetting = await cli(['policy', 'export'], { cwd, env: { PORTCULLIS_METADATA_SQLITE_PATH: sqliteFile } });
    assert.equal(bySetting.code, 2);
    assert.ok(bySetting.stderr.startsWith(`portcullis: no Portcullis database at ${sqliteFile} (metadata.sqlite.path, from PORTCULLIS_METADATA_SQLITE_PATH). `), bySetting.stderr);

    const configFile = join(root, 'portcullis.yaml');
    await writeFile(configFile, `dataDir: ${join(root, 'configured')}\n`);
    for (const how of [{ args: ['-c', configFile] }, { args: [], env: { PORTCULLIS_CONFIG: configFile } }]) {
      const byFile = await cli([...how.args, 'keys', 'list'], { cwd, ...(how.env ? { env: how.env } : {}) });
      assert.equal(byFile.code, 2);
      assert.ok(
        byFile.stderr.startsWith(`portcullis: no Portcullis database at ${join(root, 'configured', 'portcullis.db')} (dataDir ${join(root, 'configured')}, from ${configFile} or the default ./data). `),
        byFile.stderr,
      );
    }

    const pathInFile = join(root, 'path-in-file.yaml');
    await writeFile(pathInFile, `metadata:\n  sqlite:\n    path: ${sqliteFile}\n`);
    const byPathInFile = await cli(['-c', pathInFile, 'access', 'check', 'alice', 'team-a/app'], { cwd });
    assert.equal(byPathInFile.code, 2);
    assert.ok(byPathInFile.stderr.startsWith(`portcullis: no Portcullis database at ${sqliteFile} (metadata.sqlite.path in ${pathInFile}). `), byPathInFile.stderr);

    assert.deepEqual(await readdir(cwd), [], 'no ./data was created');
    assert.equal(existsSync(join(root, 'configured')), false);
    assert.equal(existsSync(join(root, 'elsewhere')), false);
  });
});

describe('serve and migrate', () => {
  it('migrate creates the data folder, after which every management command works', async () => {
    const dataDir = join(root, 'migrated', 'data');
    const env = { PORTCULLIS_DATA_DIR: dataDir };
    const migrated = await cli(['migrate'], { env });
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.match(migrated.stdout, /^applied: /);
    assert.ok(existsSync(join(dataDir, 'portcullis.db')));

    assert.equal((await cli(['user', 'list'], { env })).stdout, '');
    const added = await cli(['user', 'add', 'alice', '--password-stdin'], { env, stdin: 'a long enough password' });
    assert.equal(added.code, 0, added.stderr);
    assert.equal((await cli(['user', 'list'], { env })).stdout, 'alice\n');
    const applied = await cli(['policy', 'apply', '-f', rulesFile], { env });
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stdout, '+ authenticated  team-a/**  [pull]\n');
    const check = await cli(['access', 'check', 'alice', 'team-a/app'], { env });
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /^team-a\/app: pull$/m);
    const keys = await cli(['keys', 'rotate'], { env });
    assert.equal(keys.code, 0, keys.stderr);
    assert.match(keys.stdout, /^current key: [A-Za-z0-9_-]{43}\n$/);
  });

  it('serve creates a missing data folder, and the commands then manage it', async () => {
    const dataDir = join(root, 'served', 'nested', 'data');
    const server = await startPortcullis({ dataDir });
    try {
      const listed = await cli(['user', 'list'], { env: { PORTCULLIS_DATA_DIR: dataDir } });
      assert.equal(listed.code, 0, listed.stderr);
      assert.equal(listed.stdout, `${TEST_ADMIN.username} (admin)\n`);
      const keys = await cli(['keys', 'list'], { env: { PORTCULLIS_DATA_DIR: dataDir } });
      assert.equal(keys.code, 0, keys.stderr);
      assert.match(keys.stdout, new RegExp(`^current key: [A-Za-z0-9_-]{43} \\(${join(dataDir, 'keys')}\\)\\n$`));
    } finally {
      await server.stop();
    }
  });
});

describe('with PostgreSQL', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase();
  });
  after(() => database.drop());

  it('the management commands work as before: there is no data folder to check', async () => {
    const env = {
      PORTCULLIS_METADATA_DRIVER: 'postgres',
      PORTCULLIS_METADATA_POSTGRES_URL: database.url,
      PORTCULLIS_DATA_DIR: join(root, 'postgres-has-no-data-folder'),
    };
    const added = await cli(['user', 'add', 'carol', '--admin', '--password-stdin'], { env, stdin: 'a long enough password' });
    assert.equal(added.code, 0, added.stderr);
    assert.equal(added.stdout, 'created carol\n');
    assert.equal((await cli(['user', 'list'], { env })).stdout, 'carol (admin)\n');
    const exported = await cli(['policy', 'export'], { env });
    assert.equal(exported.code, 0, exported.stderr);
    assert.equal(exported.stdout, 'rules: []\n');
    const rows = await database.query<{ username: string }>('select username from users');
    assert.deepEqual(rows.rows, [{ username: 'carol' }]);
  });
});
