// The signature report for auditors, over HTTP (GET /admin/v1/signatures/report, JSON and CSV,
// paged, filtered by a repository glob) and from the CLI (`portcullis audit signatures`, as a
// table, JSON or CSV): every tag → digest with its signature status, signer, time, the policy
// that applies and its verdict; and the CSV writer's quoting and formula guard.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { csvCell, csvRow } from '../../src/trust/report.js';
import { addUser, adminToken, api, tokenFor } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, type TestRegistry } from '../support/registry-client.js';
import { cosignPayload, makeKey, pushCosignSignature, type TestKey } from '../support/signing.js';

interface Entry {
  repository: string;
  tag: string;
  digest: string;
  status: string;
  signer?: string;
  identity?: string;
  format?: string;
  verifiedAt?: string;
  reason: string;
  signatures: number;
  artifact: boolean;
  policy?: string;
  mode?: string;
  verdict: string;
}
interface Page {
  entries: Entry[];
  next?: string;
}

const carol = { username: 'carol', password: 'carol-password-1234' };

let server: RunningRegistry;
let registry: TestRegistry;
let admin: string;
let key: TestKey;
const digests: Record<string, string> = {};

const report = (query = '', token = admin) => api<Page>(server.url, token, 'GET', `/admin/v1/signatures/report${query}`);
const cli = (args: string[]) => runCli(['audit', 'signatures', ...args], { dataDir: server.dataDir });
const sigTag = (digest: string) => `${digest.replace(':', '-')}.sig`;

/** RFC 4180, as a spreadsheet reads it: quoted cells may hold commas, quotes and line breaks. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i++;
    } else cell += c;
  }
  assert.equal(cell, '', 'the last row ends with CRLF');
  return rows;
}

/** What the CSV says about an entry: each JSON field as text, absent ones empty. */
const COLUMNS = ['repository', 'tag', 'digest', 'status', 'signer', 'identity', 'format', 'verifiedAt', 'signatures', 'artifact', 'policy', 'mode', 'verdict', 'reason'] as const;
const asCsv = (entry: Entry): string[] => COLUMNS.map((column) => (entry[column] === undefined ? '' : String(entry[column])));

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  registry = adminClient(server);
  admin = await adminToken(server);
  key = makeKey('ecdsa-p256');
  await addUser(server.dataDir, carol.username, carol.password);
  assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: [{ subject: 'user:carol', repositories: '**', actions: ['audit'] }] })).status, 200);
  const trust = await api(server.url, admin, 'PUT', '/admin/v1/trust', {
    policies: [
      { repositories: 'prod/**', signatures: { mode: 'enforce', signers: [{ name: 'release', cosign: key.publicKeyPem }] } },
      { repositories: 'prod/audited/**', signatures: { mode: 'audit', signers: [{ name: 'release', cosign: key.publicKeyPem }] } },
    ],
  });
  assert.equal(trust.status, 200, trust.text);
  const sign = (repository: string, digest: string, by: TestKey) =>
    pushCosignSignature(registry, repository, digest, by, cosignPayload({ reference: `${server.host}/${repository}`, digest }));
  for (const [repository, tag] of [['prod/app', 'v1'], ['prod/app', 'v2'], ['prod/app', 'rc'], ['prod/audited/app', 'v1'], ['free/app', 'latest']] as const) {
    digests[`${repository}:${tag}`] = (await registry.pushImage(repository, tag)).descriptor.digest;
  }
  await sign('prod/app', digests['prod/app:v1'] as string, key);
  await sign('prod/app', digests['prod/app:rc'] as string, makeKey('ecdsa-p256'));
});
after(() => server?.stop());

describe('GET /admin/v1/signatures/report', () => {
  it('lists every tag → digest with its signature status, signer, time, policy and verdict', async () => {
    const response = await report();
    assert.equal(response.status, 200, response.text);
    assert.equal(response.body.next, undefined);
    const entries = response.body.entries;
    const v1 = digests['prod/app:v1'] as string;
    const rc = digests['prod/app:rc'] as string;
    assert.deepEqual(
      entries.map((entry) => `${entry.repository}:${entry.tag}`),
      ['free/app:latest', 'prod/app:rc', ...[sigTag(rc), sigTag(v1)].sort().map((tag) => `prod/app:${tag}`), 'prod/app:v1', 'prod/app:v2', 'prod/audited/app:v1'],
      'in (repository, tag) byte order',
    );
    const byImage = new Map(entries.map((entry) => [`${entry.repository}:${entry.tag}`, entry]));

    const signed = byImage.get('prod/app:v1');
    assert.deepEqual(
      { ...signed, verifiedAt: undefined, reason: undefined },
      {
        repository: 'prod/app',
        tag: 'v1',
        digest: v1,
        status: 'valid',
        signer: 'release',
        identity: key.fingerprint,
        format: 'cosign',
        signatures: 1,
        artifact: false,
        policy: 'prod/**',
        mode: 'enforce',
        verdict: 'served',
        verifiedAt: undefined,
        reason: undefined,
      },
    );
    assert.match(signed?.reason ?? '', new RegExp(`^signed with release's key \\([^,]+, SHA-256 fingerprint ${key.fingerprint}\\) for prod/app@${v1}$`));
    assert.ok(Math.abs(Date.parse(signed?.verifiedAt ?? '') - Date.now()) < 10 * 60_000, signed?.verifiedAt);

    const unsigned = byImage.get('prod/app:v2');
    assert.deepEqual(
      [unsigned?.digest, unsigned?.status, unsigned?.signer, unsigned?.verifiedAt, unsigned?.reason, unsigned?.signatures, unsigned?.policy, unsigned?.verdict],
      [digests['prod/app:v2'], 'none', undefined, undefined, 'no signatures', 0, 'prod/**', 'refused'],
    );
    const untrusted = byImage.get('prod/app:rc');
    assert.deepEqual([untrusted?.status, untrusted?.signer, untrusted?.format, untrusted?.verdict], ['invalid', undefined, 'cosign', 'refused']);
    assert.match(untrusted?.reason ?? '', /does not verify/);
    const audited = byImage.get('prod/audited/app:v1');
    assert.deepEqual([audited?.status, audited?.policy, audited?.mode, audited?.verdict], ['none', 'prod/audited/**', 'audit', 'served-unsatisfied']);
    const free = byImage.get('free/app:latest');
    assert.deepEqual([free?.status, free?.policy, free?.mode, free?.verdict], ['none', undefined, undefined, 'served']);
    const artifact = byImage.get(`prod/app:${sigTag(v1)}`);
    assert.deepEqual([artifact?.artifact, artifact?.verdict], [true, 'served']);

    // Auditors read the same report.
    const auditor = await tokenFor(server.url, carol, ['registry:audit:*']);
    assert.deepEqual((await report('', auditor)).body, response.body);
  });

  it('answers CSV with a header row, every cell quoted where it must be', async () => {
    const json = (await report()).body.entries;
    const response = await fetch(`${server.url}/admin/v1/signatures/report?format=csv`, { headers: { Authorization: `Bearer ${admin}` } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('Content-Type'), 'text/csv; charset=utf-8; header=present');
    const text = await response.text();
    // The valid signature's reason holds a comma and a quote: a quoted cell.
    assert.match(text, /,"signed with release's key \([^,]+, SHA-256 fingerprint [0-9a-f]{64}\) for prod\/app@sha256:[0-9a-f]{64}"\r\n/);
    const rows = parseCsv(text);
    assert.deepEqual(rows[0], [...COLUMNS]);
    assert.deepEqual(rows.slice(1), json.map(asCsv));
    // Accept: text/csv chooses it too.
    const accepted = await fetch(`${server.url}/admin/v1/signatures/report`, { headers: { Authorization: `Bearer ${admin}`, Accept: 'text/csv' } });
    assert.equal(await accepted.text(), text);
  });

  it('filters by a repository glob, and pages with a cursor and a Link to the next page', async () => {
    const names = async (query: string) => (await report(query)).body.entries.map((entry) => `${entry.repository}:${entry.tag}`);
    assert.deepEqual(new Set((await names('?repository=prod/*')).map((name) => name.split(':')[0])), new Set(['prod/app']));
    assert.deepEqual(new Set((await names('?repository=prod/**')).map((name) => name.split(':')[0])), new Set(['prod/app', 'prod/audited/app']));
    assert.deepEqual(await names('?repository=free/app'), ['free/app:latest']);
    assert.deepEqual(await names('?repository=**/app'), await names(''));
    assert.deepEqual(await names('?repository=nothing/**'), []);

    const all = (await report()).body.entries;
    const seen: Entry[] = [];
    let path: string | undefined = '/admin/v1/signatures/report?limit=2';
    let pages = 0;
    while (path !== undefined) {
      const page: Awaited<ReturnType<typeof report>> = await api<Page>(server.url, admin, 'GET', path);
      assert.equal(page.status, 200, page.text);
      assert.ok(page.body.entries.length <= 2);
      seen.push(...page.body.entries);
      const link = page.headers.get('Link');
      assert.equal(link === null, page.body.next === undefined);
      path = link === null ? undefined : /^<([^>]+)>; rel="next"$/.exec(link)?.[1];
      if (page.body.next !== undefined) assert.ok(path?.includes(`cursor=${page.body.next}`) && path.includes('limit=2'), link ?? '');
      pages++;
    }
    assert.equal(pages, Math.ceil(all.length / 2));
    assert.deepEqual(seen, all);
    // A glob with paging: the filter travels in the link.
    const first = await api<Page>(server.url, admin, 'GET', '/admin/v1/signatures/report?repository=prod/**&limit=1&format=json');
    assert.match(first.headers.get('Link') ?? '', /repository=prod%2F\*\*&format=json&limit=1&cursor=/);
  });

  it('refuses a bad query with a 400 problem', async () => {
    for (const query of ['?repository=PROD/**', '?repository=a//b', '?repository=${user}/**', '?limit=0', '?limit=1001', '?limit=ten', '?cursor=%%%', '?cursor=bm90IGpzb24', '?format=xml', '?repo=prod/**', '?limit=1&limit=2']) {
      const response = await api<{ status: number; detail: string }>(server.url, admin, 'GET', `/admin/v1/signatures/report${query}`);
      assert.equal(response.status, 400, `${query}: ${response.text}`);
      assert.equal(response.headers.get('Content-Type'), 'application/problem+json', query);
    }
  });
});

describe('portcullis audit signatures', () => {
  it('prints the same report as JSON, as CSV and as a table, filtered by --repo', async () => {
    const entries = (await report()).body.entries;
    const json = await cli(['--format', 'json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), entries);

    const csv = await cli(['--format', 'csv']);
    assert.equal(csv.code, 0, csv.stderr);
    const response = await fetch(`${server.url}/admin/v1/signatures/report?format=csv`, { headers: { Authorization: `Bearer ${admin}` } });
    assert.equal(csv.stdout, await response.text());

    const table = await cli([]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^IMAGE\s+DIGEST\s+SIGNATURE\s+SIGNER\s+VERIFIED\s+POLICY\s+VERDICT$/);
    assert.equal(lines.length, entries.length + 1);
    const v1 = (digests['prod/app:v1'] as string).slice(0, 19);
    assert.match(table.stdout, new RegExp(`^prod/app:v1 +${v1} +valid +release +\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ +prod/\\*\\* +served$`, 'm'));
    assert.match(table.stdout, /^prod\/app:v2 +sha256:[0-9a-f]{12} +none +- +- +prod\/\*\* +refused$/m);
    assert.match(table.stdout, /^free\/app:latest +sha256:[0-9a-f]{12} +none +- +- +- +served$/m);

    const filtered = await cli(['--repo', 'prod/audited/**', '--format', 'json']);
    assert.deepEqual(
      (JSON.parse(filtered.stdout) as Entry[]).map((entry) => `${entry.repository}:${entry.tag}`),
      ['prod/audited/app:v1'],
    );
    assert.equal((await cli(['--repo', 'nothing/**', '--format', 'json'])).stdout, '[]\n');
    const bad = await cli(['--repo', 'PROD/**']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /invalid repository pattern/);
    assert.notEqual((await cli(['--format', 'xml'])).code, 0);
  });
});

describe('the CSV writer', () => {
  it('quotes commas, quotes and line breaks, and defuses what a spreadsheet would run as a formula', () => {
    assert.equal(csvCell('plain'), 'plain');
    assert.equal(csvCell('a,b'), '"a,b"');
    assert.equal(csvCell('say "hi"'), '"say ""hi"""');
    assert.equal(csvCell('two\nlines'), '"two\nlines"');
    assert.equal(csvCell('=HYPERLINK("http://evil.example","x")'), `"'=HYPERLINK(""http://evil.example"",""x"")"`);
    for (const start of ['+', '-', '@', '\t', '\r']) assert.ok(csvCell(`${start}1`).replace(/^"/, '').startsWith(`'${start}`), JSON.stringify(start));
    assert.equal(csvCell(''), '');
    assert.equal(csvRow(['a', 'b,c', '-1']), `a,"b,c",'-1\r\n`);
  });
});
