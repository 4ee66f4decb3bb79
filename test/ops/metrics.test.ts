// GET /metrics over HTTP: served without a token on the main listener, in a text format a strict
// Prometheus parser accepts; its counters move with the requests they count, labelled by route
// template and never by repository, tag, digest or user; unknown paths share one series; an
// upload streaming in shows as in progress; tokens issued and refused are counted. With
// metrics.listen it is served there only (404 on the main listener); metrics.enabled: false
// serves it nowhere.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { allSamples, parsePrometheusText, sampleValue, type Family } from '../support/prometheus-text.js';
import { adminClient, randomName, type TestRegistry } from '../support/registry-client.js';
import { freePort, startPortcullis, type RunningRegistry } from '../support/server.js';

type Families = Map<string, Family>;

async function scrape(url: string): Promise<Families> {
  const response = await fetch(`${url}/metrics`);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(text);
}

/** How much a series grew between two scrapes. */
const grew = (before: Families, after: Families, name: string, labels: Record<string, string>): number =>
  sampleValue(after, name, labels) - sampleValue(before, name, labels);

const basic = (username: string, password: string): string => `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;

describe('GET /metrics on the main listener', () => {
  let registry: RunningRegistry;
  let client: TestRegistry;
  before(async () => {
    registry = await startPortcullis();
    client = adminClient(registry);
  });
  after(async () => {
    await registry?.stop();
  });

  it('answers without a token, in the text exposition format, with the registry and process figures', async () => {
    const families = await scrape(registry.url);
    const types = Object.fromEntries([...families.values()].map((family) => [family.name, family.type]));
    assert.deepEqual(
      {
        portcullis_http_requests_total: types.portcullis_http_requests_total,
        portcullis_http_request_duration_seconds: types.portcullis_http_request_duration_seconds,
        portcullis_http_received_bytes_total: types.portcullis_http_received_bytes_total,
        portcullis_http_sent_bytes_total: types.portcullis_http_sent_bytes_total,
        portcullis_http_requests_in_flight: types.portcullis_http_requests_in_flight,
        portcullis_uploads_in_progress: types.portcullis_uploads_in_progress,
        portcullis_tokens_issued_total: types.portcullis_tokens_issued_total,
        portcullis_tokens_refused_total: types.portcullis_tokens_refused_total,
        portcullis_ldap_operation_duration_seconds: types.portcullis_ldap_operation_duration_seconds,
        portcullis_signature_verifications_total: types.portcullis_signature_verifications_total,
        process_cpu_seconds_total: types.process_cpu_seconds_total,
        nodejs_heap_size_used_bytes: types.nodejs_heap_size_used_bytes,
      },
      {
        portcullis_http_requests_total: 'counter',
        portcullis_http_request_duration_seconds: 'histogram',
        portcullis_http_received_bytes_total: 'counter',
        portcullis_http_sent_bytes_total: 'counter',
        portcullis_http_requests_in_flight: 'gauge',
        portcullis_uploads_in_progress: 'gauge',
        portcullis_tokens_issued_total: 'counter',
        portcullis_tokens_refused_total: 'counter',
        portcullis_ldap_operation_duration_seconds: 'histogram',
        portcullis_signature_verifications_total: 'counter',
        process_cpu_seconds_total: 'counter',
        nodejs_heap_size_used_bytes: 'gauge',
      },
    );
    for (const family of families.values()) assert.ok(family.help, `${family.name} has a HELP line`);
    // The scrape being answered is in flight.
    assert.equal(sampleValue(families, 'portcullis_http_requests_in_flight'), 1);
  });

  it('counts requests by method, route template and status, with their duration and bytes', async () => {
    const repository = `metrics/${randomName()}`;
    const before = await scrape(registry.url);
    const { layers } = await client.pushImage(repository, 'v1', { layers: 2 });
    const manifest = await client.fetch(`/v2/${repository}/manifests/v1`);
    assert.equal(manifest.status, 200);
    await manifest.arrayBuffer();
    for (const layer of layers) {
      const blob = await client.fetch(`/v2/${repository}/blobs/${layer.digest}`);
      assert.equal(blob.status, 200);
      await blob.arrayBuffer();
    }
    const missing = await client.fetch(`/v2/${repository}/manifests/absent`);
    assert.equal(missing.status, 404);
    await missing.arrayBuffer();
    const after = await scrape(registry.url);

    const requests = (method: string, route: string, status: string) => grew(before, after, 'portcullis_http_requests_total', { method, route, status });
    assert.equal(requests('POST', '/v2/<name>/blobs/uploads/', '201'), 3, 'config and two layers, each a monolithic POST');
    assert.equal(requests('PUT', '/v2/<name>/manifests/<reference>', '201'), 1);
    assert.equal(requests('GET', '/v2/<name>/manifests/<reference>', '200'), 1);
    assert.equal(requests('GET', '/v2/<name>/manifests/<reference>', '404'), 1);
    assert.equal(requests('GET', '/v2/<name>/blobs/<digest>', '200'), 2);
    assert.equal(requests('GET', '/metrics', '200'), 1, 'the scrape before this one');
    const durations = grew(before, after, 'portcullis_http_request_duration_seconds_count', { method: 'GET', route: '/v2/<name>/blobs/<digest>', status_class: '2xx' });
    assert.equal(durations, 2);
    const layerBytes = layers.reduce((sum, layer) => sum + layer.size, 0);
    assert.ok(grew(before, after, 'portcullis_http_received_bytes_total', { method: 'POST', route: '/v2/<name>/blobs/uploads/' }) >= layerBytes);
    assert.ok(grew(before, after, 'portcullis_http_sent_bytes_total', { method: 'GET', route: '/v2/<name>/blobs/<digest>' }) >= layerBytes);
  });

  it('labels no series with a repository, tag, digest or user, and gives unknown paths one series', async () => {
    const repository = `secret-team/${randomName('hidden')}`;
    const tag = `tag-${randomBytes(6).toString('hex')}`;
    const user = `nobody-${randomBytes(6).toString('hex')}`;
    const { descriptor } = await client.pushImage(repository, tag, { layers: 1 });
    const denied = await fetch(`${registry.url}/auth/token?service=portcullis&scope=repository:${repository}:pull`, { headers: { Authorization: basic(user, 'wrong password') } });
    assert.equal(denied.status, 401);
    await denied.arrayBuffer();
    const before = await scrape(registry.url);
    // An attacker's choice of paths and names adds no series: 40 unknown paths, 40 repositories.
    for (let i = 0; i < 40; i++) {
      const unknown = await fetch(`${registry.url}/${randomBytes(8).toString('hex')}/${i}`);
      assert.equal(unknown.status, 404);
      await unknown.arrayBuffer();
      const unauthorized = await fetch(`${registry.url}/v2/${randomName('probe')}/tags/list`);
      assert.equal(unauthorized.status, 401);
      await unauthorized.arrayBuffer();
    }
    const after = await scrape(registry.url);
    // Two new label sets (the unknown paths, the probes' 401s), each a request counter, a
    // histogram (15 buckets, +Inf, _sum, _count) and the two byte counters; nothing more.
    const series = (families: Families, prefix: string) => allSamples(families).filter((sample) => sample.name.startsWith(prefix)).length;
    assert.ok(series(after, 'portcullis_http_requests_total') - series(before, 'portcullis_http_requests_total') <= 2);
    assert.ok(series(after, 'portcullis_') - series(before, 'portcullis_') <= 2 * (1 + 18 + 2));
    assert.equal(grew(before, after, 'portcullis_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' }), 40);
    assert.equal(grew(before, after, 'portcullis_http_requests_total', { method: 'GET', route: '/v2/<name>/tags/list', status: '401' }), 40);

    const values = allSamples(after).flatMap((sample) => Object.values(sample.labels));
    const secrets = [repository, 'secret-team', tag, descriptor.digest, descriptor.digest.slice(7), user];
    for (const secret of secrets) assert.deepEqual(values.filter((value) => value.includes(secret)), [], `no label carries ${secret}`);
    const routes = new Set(allSamples(after).flatMap((sample) => (sample.labels.route === undefined ? [] : [sample.labels.route])));
    for (const route of routes) assert.match(route, /^(?:unmatched|(?:\/(?:[a-z0-9_.]+|<[a-z]+>))+\/?)$/, 'a route label is a template');
  });

  it('shows an upload as in progress while its body streams in', async () => {
    const repository = `metrics/${randomName('upload')}`;
    const token = await client.token([`repository:${repository}:pull,push`]);
    const started = await fetch(`${registry.url}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(started.status, 202);
    const location = new URL(started.headers.get('Location') ?? '', registry.url);
    const patch = request(location, { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' } });
    const answered = new Promise<number>((resolve, reject) => {
      patch.once('response', (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      patch.once('error', reject);
    });
    patch.write(randomBytes(64 * 1024));
    const inProgress = async (): Promise<number> => sampleValue(await scrape(registry.url), 'portcullis_uploads_in_progress');
    const deadline = Date.now() + 5_000;
    while ((await inProgress()) !== 1) {
      assert.ok(Date.now() < deadline, 'the streaming PATCH shows as an upload in progress');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    patch.end(randomBytes(1000));
    assert.equal(await answered, 202);
    assert.equal(await inProgress(), 0);
  });

  it('counts tokens issued and refused, by grant and reason', async () => {
    const before = await scrape(registry.url);
    const get = async (authorization?: string): Promise<number> => {
      const response = await fetch(`${registry.url}/auth/token?service=portcullis`, { headers: authorization ? { Authorization: authorization } : {} });
      await response.arrayBuffer();
      return response.status;
    };
    const post = async (fields: Record<string, string>): Promise<number> => {
      const response = await fetch(`${registry.url}/auth/token`, { method: 'POST', body: new URLSearchParams({ service: 'portcullis', ...fields }) });
      await response.arrayBuffer();
      return response.status;
    };
    assert.equal(await get(), 200);
    assert.equal(await get(basic(registry.admin.username, registry.admin.password)), 200);
    assert.equal(await get(basic(registry.admin.username, 'not the password')), 401);
    assert.equal(await post({ grant_type: 'password', username: registry.admin.username, password: registry.admin.password }), 200);
    assert.equal(await post({ grant_type: 'client_credentials' }), 400);
    const after = await scrape(registry.url);
    assert.equal(grew(before, after, 'portcullis_tokens_issued_total', { grant: 'anonymous' }), 1);
    assert.equal(grew(before, after, 'portcullis_tokens_issued_total', { grant: 'basic' }), 1);
    assert.equal(grew(before, after, 'portcullis_tokens_issued_total', { grant: 'password' }), 1);
    assert.equal(grew(before, after, 'portcullis_tokens_refused_total', { grant: 'basic', reason: 'unauthorized' }), 1);
    assert.equal(grew(before, after, 'portcullis_tokens_refused_total', { grant: 'unsupported', reason: 'invalid_request' }), 1);
  });
});

describe('metrics.listen and metrics.enabled', () => {
  let separate: RunningRegistry | undefined;
  let off: RunningRegistry | undefined;
  let metricsPort: number;
  before(async () => {
    metricsPort = await freePort();
    [separate, off] = await Promise.all([
      startPortcullis({ env: { PORTCULLIS_METRICS_LISTEN: `127.0.0.1:${metricsPort}` } }),
      startPortcullis({ env: { PORTCULLIS_METRICS_ENABLED: 'false' } }),
    ]);
  });
  after(async () => {
    await Promise.all([separate?.stop(), off?.stop()]);
  });

  it('serves /metrics on its own listener only, and nothing else there', async () => {
    const main = await fetch(`${separate?.url}/metrics`);
    assert.equal(main.status, 404, 'absent from the main listener');
    await main.arrayBuffer();
    const own = await scrape(`http://127.0.0.1:${metricsPort}`);
    assert.equal(sampleValue(own, 'portcullis_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' }), 1, 'the main listener counted the refused scrape');
    for (const path of ['/', '/v2/', '/healthz', '/metrics/x']) {
      const other = await fetch(`http://127.0.0.1:${metricsPort}${path}`);
      assert.equal(other.status, 404, path);
      await other.arrayBuffer();
    }
    const post = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    await post.arrayBuffer();
  });

  it('serves /metrics nowhere when switched off', async () => {
    const response = await fetch(`${off?.url}/metrics`);
    assert.equal(response.status, 404);
    await response.arrayBuffer();
    assert.equal((await fetch(`${off?.url}/healthz`)).status, 200);
  });
});
