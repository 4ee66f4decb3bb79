// Forged, tampered and misused bearer tokens over HTTP. The server signs with a key file this
// test wrote, so the test can also mint tokens the server's key really signed but whose claims
// are wrong (issuer, audience, expiry…): each of those must be refused as firmly as a forgery.
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminClient } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { decodeJwt, parseChallenge, signEs256, signHs256, tokenFor, unsigned, withPayload } from './support.js';

let server: RunningRegistry;
let keyDir: string;
let serverKey: KeyObject;
let kid: string;
let publicJwk: Record<string, unknown>;

const REPOSITORY = 'forge/app';
const OTHER = 'forge/other';

before(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'portcullis-forge-'));
  serverKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const keyFile = join(keyDir, 'signing.pem');
  await writeFile(keyFile, serverKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_TOKEN_KEY_FILE: keyFile } });
  const jwks = (await (await fetch(`${server.url}/auth/jwks`)).json()) as { keys: (Record<string, unknown> & { kid: string })[] };
  assert.equal(jwks.keys.length, 1);
  publicJwk = jwks.keys[0] as Record<string, unknown>;
  kid = jwks.keys[0]?.kid ?? '';
  // The JWKS publishes exactly our key file's public half.
  const published = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: publicJwk.x as string, y: publicJwk.y as string }, format: 'jwk' });
  assert.ok(published.equals(createPublicKey(serverKey)));
  const registry = adminClient(server);
  await registry.pushImage(REPOSITORY, 'latest', { layers: 1 });
  await registry.pushImage(OTHER, 'latest', { layers: 1 });
});

after(async () => {
  await server.stop();
  await rm(keyDir, { recursive: true, force: true });
});

const now = () => Math.floor(Date.now() / 1000);

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = now();
  return {
    iss: 'portcullis',
    sub: 'admin',
    aud: 'portcullis',
    iat,
    nbf: iat,
    exp: iat + 300,
    jti: `forged-${Math.random().toString(36).slice(2)}`,
    access: [
      { type: 'repository', name: REPOSITORY, actions: ['pull', 'push', 'delete'] },
      { type: 'registry', name: 'admin', actions: ['*'] },
    ],
    ...overrides,
  };
}

const header = (extra: Record<string, unknown> = {}) => ({ alg: 'ES256', typ: 'JWT', kid, ...extra });

async function tags(token: string, repository = REPOSITORY): Promise<Response> {
  return fetch(`${server.url}/v2/${repository}/tags/list`, { headers: { Authorization: `Bearer ${token}` } });
}

async function expectRefused(token: string, error: 'invalid_token' | 'insufficient_scope' = 'invalid_token', repository = REPOSITORY): Promise<void> {
  const response = await tags(token, repository);
  const text = await response.text();
  assert.equal(response.status, 401, `accepted a bad token: ${text}`);
  assert.equal(parseChallenge(response.headers.get('WWW-Authenticate'))?.error, error);
  // The admin API refuses it too (the same token claims registry:admin:*).
  const admin = await fetch(`${server.url}/admin/v1/rules`, { headers: { Authorization: `Bearer ${token}` } });
  if (error === 'invalid_token') assert.equal(admin.status, 401, `admin API accepted a bad token: ${await admin.text()}`);
  else await admin.arrayBuffer();
}

describe('tokens minted with the server key', () => {
  it('a well-formed token is accepted (the control for everything below)', async () => {
    const response = await tags(signEs256(header(), claims(), serverKey));
    const text = await response.text();
    assert.equal(response.status, 200, text);
    assert.deepEqual((JSON.parse(text) as { tags: string[] }).tags, ['latest']);
  });

  it('refuses a wrong issuer, a wrong or plural audience, expiry, a future nbf and missing claims', async () => {
    const t = now();
    const bad: Record<string, Record<string, unknown>> = {
      'wrong iss': claims({ iss: 'evil' }),
      'wrong aud': claims({ aud: 'registry.docker.io' }),
      'audience list': claims({ aud: ['portcullis', 'registry.docker.io'] }),
      expired: claims({ iat: t - 3600, nbf: t - 3600, exp: t - 1800 }),
      'expired beyond the tolerance': claims({ iat: t - 400, nbf: t - 400, exp: t - 100 }),
      'not yet valid': claims({ nbf: t + 3600, exp: t + 7200 }),
      'no exp': claims({ exp: undefined }),
      'no jti': claims({ jti: undefined }),
      'no access': claims({ access: undefined }),
      'access not a list': claims({ access: { type: 'repository', name: REPOSITORY, actions: ['pull'] } }),
      'actions not a list': claims({ access: [{ type: 'repository', name: REPOSITORY, actions: 'pull' }] }),
      'invalid repository name': claims({ access: [{ type: 'repository', name: '../etc', actions: ['pull'] }] }),
      'exp as a string': claims({ exp: String(t + 300) }),
    };
    for (const [what, payload] of Object.entries(bad)) {
      const token = signEs256(header(), JSON.parse(JSON.stringify(payload)) as Record<string, unknown>, serverKey);
      await expectRefused(token).catch((error: unknown) => {
        throw new Error(`${what}: ${(error as Error).message}`);
      });
    }
  });

  it('refuses headers other than alg, typ and kid, and unknown or missing kids', async () => {
    const variants: Record<string, Record<string, unknown>> = {
      'no kid': { alg: 'ES256', typ: 'JWT' },
      'unknown kid': header({ kid: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }),
      'no typ': { alg: 'ES256', kid },
      'crit header': header({ crit: ['exp'] }),
      'b64 false': header({ b64: false, crit: ['b64'] }),
    };
    for (const [what, forged] of Object.entries(variants)) {
      await expectRefused(signEs256(forged, claims(), serverKey)).catch((error: unknown) => {
        throw new Error(`${what}: ${(error as Error).message}`);
      });
    }
  });
});

describe('forged tokens', () => {
  it('refuses alg none', async () => {
    await expectRefused(unsigned({ alg: 'none', typ: 'JWT', kid }, claims()));
    await expectRefused(unsigned({ alg: 'none', typ: 'JWT' }, claims()));
    await expectRefused(unsigned({ alg: 'None', typ: 'JWT', kid }, claims()));
  });

  it('refuses HS256 signed with the registry public key as the HMAC secret', async () => {
    const pem = createPublicKey({ key: publicJwk as { kty: string }, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const der = createPublicKey({ key: publicJwk as { kty: string }, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    await expectRefused(signHs256({ alg: 'HS256', typ: 'JWT', kid }, claims(), pem));
    await expectRefused(signHs256({ alg: 'HS256', typ: 'JWT', kid }, claims(), der));
    await expectRefused(signHs256({ alg: 'HS256', typ: 'JWT', kid }, claims(), JSON.stringify(publicJwk)));
  });

  it('refuses a token signed by another key that embeds it as a jwk header under a trusted kid (CVE-2025-24976)', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const attackerJwk = createPublicKey(attacker).export({ format: 'jwk' });
    await expectRefused(signEs256(header({ jwk: { ...attackerJwk, kid } }), claims(), attacker));
    await expectRefused(signEs256(header({ jwk: attackerJwk }), claims(), attacker));
    // Even with the registry's own public key embedded (signature by the real key): key material in the header is refused.
    await expectRefused(signEs256(header({ jwk: publicJwk }), claims(), serverKey));
  });

  it('refuses key locations in the header (jku, x5u, x5c)', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const spkiDer = createPublicKey(attacker).export({ type: 'spki', format: 'der' }).toString('base64');
    await expectRefused(signEs256(header({ jku: 'http://127.0.0.1:1/jwks.json' }), claims(), attacker));
    await expectRefused(signEs256(header({ x5u: 'http://127.0.0.1:1/cert.pem' }), claims(), attacker));
    await expectRefused(signEs256(header({ x5c: [spkiDer] }), claims(), attacker));
    await expectRefused(signEs256(header({ jku: `${server.url}/auth/jwks` }), claims(), serverKey));
  });

  it('refuses a token signed by another key under the registry kid', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await expectRefused(signEs256(header(), claims(), attacker));
  });
});

describe('real tokens misused', () => {
  it('refuses a real token whose payload was changed (access to another repository, signature kept)', async () => {
    const real = await tokenFor(server.url, server.admin, [`repository:${OTHER}:pull`]);
    assert.equal((await tags(real, OTHER)).status, 200);
    const { payload } = decodeJwt(real);
    const tampered = withPayload(real, { ...payload, access: [{ type: 'repository', name: REPOSITORY, actions: ['pull', 'push'] }] });
    await expectRefused(tampered);
    await expectRefused(withPayload(real, { ...payload, sub: 'someone-else' }), 'invalid_token', OTHER);
    await expectRefused(withPayload(real, { ...payload, exp: payload.exp + 86_400 }), 'invalid_token', OTHER);
    // A truncated or extended signature is no signature.
    await expectRefused(`${real.slice(0, -4)}`, 'invalid_token', OTHER);
    await expectRefused(`${real}AAAA`, 'invalid_token', OTHER);
  });

  it('a token for repository A is refused on repository B with insufficient_scope', async () => {
    const forOther = await tokenFor(server.url, server.admin, [`repository:${OTHER}:pull,push,delete`]);
    await expectRefused(forOther, 'insufficient_scope', REPOSITORY);
    const manifest = await fetch(`${server.url}/v2/${REPOSITORY}/manifests/latest`, { headers: { Authorization: `Bearer ${forOther}` } });
    assert.equal(manifest.status, 401);
    assert.equal(parseChallenge(manifest.headers.get('WWW-Authenticate'))?.error, 'insufficient_scope');
    // A repository whose name merely starts like the granted one is another repository.
    const prefix = await fetch(`${server.url}/v2/${OTHER}x/tags/list`, { headers: { Authorization: `Bearer ${forOther}` } });
    assert.equal(prefix.status, 401);
    const nested = await fetch(`${server.url}/v2/${OTHER}/nested/tags/list`, { headers: { Authorization: `Bearer ${forOther}` } });
    assert.equal(nested.status, 401);
  });

  it('a pull token cannot push or delete: 401 insufficient_scope', async () => {
    const pull = await tokenFor(server.url, server.admin, [`repository:${REPOSITORY}:pull`]);
    const auth = { Authorization: `Bearer ${pull}` };
    const upload = await fetch(`${server.url}/v2/${REPOSITORY}/blobs/uploads/`, { method: 'POST', headers: auth });
    assert.equal(upload.status, 401, await upload.text());
    assert.equal(parseChallenge(upload.headers.get('WWW-Authenticate'))?.error, 'insufficient_scope');
    assert.equal(parseChallenge(upload.headers.get('WWW-Authenticate'))?.scope, `repository:${REPOSITORY}:pull,push`);
    const put = await fetch(`${server.url}/v2/${REPOSITORY}/manifests/evil`, {
      method: 'PUT',
      headers: { ...auth, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      body: '{}',
    });
    assert.equal(put.status, 401, await put.text());
    assert.equal(parseChallenge(put.headers.get('WWW-Authenticate'))?.error, 'insufficient_scope');
    const remove = await fetch(`${server.url}/v2/${REPOSITORY}/manifests/latest`, { method: 'DELETE', headers: auth });
    assert.equal(remove.status, 401, await remove.text());
    assert.equal(parseChallenge(remove.headers.get('WWW-Authenticate'))?.scope, `repository:${REPOSITORY}:delete`);
    // Nothing changed.
    assert.equal((await tags(pull)).status, 200);
    // And a repository token is not an admin token.
    const admin = await fetch(`${server.url}/admin/v1/rules`, { headers: auth });
    assert.equal(admin.status, 403, await admin.text());
  });
});
