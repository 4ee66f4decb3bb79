// Runs the OCI Distribution Spec v1.1 conformance workflows against a registry.
import { Checks, WORKFLOWS, type CheckResult, type Workflow, type WorkflowContext } from './check.js';
import { RegistryClient, randomHex } from './client.js';
import { discoveryWorkflow } from './workflows/discovery.js';
import { managementWorkflow } from './workflows/management.js';
import { pullWorkflow } from './workflows/pull.js';
import { pushWorkflow } from './workflows/push.js';

export { WORKFLOWS, type CheckResult, type Workflow } from './check.js';

export interface ConformanceOptions {
  /** Registry base URL, e.g. http://127.0.0.1:5000 */
  url: string;
  /** Repository prefix for this run; default conformance/<random>, so runs never collide. */
  namespace?: string;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
  /** Credentials for Basic auth or Docker token auth, used when the registry challenges. */
  username?: string;
  password?: string;
  /** Which workflows to run, in order; default all four. */
  workflows?: Workflow[];
  /** Called as each check finishes (for progress output). */
  onResult?: (result: CheckResult) => void;
}

const RUNNERS: Record<Workflow, (ctx: WorkflowContext) => Promise<void>> = {
  pull: pullWorkflow,
  push: pushWorkflow,
  discovery: discoveryWorkflow,
  management: managementWorkflow,
};

export async function runConformance(options: ConformanceOptions): Promise<CheckResult[]> {
  const client = new RegistryClient({
    url: options.url,
    headers: options.headers,
    username: options.username,
    password: options.password,
  });
  const namespace = options.namespace ?? `conformance/${randomHex(5)}`;
  const results: CheckResult[] = [];
  for (const workflow of options.workflows ?? WORKFLOWS) {
    const t = new Checks(workflow, options.onResult);
    // A crash escaping a workflow (not a failed check) is recorded rather than aborting the run.
    await t.section(() => RUNNERS[workflow]({ client, namespace, t }));
    results.push(...t.results);
  }
  return results;
}

export function summary(results: readonly CheckResult[]): string {
  const passed = results.filter((r) => r.passed).length;
  return `${passed} passed, ${results.length - passed} failed`;
}

/** The results as a `workflow | check | result | detail` table, then the summary line. */
export function formatTable(results: readonly CheckResult[]): string {
  const header = { workflow: 'WORKFLOW', check: 'CHECK', result: 'RESULT', detail: 'DETAIL' };
  const rows = [
    header,
    ...results.map((r) => ({ workflow: r.workflow, check: r.check, result: r.passed ? 'PASS' : 'FAIL', detail: r.detail })),
  ];
  const width = (key: 'workflow' | 'check' | 'result') => Math.max(...rows.map((row) => row[key].length));
  const [w, c, s] = [width('workflow'), width('check'), width('result')];
  const line = (row: (typeof rows)[number]) =>
    `${row.workflow.padEnd(w)} | ${row.check.padEnd(c)} | ${row.result.padEnd(s)} | ${row.detail}`.trimEnd();
  const rule = `${'-'.repeat(w)}-+-${'-'.repeat(c)}-+-${'-'.repeat(s)}-+-${'-'.repeat(6)}`;
  const [head, ...body] = rows.map(line);
  return [head, rule, ...body, '', summary(results)].join('\n');
}
