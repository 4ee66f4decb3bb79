// Token auth costs, measured against a Portcullis this script starts (and a real OpenLDAP it
// starts beside it): token issuance for a local user and for an LDAP user with the group cache
// cold (every login searches the directory) and warm, then manifest GET by tag with a verified
// bearer token on every request.
//
//   node dist/bench/auth-bench.js [--seconds 5] [--concurrency 16]
import { parseArgs } from 'node:util';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startSlapd } from '../test/support/slapd.js';
import { HttpClient, type Credentials } from './lib/http-client.js';
import { ascending, percentile, runFor } from './lib/pool.js';
import { runBenchmark } from './lib/scenarios.js';
import { PORTCULLIS_BENCH_ADMIN, portcullisSpec, startRegistry } from './lib/servers.js';
import { defaultLoadGenerator } from './lib/wrk.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '16' } },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

interface Row {
  metric: string;
  rate: number;
  p50: number;
  p99: number;
}

async function tokenRate(url: string, who: Credentials, label: string): Promise<Row> {
  const client = new HttpClient(url);
  const authorization = `Basic ${Buffer.from(`${who.username}:${who.password}`).toString('base64')}`;
  let failures = 0;
  const latencies = ascending(
    await runFor(seconds, concurrency, async () => {
      const response = await client.request({
        method: 'GET',
        url: '/auth/token?service=portcullis&scope=repository:team-a/app:pull,push',
        headers: { authorization },
      });
      if (response.status !== 200) failures++;
    }),
  );
  client.close();
  if (failures > 0) throw new Error(`${label}: ${failures} token requests failed`);
  return { metric: `token issuance, ${label}`, rate: latencies.length / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

async function main(): Promise<void> {
  const slapd = await startSlapd();
  const rows: Row[] = [];
  try {
    for (const [label, ttl] of [
      ['cold group cache', '0'],
      ['warm group cache', '60'],
    ] as const) {
      const registry = await startRegistry(
        portcullisSpec(MAIN, {
          PORTCULLIS_AUTH_LDAP_URL: slapd.url,
          PORTCULLIS_AUTH_LDAP_BIND_DN: slapd.bindDn,
          PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: slapd.bindPassword,
          PORTCULLIS_AUTH_LDAP_USER_BASE_DN: `ou=people,${slapd.baseDn}`,
          PORTCULLIS_AUTH_LDAP_GROUPS_BASE_DN: `ou=groups,${slapd.baseDn}`,
          PORTCULLIS_AUTH_LDAP_GROUPS_CACHE_TTL_SECONDS: ttl,
        }),
        tmpdir(),
      );
      try {
        if (ttl === '0') rows.push(await tokenRate(registry.url, { ...PORTCULLIS_BENCH_ADMIN }, 'local user'));
        rows.push(await tokenRate(registry.url, { username: 'alice', password: 'alice-pass' }, `LDAP user, ${label}`));
        if (ttl === '60') {
          const result = await runBenchmark(
            registry.url,
            {
              blobMib: 1,
              chunkMib: 1,
              small: 1,
              smallWarmup: 0,
              smallConcurrency: 1,
              getSeconds: seconds,
              getConcurrency: 64,
              mixedClients: 1,
              mixedSeconds: 1,
              loadGenerator: defaultLoadGenerator(),
              seed: 1,
              scenarios: ['manifest-get'],
              json: false,
              credentials: { ...PORTCULLIS_BENCH_ADMIN },
            },
            () => undefined,
          );
          for (const metric of result.metrics) {
            if (metric.value !== undefined) rows.push({ metric: `${metric.label} (bearer token on every request)`, rate: metric.value, p50: Number.NaN, p99: Number.NaN });
          }
        }
      } finally {
        await registry.stop();
      }
    }
  } finally {
    await slapd.stop();
  }
  console.log(`Token auth benchmark (${seconds} s per figure, token requests at concurrency ${concurrency})`);
  for (const row of rows) {
    const latency = Number.isNaN(row.p50) ? '' : `  p50 ${row.p50.toFixed(1)} ms  p99 ${row.p99.toFixed(1)} ms`;
    console.log(`${row.metric.padEnd(70)} ${row.rate.toFixed(1).padStart(9)}${latency}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
