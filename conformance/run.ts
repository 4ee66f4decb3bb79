#!/usr/bin/env node
// CLI for the conformance runner.
//   node dist/conformance/run.js --url http://127.0.0.1:5000 [--workflow push ...]
//        [--username u --password p] [--namespace conformance/mine] [--header 'Name: value' ...]
// Prints a workflow | check | result | detail table and a final "N passed, N failed" line;
// exits 1 if any check failed, 2 on bad usage.
import { parseArgs } from 'node:util';
import { WORKFLOWS, formatTable, runConformance, type Workflow } from './runner.js';

const USAGE = `usage: run.js --url <registry url> [--workflow ${WORKFLOWS.join('|')}]... [--username u --password p]
              [--namespace <repo prefix>] [--header 'Name: value']...
(the password may also come from the CONFORMANCE_PASSWORD environment variable)`;

function isWorkflow(value: string): value is Workflow {
  return (WORKFLOWS as readonly string[]).includes(value);
}

function parseHeaders(values: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const value of values) {
    const colon = value.indexOf(':');
    if (colon <= 0) throw new Error(`--header "${value}" is not of the form "Name: value"`);
    headers[value.slice(0, colon).trim()] = value.slice(colon + 1).trim();
  }
  return headers;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      workflow: { type: 'string', multiple: true },
      username: { type: 'string' },
      password: { type: 'string' },
      namespace: { type: 'string' },
      header: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.url) throw new Error('--url is required');
  const workflows = values.workflow ?? [...WORKFLOWS];
  const unknown = workflows.filter((w) => !isWorkflow(w));
  if (unknown.length > 0) throw new Error(`unknown workflow ${unknown.join(', ')}; choose from ${WORKFLOWS.join(', ')}`);

  const results = await runConformance({
    url: values.url,
    workflows: workflows.filter(isWorkflow),
    username: values.username,
    password: values.password ?? process.env.CONFORMANCE_PASSWORD,
    namespace: values.namespace,
    headers: parseHeaders(values.header ?? []),
  });
  console.log(formatTable(results));
  return results.every((r) => r.passed) ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    console.error(USAGE);
    process.exitCode = 2;
  },
);
