// Where the figures come from, in one process: route labels are templates; the token, directory
// and signature counters keep to fixed label values; the LDAP provider times its connects and
// searches and tells an unreachable directory (error) from one that answers; the signature
// intake counts each signature it judges once; and the configuration of metrics and shutdown.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { LdapIdentityProvider } from '../../src/auth/identity/ldap.js';
import { loadConfig, type LdapConfig } from '../../src/config/config.js';
import { patterns } from '../../src/http/routes/v2/index.js';
import { extensionPatterns } from '../../src/http/routes/extensions.js';
import type { SignatureStore } from '../../src/metadata/signature-store.js';
import { routeTemplate } from '../../src/metrics/http.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { COSIGN_PAYLOAD_MEDIA_TYPE } from '../../src/trust/cosign.js';
import { SignatureIntake } from '../../src/trust/intake.js';
import { SignatureService } from '../../src/trust/signatures.js';
import type { GpgSignature } from '../../src/trust/gpg.js';
import type { SignatureVerifier } from '../../src/trust/verifier.js';
import { NO_TRUST } from '../../src/trust/signatures.js';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text.js';

const silent = pino({ level: 'silent' });

async function scrape(metrics: Metrics) {
  return parsePrometheusText(await metrics.render());
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('route labels', () => {
  it('are the templates of the route table, with no part of a concrete path', () => {
    assert.deepEqual(
      Object.fromEntries(Object.entries({ ...patterns, ...extensionPatterns }).map(([name, pattern]) => [name, routeTemplate(pattern)])),
      {
        base: '/v2/',
        catalog: '/v2/_catalog',
        tags: '/v2/<name>/tags/list',
        referrers: '/v2/<name>/referrers/<digest>',
        manifest: '/v2/<name>/manifests/<reference>',
        uploads: '/v2/<name>/blobs/uploads/',
        upload: '/v2/<name>/blobs/uploads/<uuid>',
        blob: '/v2/<name>/blobs/<digest>',
        signatures: '/extensions/v2/<name>/signatures/<digest>',
      },
    );
    assert.equal(routeTemplate('/admin/v1/robots/:name/tokens'), '/admin/v1/robots/<name>/tokens');
  });
});

describe('token, directory and signature counters', () => {
  it('count under fixed label values only, whatever a caller passes', async () => {
    const metrics = new Metrics();
    metrics.tokens.issued('basic');
    metrics.tokens.refused('password', 'throttled');
    metrics.tokens.refused('alice', 'secret-reason');
    metrics.directory.observe('search', 0.02, 'ok');
    metrics.directory.observe('cn=alice,dc=example', 1, 'ok');
    metrics.signatures.verified('cosign', 'valid', 'arrival');
    metrics.signatures.verified('x509-made-up', 'maybe', 'arrival');
    const families = await scrape(metrics);
    assert.equal(sampleValue(families, 'portcullis_tokens_issued_total', { grant: 'basic' }), 1);
    assert.equal(sampleValue(families, 'portcullis_tokens_refused_total', { grant: 'password', reason: 'throttled' }), 1);
    assert.equal(sampleValue(families, 'portcullis_tokens_refused_total', { grant: 'other', reason: 'other' }), 1);
    assert.equal(sampleValue(families, 'portcullis_ldap_operation_duration_seconds_count', { operation: 'search', outcome: 'ok' }), 1);
    assert.equal(sampleValue(families, 'portcullis_ldap_operation_duration_seconds_count', { operation: 'other', outcome: 'ok' }), 1);
    assert.equal(sampleValue(families, 'portcullis_signature_verifications_total', { format: 'cosign', outcome: 'valid', trigger: 'arrival' }), 1);
    assert.equal(sampleValue(families, 'portcullis_signature_verifications_total', { format: 'other', outcome: 'other', trigger: 'arrival' }), 1);
    assert.equal(families.get('portcullis_ldap_operation_duration_seconds')?.type, 'histogram');
  });
});

describe('the LDAP provider', () => {
  it('times its binds and searches, and counts an unreachable directory as an error', async () => {
    const config: LdapConfig = {
      url: `ldap://127.0.0.1:${await closedPort()}`,
      startTls: false,
      bindDn: 'cn=registry,dc=example,dc=org',
      bindPassword: 'service password',
      timeoutSeconds: 1,
      poolSize: 1,
      user: { baseDn: 'ou=people,dc=example,dc=org', filter: '(objectClass=person)', usernameAttribute: 'uid', domains: [] },
      groups: { source: 'search', baseDn: 'ou=groups,dc=example,dc=org', nameAttribute: 'cn', nested: true, maxDepth: 5, cacheTtlSeconds: 60, cacheMaxEntries: 100 },
    };
    const directory = new LdapIdentityProvider(config, silent);
    const seen: string[] = [];
    directory.observe((operation, seconds, outcome) => {
      assert.ok(seconds >= 0 && seconds < 5);
      seen.push(`${operation}:${outcome}`);
    });
    try {
      await assert.rejects(directory.checkHealth());
      await assert.rejects(directory.login('alice', 'a password'));
    } finally {
      await directory.close();
    }
    assert.ok(seen.includes('bind:error'), seen.join(' '));
    assert.ok(seen.includes('search:error'), seen.join(' '));
    assert.ok(!seen.some((entry) => entry.endsWith(':ok') || entry.endsWith(':refused')), seen.join(' '));
  });
});

describe('the signature intake', () => {
  const hex = 'a'.repeat(64);
  const cosignManifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, layers: [{ mediaType: COSIGN_PAYLOAD_MEDIA_TYPE, digest: `sha256:${'b'.repeat(64)}`, size: 10, annotations: {} }] }),
  );
  const arrival = { repository: 'team/app', tag: `sha256-${hex}.sig`, digest: `sha256:${'c'.repeat(64)}`, payload: cosignManifest, author: { actor: 'alice' } };

  it('counts each signature it judges once, by format and outcome, and a fault as an error', async () => {
    let failStore = false;
    const store = {
      async recordVerification(): Promise<boolean> {
        if (failStore) throw new Error('database down');
        return true;
      },
    } as unknown as SignatureStore;
    const intake = new SignatureIntake({ store, trust: NO_TRUST, blobs: async () => undefined, log: silent });
    const seen: string[] = [];
    intake.observe((format, outcome) => seen.push(`${format}:${outcome}`));
    await intake.arrived(arrival); // a layer without its signature annotation: judged invalid
    await intake.arrived({ ...arrival, tag: 'latest' }); // not a signature: not counted
    failStore = true;
    await intake.arrived(arrival); // judged, but not stored: an error, counted once
    assert.deepEqual(seen, ['cosign:invalid', 'cosign:error']);
  });
});

describe('the signature extension (GPG)', () => {
  it('counts each signature it stores once, with its outcome; one it does not store is not counted', async () => {
    let status = 'added';
    const store = {
      async signaturesOf(): Promise<[]> {
        return [];
      },
      async addSignature(): Promise<{ status: string }> {
        return { status };
      },
    } as unknown as SignatureStore;
    const verifier = { verify: async () => ({ format: 'gpg', outcome: 'invalid', reason: 'no signer of the policy' }) } as unknown as SignatureVerifier<GpgSignature>;
    const service = new SignatureService({ store, log: silent, verifier });
    const seen: string[] = [];
    service.observe((format, outcome) => seen.push(`${format}:${outcome}`));
    const digest = `sha256:${'d'.repeat(64)}`;
    await service.add('team/app', digest, { name: `${digest}@${'e'.repeat(32)}`, content: Buffer.from('signature') }, { actor: 'alice' });
    status = 'manifest-unknown';
    await assert.rejects(service.add('team/app', digest, { name: `${digest}@${'f'.repeat(32)}`, content: Buffer.from('other') }, { actor: 'alice' }));
    assert.deepEqual(seen, ['gpg:invalid']);
  });
});

describe('the metrics and shutdown settings', () => {
  const load = (env: Record<string, string>) => loadConfig({ env: { PORTCULLIS_DATA_DIR: '/tmp/unused', ...env } });

  it('serve /metrics on the main listener by default, and drain after SIGTERM except on loopback', () => {
    const local = load({});
    assert.deepEqual(local.metrics, { enabled: true });
    assert.deepEqual(local.shutdown, { drainSeconds: 0, timeoutSeconds: 60 });
    const exposed = load({ PORTCULLIS_LISTEN: '0.0.0.0:5000', PORTCULLIS_AUTH_TOKEN_REALM: 'https://registry.example.org/auth/token' });
    assert.deepEqual(exposed.shutdown, { drainSeconds: 5, timeoutSeconds: 60 });
    const chosen = load({ PORTCULLIS_SHUTDOWN_DRAIN_SECONDS: '0', PORTCULLIS_SHUTDOWN_TIMEOUT_SECONDS: '900', PORTCULLIS_LISTEN: '[::]:5000', PORTCULLIS_AUTH_TOKEN_REALM: 'https://r.example/auth/token' });
    assert.deepEqual(chosen.shutdown, { drainSeconds: 0, timeoutSeconds: 900 });
  });

  it('refuse a metrics listener that is switched off or the main address, and a negative drain', () => {
    assert.throws(() => load({ PORTCULLIS_METRICS_ENABLED: 'false', PORTCULLIS_METRICS_LISTEN: '127.0.0.1:9090' }), /metrics\.listen .* metrics\.enabled is false/);
    assert.throws(() => load({ PORTCULLIS_METRICS_LISTEN: '127.0.0.1:5000' }), /metrics\.listen .* must differ from listen/);
    assert.throws(() => load({ PORTCULLIS_METRICS_LISTEN: 'anywhere' }), /metrics\.listen must match pattern/);
    assert.throws(() => load({ PORTCULLIS_SHUTDOWN_DRAIN_SECONDS: '-1' }), /shutdown\.drainSeconds must be >= 0/);
    assert.deepEqual(load({ PORTCULLIS_METRICS_ENABLED: 'false' }).metrics, { enabled: false });
  });
});
