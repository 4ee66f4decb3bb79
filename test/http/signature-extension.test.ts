// The registry signature extension over HTTP (what skopeo and podman use for GPG signatures):
// the /v2/ announcement, listing and storing signatures, every refusal of bad input (a clear 4xx,
// nothing stored), the access each call needs, and the stored verification results as the admin
// API shows them.
// Backend: embedded only (the signature store runs on both databases in test/trust/gpg-verifier).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NO_TRUSTED_SIGNER } from '../../src/trust/gpg.js';
import { MAX_SIGNATURES_PER_MANIFEST } from '../../src/trust/signatures.js';
import { addUser, adminToken, api, parseChallenge, tokenFor } from '../auth/support.js';
import { createGpgKey, standaloneSign, type GpgKey } from '../support/gpg.js';
import { adminClient, expectError, randomName, sha256, type TestRegistry } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

let server: RunningRegistry;
let registry: TestRegistry;
let admin: string;
let dir: string;
let key: GpgKey;
const reader = { username: 'reader', password: 'reader-password-1234' };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-sigext-'));
  key = await createGpgKey(join(dir, 'gnupg'), 'Signer <signer@example.test>');
  server = await startPortcullis();
  registry = adminClient(server);
  admin = await adminToken(server);
  await addUser(server.dataDir, reader.username, reader.password);
  const rule = await api(server.url, admin, 'POST', '/admin/v1/rules', { subject: 'user:reader', repositories: 'shared/**', actions: ['pull'] });
  assert.equal(rule.status, 201, rule.text);
});

after(async () => {
  await server?.stop();
  await key?.close();
  await rm(dir, { recursive: true, force: true });
});

interface WireSignature {
  schemaVersion: number;
  name: string;
  type: string;
  content: string;
}

const path = (repository: string, digest: string) => `/extensions/v2/${repository}/signatures/${digest}`;

/** A request to the extension as the administrator, with a token for `actions` on the repository. */
async function call(repository: string, digest: string, init: RequestInit = {}, actions = init.method === 'PUT' ? 'pull,push' : 'pull'): Promise<Response> {
  const token = await registry.token([`repository:${repository}:${actions}`]);
  const headers = new Headers(init.headers);
  headers.set('Authorization', `Bearer ${token}`);
  return fetch(new URL(path(repository, digest), server.url), { ...init, headers });
}

const put = (repository: string, digest: string, body: unknown) =>
  call(repository, digest, { method: 'PUT', body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) });

async function list(repository: string, digest: string): Promise<WireSignature[]> {
  const response = await call(repository, digest);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.equal(response.headers.get('Content-Type'), 'application/json');
  return (JSON.parse(text) as { signatures: WireSignature[] }).signatures;
}

const signatureBody = (digest: string, content: Buffer, id = randomBytes(16).toString('hex')) => ({
  schemaVersion: 2,
  name: `${digest}@${id}`,
  type: 'atomic',
  content: content.toString('base64'),
});

/** An image pushed to a new repository; returns the repository, the manifest digest and its bytes. */
async function image(prefix = 'sig'): Promise<{ repository: string; digest: string; bytes: Buffer }> {
  const repository = `${prefix}/${randomName()}`;
  const { manifest, descriptor } = await registry.pushImage(repository, 'v1', { layers: 1 });
  return { repository, digest: descriptor.digest, bytes: Buffer.from(JSON.stringify(manifest)) };
}

interface AdminReport {
  repository: string;
  digest: string;
  signatures: { format: string; name: string; contentDigest: string; createdAt: string }[];
  verifications: { format: string; signature: string; outcome: string; signer?: string; identity?: string; reason: string; verifiedAt: string }[];
}

async function report(repository: string, digest: string): Promise<AdminReport> {
  const response = await api<AdminReport>(server.url, admin, 'GET', `/admin/v1/signatures?repository=${encodeURIComponent(repository)}&digest=${encodeURIComponent(digest)}`);
  assert.equal(response.status, 200, response.text);
  return response.body;
}

describe('the /v2/ announcement', () => {
  it('says X-Registry-Supports-Signatures: 1 on the 401 challenge and on the authenticated answer', async () => {
    const anonymous = await fetch(`${server.url}/v2/`);
    assert.equal(anonymous.status, 401);
    assert.ok(parseChallenge(anonymous.headers.get('WWW-Authenticate')), 'the 401 carries a Bearer challenge');
    assert.equal(anonymous.headers.get('X-Registry-Supports-Signatures'), '1');
    const token = await tokenFor(server.url, server.admin);
    const authenticated = await fetch(`${server.url}/v2/`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(authenticated.status, 200);
    assert.equal(authenticated.headers.get('X-Registry-Supports-Signatures'), '1');
    // Only /v2/ announces it: the other routes answer as before.
    const other = await fetch(`${server.url}/v2/some/repo/tags/list`);
    assert.equal(other.headers.get('X-Registry-Supports-Signatures'), null);
  });
});

describe('GET /extensions/v2/<name>/signatures/<digest>', () => {
  it('answers 200 with an empty list for a manifest without signatures, and for a digest the repository does not hold', async () => {
    const { repository, digest } = await image();
    assert.deepEqual(await list(repository, digest), []);
    assert.deepEqual(await list(repository, sha256(randomBytes(8))), []);
  });

  it('needs pull on the repository: no token or another repository → 401 with the challenge for it', async () => {
    const { repository, digest } = await image();
    const bare = await fetch(new URL(path(repository, digest), server.url));
    assert.equal(bare.status, 401);
    assert.deepEqual(parseChallenge(bare.headers.get('WWW-Authenticate')), {
      realm: `${server.url}/auth/token`,
      service: 'portcullis',
      scope: `repository:${repository}:pull`,
    });
    const elsewhere = await registry.token(['repository:elsewhere/repo:pull']);
    const wrong = await fetch(new URL(path(repository, digest), server.url), { headers: { Authorization: `Bearer ${elsewhere}` } });
    assert.equal(wrong.status, 401);
    assert.equal(parseChallenge(wrong.headers.get('WWW-Authenticate'))?.error, 'insufficient_scope');
  });
});

describe('PUT /extensions/v2/<name>/signatures/<digest>', () => {
  it('stores a signature skopeo made (201) and serves it back exactly; the admin API shows its verification', async () => {
    const { repository, digest, bytes } = await image();
    const content = await standaloneSign(key, bytes, `${server.host}/${repository}:v1`, dir);
    const body = signatureBody(digest, content);
    const response = await put(repository, digest, body);
    assert.equal(response.status, 201, await response.text());
    assert.deepEqual(await list(repository, digest), [body]);

    const shown = await report(repository, digest);
    assert.deepEqual(
      shown.signatures.map((s) => [s.format, s.name, s.contentDigest]),
      [['gpg', body.name, sha256(content)]],
    );
    assert.equal(shown.verifications.length, 1);
    const [verification] = shown.verifications;
    // No trust policy names a signer yet: stored, served, and judged invalid for that reason.
    assert.deepEqual({ ...verification, verifiedAt: undefined }, { format: 'gpg', signature: body.name, outcome: 'invalid', reason: NO_TRUSTED_SIGNER, verifiedAt: undefined });
    assert.ok(!Number.isNaN(Date.parse(verification?.verifiedAt ?? '')));
  });

  it('stores a tampered signature as sent, with an invalid verification result', async () => {
    const { repository, digest, bytes } = await image();
    const content = await standaloneSign(key, bytes, `${server.host}/${repository}:v1`, dir);
    const tampered = Buffer.from(content);
    const at = tampered.length - 20; // inside the signature packet's MPI
    tampered.writeUInt8(tampered.readUInt8(at) ^ 0xff, at);
    const body = signatureBody(digest, tampered);
    const response = await put(repository, digest, body);
    assert.equal(response.status, 201, await response.text());
    assert.deepEqual(await list(repository, digest), [body]);
    const shown = await report(repository, digest);
    assert.deepEqual(shown.verifications.map((v) => [v.signature, v.outcome]), [[body.name, 'invalid']]);
  });

  it('takes the same signature again as a no-op, and never replaces one under a taken name', async () => {
    const { repository, digest } = await image();
    const first = signatureBody(digest, randomBytes(200));
    assert.equal((await put(repository, digest, first)).status, 201);
    assert.equal((await put(repository, digest, { ...first, name: `${digest}@again` })).status, 201);
    await expectError(await put(repository, digest, { ...first, content: randomBytes(200).toString('base64') }), 403, 'DENIED');
    assert.deepEqual(await list(repository, digest), [first]);
  });

  it(`keeps at most ${MAX_SIGNATURES_PER_MANIFEST} signatures per manifest: the next is DENIED`, async () => {
    const { repository, digest } = await image();
    const stored = [];
    for (let i = 0; i < MAX_SIGNATURES_PER_MANIFEST; i++) {
      const body = signatureBody(digest, randomBytes(100));
      assert.equal((await put(repository, digest, body)).status, 201);
      stored.push(body);
    }
    const response = await put(repository, digest, signatureBody(digest, randomBytes(100)));
    const text = await response.text();
    assert.equal(response.status, 403, text);
    assert.match(text, new RegExp(`already has ${MAX_SIGNATURES_PER_MANIFEST} signatures`));
    assert.deepEqual(await list(repository, digest), stored);
  });

  it('refuses a signature for a manifest the repository does not hold: 404 MANIFEST_UNKNOWN', async () => {
    const { repository, digest } = await image();
    const elsewhere = await image();
    // The manifest exists, but in another repository: not here.
    await expectError(await put(repository, elsewhere.digest, signatureBody(elsewhere.digest, randomBytes(64))), 404, 'MANIFEST_UNKNOWN');
    const unknown = sha256(randomBytes(8));
    await expectError(await put(repository, unknown, signatureBody(unknown, randomBytes(64))), 404, 'MANIFEST_UNKNOWN');
    assert.deepEqual(await list(repository, elsewhere.digest), []);
    assert.deepEqual(await list(repository, digest), []);
  });

  it('refuses bad input with a clear 4xx and stores nothing', async () => {
    const { repository, digest } = await image();
    const other = sha256(randomBytes(8));
    const good = signatureBody(digest, randomBytes(64));
    const cases: [string, string, unknown, number, string, RegExp][] = [
      ['a digest of bad grammar in the URL', 'sha256:abc', good, 400, 'DIGEST_INVALID', /invalid sha256 digest/],
      ['an unsupported algorithm in the URL', `md5:${'0'.repeat(32)}`, good, 400, 'DIGEST_INVALID', /unsupported digest algorithm/],
      ['a name for another manifest', digest, { ...good, name: `${other}@abc` }, 400, 'DIGEST_INVALID', new RegExp(`name is for ${other}`)],
      ['a name without an id', digest, { ...good, name: digest }, 400, 'UNSUPPORTED', /<manifest digest>@<signature id>/],
      ['a name with a bad id', digest, { ...good, name: `${digest}@a/b` }, 400, 'UNSUPPORTED', /<manifest digest>@<signature id>/],
      ['a name whose digest is malformed', digest, { ...good, name: 'sha256:zz@abc' }, 400, 'DIGEST_INVALID', /invalid/],
      ['another schemaVersion', digest, { ...good, schemaVersion: 1 }, 400, 'UNSUPPORTED', /schemaVersion must be 2/],
      ['another type', digest, { ...good, type: 'cosign' }, 400, 'UNSUPPORTED', /type must be "atomic"/],
      ['an unknown field', digest, { ...good, extra: true }, 400, 'UNSUPPORTED', /unknown field "extra"/],
      ['content that is not base64', digest, { ...good, content: 'not*base64' }, 400, 'UNSUPPORTED', /not base64/],
      ['empty content', digest, { ...good, content: '' }, 400, 'UNSUPPORTED', /content must be the signature in base64/],
      ['a body that is not JSON', digest, '{"schemaVersion":2,', 400, 'UNSUPPORTED', /not valid JSON/],
      ['a JSON array', digest, '[]', 400, 'UNSUPPORTED', /must be a JSON object/],
      ['content over 64 KiB', digest, { ...good, content: randomBytes(64 * 1024 + 1).toString('base64') }, 400, 'SIZE_INVALID', /larger than 65536 bytes/],
      ['a body over the limit', digest, { ...good, content: randomBytes(100 * 1024).toString('base64') }, 413, 'SIZE_INVALID', /too large/],
    ];
    for (const [label, urlDigest, body, status, code, message] of cases) {
      const response = await put(repository, urlDigest, body);
      const text = await response.text();
      assert.equal(response.status, status, `${label}: ${text}`);
      const error = (JSON.parse(text) as { errors: { code: string; message: string }[] }).errors[0];
      assert.equal(error?.code, code, `${label}: ${text}`);
      assert.match(error?.message ?? '', message, label);
    }
    // A name outside the grammar is refused before any token is looked at.
    await expectError(await fetch(new URL(path('Bad_Name', digest), server.url), { method: 'PUT', body: JSON.stringify(good) }), 400, 'NAME_INVALID');
    assert.deepEqual(await list(repository, digest), []);
    assert.deepEqual((await report(repository, digest)).verifications, []);
  });

  it('needs push: a principal with pull only gets 401 insufficient_scope and stores nothing', async () => {
    const { repository, digest } = await image('shared');
    const token = await tokenFor(server.url, reader, [`repository:${repository}:pull,push`]);
    const response = await fetch(new URL(path(repository, digest), server.url), {
      method: 'PUT',
      headers: { Authorization: `Bearer ${token}` },
      body: JSON.stringify(signatureBody(digest, randomBytes(64))),
    });
    const text = await response.text();
    assert.equal(response.status, 401, text);
    assert.deepEqual(parseChallenge(response.headers.get('WWW-Authenticate')), {
      realm: `${server.url}/auth/token`,
      service: 'portcullis',
      scope: `repository:${repository}:pull,push`,
      error: 'insufficient_scope',
    });
    // The same principal may read the (empty) list.
    const read = await fetch(new URL(path(repository, digest), server.url), { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(read.status, 200);
    assert.deepEqual(await read.json(), { signatures: [] });
  });

  it('answers other methods with 405 and Allow', async () => {
    const { repository, digest } = await image();
    const response = await call(repository, digest, { method: 'DELETE' }, '*');
    assert.equal(response.status, 405, await response.text());
    assert.equal(response.headers.get('Allow'), 'GET, PUT');
  });
});

describe('GET /admin/v1/signatures', () => {
  it('is for administrators, checks its query, and says 404 for a manifest the repository does not hold', async () => {
    const { repository, digest } = await image('shared');
    const bare = await api(server.url, undefined, 'GET', `/admin/v1/signatures?repository=${repository}&digest=${digest}`);
    assert.equal(bare.status, 401);
    const readerToken = await tokenFor(server.url, reader, ['registry:admin:*']);
    const refused = await api(server.url, readerToken, 'GET', `/admin/v1/signatures?repository=${repository}&digest=${digest}`);
    assert.equal(refused.status, 403, refused.text);
    assert.equal(refused.headers.get('Content-Type'), 'application/problem+json');
    for (const [query, detail] of [
      [`digest=${digest}`, /repository is required/],
      [`repository=Bad_Name&digest=${digest}`, /valid repository name/],
      [`repository=${repository}&digest=sha256:abc`, /^digest: invalid sha256 digest$/],
      [`repository=${repository}&repository=${repository}&digest=${digest}`, /once/],
    ] as const) {
      const response = await api<{ status: number; detail: string }>(server.url, admin, 'GET', `/admin/v1/signatures?${query}`);
      assert.equal(response.status, 400, `${query}: ${response.text}`);
      assert.match(response.body.detail, detail, query);
    }
    const unknown = await api<{ detail: string }>(server.url, admin, 'GET', `/admin/v1/signatures?repository=${repository}&digest=${sha256(randomBytes(4))}`);
    assert.equal(unknown.status, 404, unknown.text);
    assert.deepEqual(await report(repository, digest), { repository, digest, signatures: [], verifications: [] });
  });
});
