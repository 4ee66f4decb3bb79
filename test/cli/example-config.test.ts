// schemas/portcullis.example.yaml: a complete configuration file that loads as it is, shows
// every setting (at its default, or commented out where there is none), and works with -c.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/config.js';
import { CLI } from '../support/server.js';

const EXAMPLE = fileURLToPath(new URL('../../../schemas/portcullis.example.yaml', import.meta.url));
const SCHEMA = fileURLToPath(new URL('../../../schemas/config.schema.json', import.meta.url));

interface SchemaNode {
  default?: unknown;
  properties?: Record<string, SchemaNode>;
}

function leaves(node: SchemaNode, path: string[] = []): { path: string[]; node: SchemaNode }[] {
  if (node.properties) return Object.entries(node.properties).flatMap(([key, child]) => leaves(child, [...path, key]));
  return [{ path, node }];
}

function valueAt(tree: unknown, path: string[]): unknown {
  let node = tree;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

function cli(args: string[], options: { env?: Record<string, string>; cwd: string; stdin?: string }): Promise<{ stdout: string; stderr: string; code: number }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PORTCULLIS_') || key.startsWith('PORTCULLIS_TEST_')) env[key] = value;
  }
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...env, ...options.env }, cwd: options.cwd }, (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(options.stdin ?? '');
  });
}

describe('the example configuration file', () => {
  const text = readFileSync(EXAMPLE, 'utf8');
  const active = parseYaml(text) as Record<string, unknown>;
  const schema = JSON.parse(readFileSync(SCHEMA, 'utf8')) as SchemaNode;

  it('loads through loadConfig without an error, with nothing from the environment', () => {
    const config = loadConfig({ file: EXAMPLE, env: {} });
    assert.equal(config.listen, '127.0.0.1:5000');
    assert.equal(config.metadata.driver, 'sqlite');
    assert.equal(config.auth.ldap, undefined, 'the directory examples are commented out');
    assert.deepEqual(config.tls, {}, 'the TLS example is commented out');
  });

  it('shows every setting: at the schema default when it has one, else commented out', () => {
    const problems: string[] = [];
    for (const { path, node } of leaves(schema)) {
      const key = path.join('.');
      const value = valueAt(active, path);
      if (value !== undefined) {
        if (node.default !== undefined && JSON.stringify(value) !== JSON.stringify(node.default)) {
          problems.push(`${key} is ${JSON.stringify(value)} in the example, but its default is ${JSON.stringify(node.default)}`);
        }
        continue;
      }
      const name = path[path.length - 1] as string;
      if (!new RegExp(`^\\s*#\\s*(?:# )?${name}:`, 'm').test(text)) problems.push(`${key} is neither set nor shown commented out`);
    }
    assert.deepEqual(problems, []);
  });

  it('works with -c and with PORTCULLIS_CONFIG: its dataDir ./data is made by migrate and used by the other commands', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'portcullis-example-'));
    try {
      const refused = await cli(['-c', EXAMPLE, 'user', 'list'], { cwd });
      assert.equal(refused.code, 2);
      assert.ok(refused.stderr.startsWith(`portcullis: no Portcullis database at ${join(cwd, 'data', 'portcullis.db')} (dataDir ${join(cwd, 'data')}, from ${EXAMPLE} or the default ./data). `), refused.stderr);

      const migrated = await cli(['-c', EXAMPLE, 'migrate'], { cwd });
      assert.equal(migrated.code, 0, migrated.stderr);
      assert.deepEqual((await readdir(join(cwd, 'data'))).filter((name) => name === 'portcullis.db'), ['portcullis.db']);

      const listed = await cli(['-c', EXAMPLE, 'user', 'list'], { cwd });
      assert.equal(listed.code, 0, listed.stderr);
      assert.equal(listed.stdout, '');
      const added = await cli(['--config', EXAMPLE, 'user', 'add', 'alice', '--admin', '--password-stdin'], { cwd, stdin: 'a long enough password\n' });
      assert.equal(added.code, 0, added.stderr);
      const viaEnvironment = await cli(['user', 'list'], { cwd, env: { PORTCULLIS_CONFIG: EXAMPLE } });
      assert.equal(viaEnvironment.code, 0, viaEnvironment.stderr);
      assert.equal(viaEnvironment.stdout, 'alice (admin)\n');
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
