// `portcullis serve` is meant to run with a few Node.js flags (src/cli/node-flags.ts). They can only
// be given when node starts, so every way of starting the server passes them, and a server started
// without them says so.
// Backend: embedded only (nothing here depends on the drivers).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { missingServerFlags, SERVER_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { CLI, startPortcullis } from '../support/server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('the Node.js flags of portcullis serve', () => {
  it('counts a flag given on the command line or in NODE_OPTIONS, in either spelling', () => {
    assert.deepEqual(missingServerFlags([], ''), [...SERVER_NODE_FLAGS]);
    assert.deepEqual(missingServerFlags(['--max-semi-space-size=64'], ''), []);
    assert.deepEqual(missingServerFlags([], '--inspect --max_semi_space_size=16'), []);
    assert.deepEqual(missingServerFlags(['--max-old-space-size=512'], '--max-semi-space'), [...SERVER_NODE_FLAGS]);
  });

  it('are in the shebang of the portcullis command and in npm start', () => {
    const shebang = readFileSync(CLI, 'utf8').split('\n')[0];
    assert.equal(shebang, `#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(' ')}`);
    const start = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: { start: string } }).scripts.start;
    assert.match(start, new RegExp(`node ${SERVER_NODE_FLAGS.join(' ')} dist/src/cli/main\\.js serve`));
    const readme = readFileSync(`${ROOT}README.md`, 'utf8');
    assert.match(readme, new RegExp(`ExecStart=/usr/bin/node ${SERVER_NODE_FLAGS.join(' ')} `));
  });

  it('a server started without them serves, and warns', async () => {
    const bare = await startPortcullis({ nodeFlags: [] });
    try {
      assert.equal((await fetch(`${bare.url}/v2/`)).status, 401);
      // Logged once the server runs, so it may trail the first answer a little.
      for (let i = 0; i < 50 && !/started without the flags/.test(bare.output()); i++) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.match(bare.output(), /started without the flags portcullis serve is meant to run with/);
    } finally {
      await bare.stop();
    }
    const flagged = await startPortcullis();
    try {
      assert.doesNotMatch(flagged.output(), /started without the flags/);
    } finally {
      await flagged.stop();
    }
  });
});
