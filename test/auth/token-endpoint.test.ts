// The token endpoint end to end: the challenges every protected route sends, GET /auth/token as
// Docker uses it (Basic or anonymous, repeated scopes), and POST /auth/token as OAuth2 clients
// use it (password and refresh_token grants, revocation through the admin API).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sha256 } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import {
  accessOf,
  adminToken,
  api,
  basic,
  decodeJwt,
  errorCode,
  expectStatus,
  getToken,
  postToken,
  requestFrom,
  requestToken,
  tokenFor,
  type TokenResponse,
} from './support.js';

let server: RunningRegistry;

before(async () => {
  server = await startPortcullis();
});
after(() => server.stop());

const NAME = 'challenge/app';
const DIGEST = sha256(Buffer.from('challenge'));
const UUID = '5a3e0f1c-3b7e-4d1a-9d8e-0c2b1f3a4e5d';
/** Source addresses for failed logins (see the throttle). */
const FAILURES_FROM = '127.0.0.2';
const MALFORMED_FROM = '127.0.0.3';
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;

/** Every distribution route, with the scope its challenge must name (undefined: none). */
const ROUTES: { method: string; path: string; scope: string | undefined }[] = [
  { method: 'GET', path: '/v2/', scope: undefined },
  { method: 'GET', path: '/v2/_catalog', scope: 'registry:catalog:*' },
  { method: 'GET', path: `/v2/${NAME}/tags/list`, scope: `repository:${NAME}:pull` },
  { method: 'GET', path: `/v2/${NAME}/referrers/${DIGEST}`, scope: `repository:${NAME}:pull` },
  { method: 'HEAD', path: `/v2/${NAME}/manifests/latest`, scope: `repository:${NAME}:pull` },
  { method: 'GET', path: `/v2/${NAME}/manifests/latest`, scope: `repository:${NAME}:pull` },
  { method: 'PUT', path: `/v2/${NAME}/manifests/latest`, scope: `repository:${NAME}:pull,push` },
  { method: 'DELETE', path: `/v2/${NAME}/manifests/${DIGEST}`, scope: `repository:${NAME}:delete` },
  { method: 'POST', path: `/v2/${NAME}/blobs/uploads/`, scope: `repository:${NAME}:pull,push` },
  { method: 'GET', path: `/v2/${NAME}/blobs/uploads/${UUID}`, scope: `repository:${NAME}:pull,push` },
  { method: 'PATCH', path: `/v2/${NAME}/blobs/uploads/${UUID}`, scope: `repository:${NAME}:pull,push` },
  { method: 'PUT', path: `/v2/${NAME}/blobs/uploads/${UUID}?digest=${DIGEST}`, scope: `repository:${NAME}:pull,push` },
  { method: 'DELETE', path: `/v2/${NAME}/blobs/uploads/${UUID}`, scope: `repository:${NAME}:pull,push` },
  { method: 'HEAD', path: `/v2/${NAME}/blobs/${DIGEST}`, scope: `repository:${NAME}:pull` },
  { method: 'GET', path: `/v2/${NAME}/blobs/${DIGEST}`, scope: `repository:${NAME}:pull` },
  { method: 'DELETE', path: `/v2/${NAME}/blobs/${DIGEST}`, scope: `repository:${NAME}:delete` },
];

function expectedChallenge(scope: string | undefined, error?: string): string {
  const parts = [`realm="${server.url}/auth/token"`, 'service="portcullis"'];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return `Bearer ${parts.join(',')}`;
}

async function call(method: string, path: string, token?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const body = ['PUT', 'PATCH', 'POST'].includes(method) ? 'x' : undefined;
  return fetch(`${server.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
}

async function expectChallenge(response: Response, scope: string | undefined, error?: string): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, 401, text);
  assert.equal(response.headers.get('WWW-Authenticate'), expectedChallenge(scope, error));
  if (response.headers.get('Content-Type')?.includes('json') && text.length > 0) {
    assert.equal((JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code, 'UNAUTHORIZED', text);
  }
}


/** An OAuth2 error response (RFC 6749 §5.2): 400 with the given `error` and a description. */
async function expectOAuthError(response: Response, error: string): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, 400, text);
  const body = JSON.parse(text) as { error?: string; error_description?: string };
  assert.equal(body.error, error, text);
  assert.equal(typeof body.error_description, 'string');
}

describe('challenges', () => {
  it('every protected route without a token answers 401 with the scope it needs', async () => {
    for (const route of ROUTES) {
      const response = await call(route.method, route.path);
      await expectChallenge(response, route.scope);
    }
  });

  it('a 401 without a token carries an UNAUTHORIZED error body', async () => {
    const response = await call('GET', `/v2/${NAME}/manifests/latest`);
    assert.equal(response.status, 401);
    const body = (await response.json()) as { errors: { code: string }[] };
    assert.equal(body.errors[0]?.code, 'UNAUTHORIZED');
  });

  it('a token lacking the action answers 401 insufficient_scope, naming the scope to ask for', async () => {
    const anonymous = await tokenFor(server.url, undefined, [`repository:${NAME}:pull`]);
    assert.deepEqual(accessOf(anonymous), []);
    for (const route of ROUTES.filter((entry) => entry.scope !== undefined)) {
      await expectChallenge(await call(route.method, route.path, anonymous), route.scope, 'insufficient_scope');
    }
    // Any valid token opens /v2/, even one granting nothing.
    assert.equal((await call('GET', '/v2/', anonymous)).status, 200);

    const pullOnly = await tokenFor(server.url, server.admin, [`repository:${NAME}:pull`]);
    await expectChallenge(await call('PUT', `/v2/${NAME}/manifests/latest`, pullOnly), `repository:${NAME}:pull,push`, 'insufficient_scope');
    await expectChallenge(await call('POST', `/v2/${NAME}/blobs/uploads/`, pullOnly), `repository:${NAME}:pull,push`, 'insufficient_scope');
    await expectChallenge(await call('DELETE', `/v2/${NAME}/manifests/${DIGEST}`, pullOnly), `repository:${NAME}:delete`, 'insufficient_scope');
    await expectChallenge(await call('GET', '/v2/_catalog', pullOnly), 'registry:catalog:*', 'insufficient_scope');
    // The same token is good for what it grants: the repository does not exist, which is a 404.
    const got = await call('GET', `/v2/${NAME}/manifests/latest`, pullOnly);
    assert.equal(got.status, 404, await got.text());
  });

  it('an invalid token answers 401 invalid_token', async () => {
    for (const bad of ['garbage', 'a.b.c', 'eyJhbGciOiJub25lIn0.e30.']) {
      await expectChallenge(await call('GET', `/v2/${NAME}/tags/list`, bad), `repository:${NAME}:pull`, 'invalid_token');
    }
    await expectChallenge(await call('GET', '/v2/', 'garbage'), undefined, 'invalid_token');
    await expectChallenge(await call('PUT', `/v2/${NAME}/manifests/latest`, 'garbage'), `repository:${NAME}:pull,push`, 'invalid_token');
  });

  it('Basic credentials on the registry itself are not accepted: the answer is the Bearer challenge', async () => {
    const response = await fetch(`${server.url}/v2/${NAME}/tags/list`, {
      headers: { Authorization: `Basic ${Buffer.from('admin:test-admin-password').toString('base64')}` },
    });
    await expectChallenge(response, `repository:${NAME}:pull`);
  });
});

describe('GET /auth/token', () => {
  function checkResponse(body: TokenResponse): void {
    assert.equal(typeof body.token, 'string');
    assert.equal(body.access_token, body.token);
    assert.equal(body.expires_in, 300);
    assert.match(body.issued_at, RFC3339);
    assert.ok(Math.abs(Date.parse(body.issued_at) - Date.now()) < 60_000, body.issued_at);
  }

  it('issues a token for one scope, with the claims the spec asks for', async () => {
    const response = await requestToken(server.url, { credentials: server.admin, scopes: ['repository:team-a/app:pull,push'] });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('Content-Type') ?? '', /^application\/json/);
    assert.equal(response.headers.get('Cache-Control'), 'no-store');
    const body = (await response.json()) as TokenResponse;
    checkResponse(body);
    assert.equal(body.refresh_token, undefined);

    const { header, payload } = decodeJwt(body.token);
    assert.equal(header.alg, 'ES256');
    const jwks = (await (await fetch(`${server.url}/auth/jwks`)).json()) as { keys: { kid: string; kty: string; d?: string }[] };
    assert.equal(header.kid, jwks.keys[0]?.kid);
    assert.ok(jwks.keys.every((key) => key.kty === 'EC' && key.d === undefined), 'the JWKS must not carry private keys');
    assert.equal(payload.iss, 'portcullis');
    assert.equal(payload.aud, 'portcullis');
    assert.equal(payload.sub, 'admin');
    assert.equal(payload.exp - payload.iat, 300);
    assert.ok(payload.nbf <= payload.iat + 1);
    assert.equal(new Date(payload.iat * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'), body.issued_at);
    assert.equal(typeof payload.jti, 'string');
    assert.deepEqual(payload.access, [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }]);
  });

  it('grants every scope of repeated scope parameters and of space-separated lists', async () => {
    const repeated = await getToken(server.url, server.admin, ['repository:a/one:pull', 'repository:b/two:pull,push', 'registry:catalog:*']);
    checkResponse(repeated);
    assert.deepEqual(accessOf(repeated.token), [
      { type: 'repository', name: 'a/one', actions: ['pull'] },
      { type: 'repository', name: 'b/two', actions: ['pull', 'push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);

    const spaced = await getToken(server.url, server.admin, ['repository:a/one:pull repository:b/two:push', 'repository:c:delete']);
    assert.deepEqual(accessOf(spaced.token), [
      { type: 'repository', name: 'a/one', actions: ['pull'] },
      { type: 'repository', name: 'b/two', actions: ['push'] },
      { type: 'repository', name: 'c', actions: ['delete'] },
    ]);

    // The same repository twice is one entry with the union; unknown action words are dropped.
    const merged = await getToken(server.url, server.admin, ['repository:a/one:pull', 'repository:a/one:push,frobnicate']);
    assert.deepEqual(accessOf(merged.token), [{ type: 'repository', name: 'a/one', actions: ['pull', 'push'] }]);
  });

  it('a login without scope gets a token with empty access, and a refresh token when offline_token=true', async () => {
    const login = await getToken(server.url, server.admin);
    checkResponse(login);
    assert.deepEqual(accessOf(login.token), []);
    assert.equal(decodeJwt(login.token).payload.sub, 'admin');
    assert.equal(login.refresh_token, undefined);

    const offline = await getToken(server.url, server.admin, [], { offline_token: 'true', client_id: 'docker' });
    checkResponse(offline);
    assert.deepEqual(accessOf(offline.token), []);
    assert.match(offline.refresh_token ?? '', /^[0-9a-f]{24}\.[A-Za-z0-9_-]{20,}$/);
  });

  it('refuses wrong, empty and unknown credentials with 401', async () => {
    // Failed logins come from their own loopback address, so the per-address throttle they feed
    // does not slow down the rest of this file (three failures here, one more below).
    for (const [username, password] of [['admin', 'wrong-password'], ['admin', ''], ['nobody', 'test-admin-password']] as const) {
      const response = await requestFrom(FAILURES_FROM, `${server.url}/auth/token?service=portcullis&scope=repository:a:pull`, {
        headers: { Authorization: basic({ username, password }) },
      });
      assert.equal(response.status, 401, `${username}:${password}: ${response.body}`);
      assert.equal(errorCode(response.body), 'UNAUTHORIZED');
    }
  });

  it('refuses Basic credentials without a colon with 401', async () => {
    const response = await requestToken(server.url, { headers: { Authorization: `Basic ${Buffer.from('admin').toString('base64')}` } });
    await expectStatus(response, 401, 'UNAUTHORIZED');
  });

  it('refuses a malformed Basic header with 401 instead of treating the caller as anonymous', async () => {
    // The client tried to authenticate; the spec: "If an attempt to authenticate to the token
    // server fails, the token server should return a 401 Unauthorized response".
    for (const header of ['Basic', 'Basic !!!not-base64!!!', 'Basic YWRtaW46dGVzdC1hZG1pbi1wYXNzd29yZA== trailing']) {
      const response = await requestFrom(MALFORMED_FROM, `${server.url}/auth/token?service=portcullis&scope=repository:a:pull`, { headers: { Authorization: header } });
      assert.equal(response.status, 401, `${header}: ${response.status} ${response.body}`);
      assert.equal(errorCode(response.body), 'UNAUTHORIZED');
    }
  });

  it('refuses malformed scopes and a foreign service with 400', async () => {
    for (const scope of ['repository:a', 'repository::pull', 'repository:UPPER/case:pull', 'repository:a:', 'nonsense:a:pull', 'registry:secrets:*', 'repository:a:PULL']) {
      const response = await requestToken(server.url, { credentials: server.admin, scopes: [scope] });
      assert.equal(response.status, 400, `${scope}: ${await response.text()}`);
    }
    const foreign = await requestToken(server.url, { credentials: server.admin, scopes: ['repository:a:pull'], params: { service: 'registry.docker.io' } });
    assert.equal(foreign.status, 400, await foreign.text());
    // Without a service parameter the registry's own service is assumed.
    const noService = await requestToken(server.url, { credentials: server.admin, scopes: ['repository:a:pull'], params: { service: '' } });
    assert.equal(noService.status, 200);
  });

  it('gives an anonymous caller a token with the subject "" and nothing granted (no rules yet)', async () => {
    const anonymous = await getToken(server.url, undefined, ['repository:a/one:pull', 'repository:b:pull,push,delete'], { offline_token: 'true', client_id: 'docker' });
    checkResponse(anonymous);
    const { payload } = decodeJwt(anonymous.token);
    assert.equal(payload.sub, '');
    assert.deepEqual(payload.access, []);
    assert.equal(anonymous.refresh_token, undefined, 'anonymous callers get no refresh token');
    // Everyone may ask for the catalog; what it lists is filtered per caller.
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, ['registry:catalog:*'])), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    // Nobody but an administrator gets the admin API.
    assert.deepEqual(accessOf(await tokenFor(server.url, undefined, ['registry:admin:*'])), []);
  });
});

describe('POST /auth/token', () => {
  interface RefreshTokenInfo {
    id: string;
    kind: string;
    name: string;
    lastUsedAt?: number;
    revokedAt?: number;
  }

  it('grant_type=password with access_type=offline returns an access token, the granted scope and a refresh token', async () => {
    const response = await postToken(server.url, {
      grant_type: 'password',
      username: server.admin.username,
      password: server.admin.password,
      service: 'portcullis',
      client_id: 'portcullis-tests',
      access_type: 'offline',
      scope: 'repository:team-a/app:pull,push registry:catalog:*',
    });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    const body = JSON.parse(text) as TokenResponse;
    assert.equal(body.access_token, body.token);
    assert.equal(body.expires_in, 300);
    assert.match(body.issued_at, RFC3339);
    assert.match(body.refresh_token ?? '', /^[0-9a-f]{24}\./);
    assert.deepEqual(accessOf(body.access_token), [
      { type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);

    // Without access_type=offline there is no refresh token.
    const online = await postToken(server.url, { grant_type: 'password', username: 'admin', password: server.admin.password, client_id: 'tests' });
    assert.equal(online.status, 200);
    assert.equal(((await online.json()) as TokenResponse).refresh_token, undefined);
  });

  it('names the granted scope in the response, as the OAuth2 spec of distribution requires', async () => {
    // distribution docs/spec/auth/oauth.md, token response fields: "scope (REQUIRED) The scope
    // granted inside the access token. This may be the same scope as requested or a subset."
    const response = await postToken(server.url, {
      grant_type: 'password',
      username: 'admin',
      password: server.admin.password,
      client_id: 'tests',
      scope: 'repository:team-a/app:pull,push',
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as TokenResponse;
    assert.equal(body.scope, 'repository:team-a/app:pull,push');
  });

  it('refreshes with the same refresh token again and again, and refuses it once revoked through the admin API', async () => {
    const login = await postToken(server.url, {
      grant_type: 'password',
      username: 'admin',
      password: server.admin.password,
      client_id: 'tests',
      access_type: 'offline',
    });
    assert.equal(login.status, 200);
    const refreshToken = ((await login.json()) as TokenResponse).refresh_token ?? '';
    const id = refreshToken.split('.')[0] ?? '';
    assert.match(id, /^[0-9a-f]{24}$/);

    // Not rotated: Docker keeps presenting the first refresh token it got.
    for (const repository of ['refresh/one', 'refresh/two', 'refresh/three']) {
      const refreshed = await postToken(server.url, {
        grant_type: 'refresh_token',
        refresh_token: refreshToken,
        service: 'portcullis',
        client_id: 'tests',
        scope: `repository:${repository}:pull,push`,
      });
      const text = await refreshed.text();
      assert.equal(refreshed.status, 200, text);
      const body = JSON.parse(text) as TokenResponse;
      const { payload } = decodeJwt(body.access_token);
      assert.equal(payload.sub, 'admin');
      assert.deepEqual(payload.access, [{ type: 'repository', name: repository, actions: ['pull', 'push'] }]);
      assert.equal(body.expires_in, 300);
      // The access token works on the registry.
      const tags = await fetch(`${server.url}/v2/${repository}/tags/list`, { headers: { Authorization: `Bearer ${body.access_token}` } });
      assert.notEqual(tags.status, 401, await tags.text());
    }

    const admin = await adminToken(server);
    const listed = await api<{ refreshTokens: RefreshTokenInfo[] }>(server.url, admin, 'GET', '/admin/v1/refresh-tokens?user=admin');
    assert.equal(listed.status, 200, listed.text);
    const entry = listed.body.refreshTokens.find((candidate) => candidate.id === id);
    assert.ok(entry, listed.text);
    assert.equal(entry.kind, 'user');
    assert.equal(entry.name, 'admin');
    assert.equal(typeof entry.lastUsedAt, 'number');
    assert.equal(entry.revokedAt, undefined);
    assert.ok(!listed.text.includes(refreshToken.split('.')[1] ?? '-'), 'the listing must not show the secret');
    assert.ok(!/secret|hash/i.test(listed.text), listed.text);
    assert.ok(listed.body.refreshTokens.every((candidate) => candidate.name === 'admin'));

    const revoked = await api(server.url, admin, 'DELETE', `/admin/v1/refresh-tokens/${id}`);
    assert.equal(revoked.status, 204, revoked.text);
    const refused = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'tests', scope: 'repository:refresh/one:pull' });
    await expectOAuthError(refused, 'invalid_grant');
    const again = await api(server.url, admin, 'DELETE', `/admin/v1/refresh-tokens/${id}`);
    assert.equal(again.status, 404, again.text);
    const after = await api<{ refreshTokens: RefreshTokenInfo[] }>(server.url, admin, 'GET', '/admin/v1/refresh-tokens?user=admin');
    assert.equal(typeof after.body.refreshTokens.find((candidate) => candidate.id === id)?.revokedAt, 'number');
  });

  it('refuses a garbled or tampered refresh token with OAuth2 invalid_grant', async () => {
    const offline = await getToken(server.url, server.admin, [], { offline_token: 'true', client_id: 'docker' });
    const [id, secret] = (offline.refresh_token ?? '').split('.');
    for (const bad of ['', 'nonsense', `${id}.${secret}x`, `${id}.${'A'.repeat(secret?.length ?? 43)}`, `${id}.${secret}.${secret}`, `${'0'.repeat(24)}.${secret}`]) {
      const response = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: bad, client_id: 'tests' });
      await expectOAuthError(response, 'invalid_grant');
    }
  });

  it('refuses a wrong password with OAuth2 invalid_grant', async () => {
    const response = await requestFrom(FAILURES_FROM, `${server.url}/auth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'admin', password: 'not-the-password', client_id: 'tests' }).toString(),
    });
    assert.equal(response.status, 400, response.body);
    assert.equal((JSON.parse(response.body) as { error: string }).error, 'invalid_grant');
  });

  it('refuses unknown grant types, other content types and a foreign service with 400', async () => {
    for (const grant of ['authorization_code', 'client_credentials', '']) {
      const response = await postToken(server.url, { grant_type: grant, username: 'admin', password: server.admin.password });
      assert.equal(response.status, 400, `${grant}: ${await response.text()}`);
    }
    const missing = await postToken(server.url, { username: 'admin', password: server.admin.password });
    assert.equal(missing.status, 400, await missing.text());

    const json = await fetch(`${server.url}/auth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ grant_type: 'password', username: 'admin', password: server.admin.password }),
    });
    assert.equal(json.status, 400, await json.text());
    const plain = await postToken(server.url, { grant_type: 'password', username: 'admin', password: server.admin.password }, 'text/plain');
    assert.equal(plain.status, 400, await plain.text());

    const foreign = await postToken(server.url, { grant_type: 'password', username: 'admin', password: server.admin.password, service: 'elsewhere' });
    assert.equal(foreign.status, 400, await foreign.text());
    const badScope = await postToken(server.url, { grant_type: 'password', username: 'admin', password: server.admin.password, scope: 'repository:a' });
    assert.equal(badScope.status, 400, await badScope.text());
  });
});

describe('login audit', () => {
  interface AuditEvent {
    type: string;
    actor?: string;
    clientIp?: string;
    details?: Record<string, unknown>;
  }

  async function events(type: string): Promise<AuditEvent[]> {
    const response = await api<{ events: AuditEvent[] }>(server.url, await adminToken(server), 'GET', `/admin/v1/audit?type=${type}&limit=1000`);
    assert.equal(response.status, 200, response.text);
    return response.body.events;
  }

  function tokenFrom(from: string, credentials: { username: string; password: string }): Promise<{ status: number }> {
    return requestFrom(from, `${server.url}/auth/token?service=portcullis&scope=repository:audit/app:pull`, { headers: { Authorization: basic(credentials) } });
  }

  it('a client fetching a token per pull is one login.success per address in ten minutes, not one per token', async () => {
    for (let i = 0; i < 4; i++) assert.equal((await tokenFrom('127.0.9.1', server.admin)).status, 200);
    assert.equal((await tokenFrom('127.0.9.2', server.admin)).status, 200);
    const successes = (await events('login.success')).filter((event) => event.actor === 'admin');
    assert.deepEqual(
      successes.filter((event) => event.clientIp?.startsWith('127.0.9.')).map((event) => [event.clientIp, event.details?.provider]),
      [
        ['127.0.9.2', 'local'],
        ['127.0.9.1', 'local'],
      ],
    );
  });

  it('login.failure says why (for the audit only): unknown user, wrong password, empty password, throttled', async () => {
    const from = '127.0.9.3';
    const unknown = { username: 'nobody-at-all', password: 'some-password-1' };
    const wrong = { username: 'admin', password: 'not-the-admin-password' };
    for (const credentials of [unknown, wrong, { username: 'admin', password: '' }]) {
      const response = await tokenFrom(from, credentials);
      assert.equal(response.status, 401);
    }
    // Five free failures for admin from here; the sixth starts the wait, the one after is throttled.
    for (let i = 0; i < 4; i++) assert.equal((await tokenFrom(from, wrong)).status, 401);
    assert.equal((await tokenFrom(from, wrong)).status, 429);
    const failures = (await events('login.failure')).filter((event) => event.clientIp === from).reverse();
    assert.deepEqual(
      failures.map((event) => [event.actor, event.details?.reason]),
      [
        ['nobody-at-all', 'unknown_user'],
        ['admin', 'wrong_password'],
        ['admin', 'invalid_credentials'],
        ['admin', 'wrong_password'],
        ['admin', 'wrong_password'],
        ['admin', 'wrong_password'],
        ['admin', 'wrong_password'],
        ['admin', 'throttled'],
      ],
    );
  });
});
