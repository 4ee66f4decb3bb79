#!/usr/bin/env node
// Runs every compiled test file under dist/test with node's own test runner.
// Node 20 has no glob support for --test, so the files are listed here.
// Usage: node test/run.mjs [substring-filter ...]
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const filters = process.argv.slice(2);

function walk(dir) {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return walk(path);
    return entry.endsWith('.test.js') ? [path] : [];
  });
}

// A test deleted or renamed in test/ leaves its compiled file behind in dist/: run only the
// compiled tests whose source still exists.
const sources = new URL('../test/', import.meta.url).pathname;
const current = (compiled) => existsSync(join(sources, relative(root, compiled)).replace(/\.js$/, '.ts'));
const stale = walk(root).filter((f) => !current(f));
if (stale.length > 0) console.error(`skipping ${stale.length} compiled test(s) without a source: ${stale.map((f) => relative(root, f)).join(', ')}`);
const files = walk(root)
  .filter(current)
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('no test files found under', root);
  process.exit(1);
}
// No --test-force-exit: every test closes what it opens, and a leaked handle shows as a hang.
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=300000', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
