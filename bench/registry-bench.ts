// Benchmarks one registry through the OCI distribution API; see bench/README.md.
//   node dist/bench/registry-bench.js --url http://127.0.0.1:5000 [--blob-mib 1024] [--json] …
import { parseCli, usageError } from './lib/options.js';
import { resultTable } from './lib/report.js';
import { runBenchmark } from './lib/scenarios.js';

const USAGE = 'Usage: node dist/bench/registry-bench.js --url http://HOST:PORT [options]';

async function main(): Promise<number> {
  const { bench, extra } = parseCli(USAGE, { url: { help: 'registry base URL, e.g. http://127.0.0.1:5000' } });
  const url = extra.url ?? usageError('--url is required');
  const result = await runBenchmark(url, bench, (line) => console.error(line));
  const text = `\nRegistry benchmark of ${url} (seed ${bench.seed})\n${resultTable(result)}`;
  if (bench.json) {
    console.error(text);
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(text);
  }
  return result.metrics.some((metric) => metric.error) ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error('registry-bench:', error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
