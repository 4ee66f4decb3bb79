// Runs the project's OCI Distribution Spec conformance runner against a real Portcullis
// process: every check of every workflow must pass.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WORKFLOWS, formatTable, runConformance } from '../../conformance/runner.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

let registry: RunningRegistry | undefined;

before(async () => {
  registry = await startPortcullis();
});

after(async () => {
  await registry?.stop();
});

for (const workflow of WORKFLOWS) {
  test(`OCI conformance: ${workflow} workflow`, async (t) => {
    assert.ok(registry, 'Portcullis did not start');
    const results = await runConformance({ url: registry.url, workflows: [workflow], ...registry.admin });
    assert.ok(results.length > 0, 'no checks ran');
    const failed = results.filter((r) => !r.passed);
    if (failed.length > 0) t.diagnostic(`registry output (tail):\n${registry.output().slice(-4000)}`);
    assert.equal(failed.length, 0, `failing conformance checks:\n${formatTable(failed)}`);
  });
}
