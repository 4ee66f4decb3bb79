#!/usr/bin/env node
// Runs every compiled test file under dist/test with node's own test runner.
// Node 20 has no glob support for --test, so the files are listed here.
// Usage: node test/run.mjs [substring-filter ...]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
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

const files = walk(root)
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('no test files found under', root);
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=300000', '--test-force-exit', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
