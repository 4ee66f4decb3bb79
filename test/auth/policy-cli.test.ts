// portcullis policy apply/export and access check, as an administrator runs them.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from '../support/server.js';

let dir: string;

function cli(args: string[], stdin = ''): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, PORTCULLIS_DATA_DIR: dir } }, (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
    child.stdin?.end(stdin);
  });
}

async function rulesFile(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-policy-'));
  // Management commands work on an existing registry's database: create it first.
  assert.equal((await cli(['migrate'])).code, 0);
});
after(() => rm(dir, { recursive: true, force: true }));

describe('policy CLI', () => {
  it('applies a rules file declaratively, shows the difference, and exports it back', async () => {
    const first = await rulesFile(
      'first.yaml',
      ['rules:', '  - subject: group:developers', '    repositories: team-a/**', '    actions: [pull, push]', '  - subject: authenticated', '    repositories: ${user}/**', '    actions: [pull, push, delete]', ''].join('\n'),
    );
    const dry = await cli(['policy', 'apply', '-f', first, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /\+ group:developers {2}team-a\/\*\* {2}\[pull, push\]/);
    assert.match(dry.stdout, /dry run: nothing changed/);
    assert.equal((await cli(['policy', 'export'])).stdout, 'rules: []\n');

    assert.equal((await cli(['policy', 'apply', '-f', first])).code, 0);
    const exported = (await cli(['policy', 'export'])).stdout;
    assert.match(exported, /subject: group:developers\n {4}repositories: team-a\/\*\*/);
    assert.equal((await cli(['policy', 'apply', '-f', first])).stdout.trim(), 'no changes');

    const second = await rulesFile('second.yaml', ['rules:', '  - subject: group:developers', '    repositories: team-a/**', '    actions: [pull]', ''].join('\n'));
    const changed = await cli(['policy', 'apply', '-f', second]);
    assert.match(changed.stdout, /~ group:developers {2}team-a\/\*\* {2}\[pull, push\] {2}-> {2}\[pull\]/);
    assert.match(changed.stdout, /- authenticated {2}\$\{user\}\/\*\*/);
  });

  it('refuses a bad rules file with a clear error and changes nothing', async () => {
    const before = (await cli(['policy', 'export'])).stdout;
    for (const [text, message] of [
      ['rules:\n  - subject: team:x\n    repositories: a\n    actions: [pull]\n', /rules\[0\]: invalid subject "team:x"/],
      ['rules:\n  - subject: user:a\n    repositories: A/B\n    actions: [pull]\n', /rules\[0\]: invalid repository pattern/],
      ['rules:\n  - subject: user:a\n    repositories: a\n    actions: [write]\n', /unknown action "write"/],
      ['rules:\n  - subject: user:a\n    repos: a\n    actions: [pull]\n', /unknown key repos/],
      ['rules: [unclosed', /not valid YAML/],
      ['something: else\n', /expected a top-level "rules:" list/],
    ] as const) {
      const file = await rulesFile('bad.yaml', text);
      const result = await cli(['policy', 'apply', '-f', file]);
      assert.equal(result.code, 2, result.stdout);
      assert.match(result.stderr, message);
    }
    assert.equal((await cli(['policy', 'export'])).stdout, before);
  });

  it('refuses subjects that can never match, with a hint, and changes nothing', async () => {
    const before = (await cli(['policy', 'export'])).stdout;
    for (const [subject, hint] of [
      ['"group:CORP\\\\developers"', /rules\[0\]: invalid subject "group:CORP\\\\developers": .*use the group's name \(cn\), e\.g\. group:developers, or its full DN/],
      ['"user:CORP\\\\alice"', /rules\[0\]: invalid subject "user:CORP\\\\alice": .*people sign in as alice .*e\.g\. user:alice/],
      ['"user:"', /rules\[0\]: invalid subject "user:": the name is empty/],
      ['"user:al\\u0000ice"', /rules\[0\]: invalid subject "user:al\\u0000ice": contains a control character/],
    ] as const) {
      const file = await rulesFile('never.yaml', `rules:\n  - subject: ${subject}\n    repositories: team-a/**\n    actions: [pull]\n`);
      const result = await cli(['policy', 'apply', '-f', file]);
      assert.equal(result.code, 2, result.stdout);
      assert.match(result.stderr, hint);
    }
    assert.equal((await cli(['policy', 'export'])).stdout, before);
  });

  it('warns on stderr about ${user} at the top level, and applies the file', async () => {
    const file = await rulesFile('personal.yaml', ['rules:', '  - subject: authenticated', '    repositories: ${user}/**', '    actions: [pull]', ''].join('\n'));
    const result = await cli(['policy', 'apply', '-f', file]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^portcullis: warning: rule for authenticated on \$\{user\}\/\*\*: .*prefer users\/\$\{user\}\/\*\*$/m);
    assert.match(result.stdout, /^\+ authenticated {2}\$\{user\}\/\*\* {2}\[pull\]$/m);
    const nested = await rulesFile('nested.yaml', ['rules:', '  - subject: authenticated', '    repositories: users/${user}/**', '    actions: [pull]', ''].join('\n'));
    const quiet = await cli(['policy', 'apply', '-f', nested]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
  });

  it('explains what a user may do and why', async () => {
    await cli(['user', 'add', 'alice', '--password-stdin'], 'a long enough password');
    const rules = await rulesFile('third.yaml', ['rules:', '  - subject: user:alice', '    repositories: team-a/*', '    actions: [pull]', ''].join('\n'));
    await cli(['policy', 'apply', '-f', rules]);
    const allowed = await cli(['access', 'check', 'alice', 'team-a/app']);
    assert.match(allowed.stdout, /team-a\/app: pull\n {2}granted by: user:alice {2}team-a\/\* {2}\[pull\]/);
    const denied = await cli(['access', 'check', 'alice', 'team-b/app']);
    assert.match(denied.stdout, /no access \(denied by default\)/);
    const unknown = await cli(['access', 'check', 'mallory', 'team-a/app']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stdout, /no such user or robot/);
  });
});
