// Bearer tokens at unit level: scopes, signing keys (storage, rotation, keyFile) and the token
// service, including real forgeries of the classic JWT attacks.
import assert from 'node:assert/strict';
import { responseOf } from '../../src/http/errors.js';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../src/config/config.js';
import {
  formatScope,
  formatScopes,
  grants,
  intersectActions,
  InvalidScopeError,
  mergeAccess,
  parseScope,
  parseScopes,
  type ResourceAccess,
} from '../../src/auth/tokens/access.js';
import { jwksOf, loadSigningKeys, rotateSigningKey, SigningKeyError, type SigningKeys } from '../../src/auth/tokens/keys.js';
import { InvalidTokenError, TokenService, type InvalidTokenReason } from '../../src/auth/tokens/token-service.js';

const ISSUER = 'portcullis-test';
const SERVICE = 'registry.test';
const TTL = 300;
const temporaryDirectories: string[] = [];

async function temporaryDirectory(): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'portcullis-tokens-'));
  temporaryDirectories.push(directory);
  return directory;
}

after(async () => {
  await Promise.all(temporaryDirectories.map((directory) => rm(directory, { recursive: true, force: true })));
});

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A compact JWS signed with any EC P-256 key, exactly as given: the attacker's tool. */
function signEs256(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    sub: 'alice',
    aud: SERVICE,
    iat: now,
    nbf: now,
    exp: now + TTL,
    jti: 'test-jti',
    access: [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }],
    ...overrides,
  };
}

/** Our own private key, read back from the keys directory, to forge tokens that only fail on claims. */
async function ourPrivateKey(dataDir: string, keys: SigningKeys): Promise<KeyObject> {
  return createPrivateKey(await readFile(join(dataDir, 'keys', `${keys.current.kid}.pem`), 'utf8'));
}

async function rejects(service: TokenService, token: string, reason: InvalidTokenReason, now?: Date): Promise<void> {
  await assert.rejects(
    service.verify(token, now ? { now } : {}),
    (error: unknown) => {
      assert.ok(error instanceof InvalidTokenError, `expected InvalidTokenError, got ${String(error)}`);
      assert.equal(error.code, 'UNAUTHORIZED');
      assert.equal(responseOf(error)?.status, 401);
      assert.equal(error.reason, reason, error.message);
      return true;
    },
  );
}

describe('scopes', () => {
  const valid: [string, ResourceAccess][] = [
    ['repository:team-a/app:pull', { type: 'repository', name: 'team-a/app', actions: ['pull'] }],
    ['repository:team-a/app:push,pull', { type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }],
    ['repository:team-a/app:pull,push,delete', { type: 'repository', name: 'team-a/app', actions: ['pull', 'push', 'delete'] }],
    ['repository:team-a/app:pull,pull', { type: 'repository', name: 'team-a/app', actions: ['pull'] }],
    ['repository:team-a/app:*', { type: 'repository', name: 'team-a/app', actions: ['*'] }],
    ['repository:team-a/app:pull,*', { type: 'repository', name: 'team-a/app', actions: ['*'] }],
    ['repository:app:pull', { type: 'repository', name: 'app', actions: ['pull'] }],
    ['repository(plugin):team-a/app:pull', { type: 'repository', name: 'team-a/app', actions: ['pull'] }],
    ['repository:a.b_c__d--e/f:pull', { type: 'repository', name: 'a.b_c__d--e/f', actions: ['pull'] }],
    // A host-looking first component is just part of the repository name here.
    ['repository:example.com/app:pull', { type: 'repository', name: 'example.com/app', actions: ['pull'] }],
    ['registry:catalog:*', { type: 'registry', name: 'catalog', actions: ['*'] }],
    ['registry:admin:*', { type: 'registry', name: 'admin', actions: ['*'] }],
    // Grammatical but unknown actions are not granted, not refused.
    ['repository:team-a/app:pull,metadata', { type: 'repository', name: 'team-a/app', actions: ['pull'] }],
    ['repository:team-a/app:admin', { type: 'repository', name: 'team-a/app', actions: [] }],
  ];
  for (const [text, expected] of valid) {
    it(`parses ${text}`, () => assert.deepEqual(parseScope(text), expected));
  }

  const invalid = [
    '',
    'repository',
    'repository:team-a/app',
    'repository:team-a/app:',
    'repository::pull',
    ':team-a/app:pull',
    'repository:../x:pull',
    'repository:team-a/../x:pull',
    'repository:/abs:pull',
    'repository:team-a/app/:pull',
    'repository:Team-A/app:pull',
    'repository:a:pull:extra',
    'repository:localhost:5000/app:pull',
    'repository:team-a/app:pull push',
    'repository:team-a/app:pull,,push',
    'repository:team-a/app:PULL',
    'repository:team-a/app:pu*ll',
    'repository:team a/app:pull',
    'repository:team-a/app%2f..:pull',
    'Repository:team-a/app:pull',
    'repository():team-a/app:pull',
    'repository(Plugin):team-a/app:pull',
    'namespace:team-a:pull',
    'registry:everything:*',
    `repository:${'a'.repeat(256)}:pull`,
    `repository:${'a/'.repeat(600)}a:pull`,
  ];
  for (const text of invalid) {
    it(`refuses ${JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text)}`, () => {
      assert.throws(
        () => parseScope(text),
        (error: unknown) => {
          assert.ok(error instanceof InvalidScopeError);
          assert.equal(responseOf(error)?.status, 400);
          assert.equal(responseOf(error)?.code, 'UNSUPPORTED');
          assert.equal(error.oauthError, 'invalid_scope');
          assert.match(error.message, /^invalid scope: /);
          return true;
        },
      );
    });
  }

  it('parses repeated and space-separated scopes, merging the same resource', () => {
    assert.deepEqual(
      parseScopes(['repository:team-a/app:pull', 'repository:team-a/app:push repository:team-b/lib:pull', '', 'registry:catalog:*']),
      [
        { type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] },
        { type: 'repository', name: 'team-b/lib', actions: ['pull'] },
        { type: 'registry', name: 'catalog', actions: ['*'] },
      ],
    );
    assert.deepEqual(parseScopes([]), []);
    assert.deepEqual(parseScopes(['']), []);
    assert.throws(() => parseScopes(['repository:team-a/app:pull', 'repository:../x:pull']), InvalidScopeError);
  });

  it('merges duplicates without mutating its input', () => {
    const input: ResourceAccess[] = [
      { type: 'repository', name: 'a', actions: ['push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
      { type: 'repository', name: 'a', actions: ['pull', 'push'] },
      { type: 'repository', name: 'a', actions: ['*'] },
    ];
    assert.deepEqual(mergeAccess(input), [
      { type: 'repository', name: 'a', actions: ['*'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.deepEqual(input[0], { type: 'repository', name: 'a', actions: ['push'] });
  });

  it('formats back to text that parses to the same access', () => {
    for (const [text] of valid) {
      const access = parseScope(text);
      if (access.actions.length > 0) assert.deepEqual(parseScope(formatScope(access)), access);
    }
    assert.equal(formatScope({ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }), 'repository:team-a/app:pull,push');
    assert.equal(
      formatScopes([
        { type: 'repository', name: 'a', actions: ['pull'] },
        { type: 'repository', name: 'b', actions: [] },
        { type: 'registry', name: 'catalog', actions: ['*'] },
      ]),
      'repository:a:pull registry:catalog:*',
    );
  });

  it('grants exactly what the access list says, * meaning every action', () => {
    const access: ResourceAccess[] = [
      { type: 'repository', name: 'team-a/app', actions: ['pull'] },
      { type: 'repository', name: 'team-b/app', actions: ['*'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ];
    assert.ok(grants(access, 'repository', 'team-a/app', 'pull'));
    assert.ok(!grants(access, 'repository', 'team-a/app', 'push'));
    assert.ok(!grants(access, 'repository', 'team-a/app2', 'pull'));
    assert.ok(!grants(access, 'repository', 'team-a', 'pull'));
    assert.ok(grants(access, 'repository', 'team-b/app', 'delete'));
    assert.ok(grants(access, 'registry', 'catalog', '*'));
    assert.ok(!grants(access, 'registry', 'team-a/app', 'pull'));
    assert.ok(!grants(access, 'repository', 'catalog', '*'));
    assert.ok(!grants([], 'repository', 'team-a/app', 'pull'));
  });

  it('intersects requested with allowed actions', () => {
    assert.deepEqual(intersectActions(['pull', 'push'], ['pull']), ['pull']);
    assert.deepEqual(intersectActions(['push'], ['pull']), []);
    assert.deepEqual(intersectActions(['*'], ['pull', 'push', 'admin']), ['pull', 'push']);
    assert.deepEqual(intersectActions(['pull', 'delete'], ['*']), ['pull', 'delete']);
    assert.deepEqual(intersectActions(['*'], ['*']), ['*']);
  });
});

describe('signing keys', () => {
  it('generates a key on first start and loads the same one afterwards', async () => {
    const dataDir = await temporaryDirectory();
    const first = await loadSigningKeys({ dataDir });
    const second = await loadSigningKeys({ dataDir });
    assert.equal(second.current.kid, first.current.kid);
    assert.match(first.current.kid, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(first.previous, []);
    const directory = join(dataDir, 'keys');
    assert.deepEqual((await readdir(directory)).sort(), [`${first.current.kid}.pem`, 'manifest.json'].sort());
    assert.equal((await stat(directory)).mode & 0o777, 0o700);
    assert.equal((await stat(join(directory, `${first.current.kid}.pem`))).mode & 0o777, 0o600);
    assert.equal((await stat(join(directory, 'manifest.json'))).mode & 0o777, 0o600);
    assert.match(await readFile(join(directory, `${first.current.kid}.pem`), 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('agrees on one key when several processes start at once', async () => {
    const dataDir = await temporaryDirectory();
    const all = await Promise.all(Array.from({ length: 6 }, () => loadSigningKeys({ dataDir })));
    assert.equal(new Set(all.map((keys) => keys.current.kid)).size, 1);
    assert.deepEqual((await readdir(join(dataDir, 'keys'))).sort(), [`${all[0]?.current.kid}.pem`, 'manifest.json'].sort());
  });

  it('publishes the public parts only, with kid, alg and use', async () => {
    const keys = await loadSigningKeys({ dataDir: await temporaryDirectory() });
    const jwks = jwksOf(keys);
    assert.equal(jwks.keys.length, 1);
    const [jwk] = jwks.keys;
    assert.deepEqual(Object.keys(jwk ?? {}).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.equal(jwk?.kid, keys.current.kid);
    assert.equal(jwk?.alg, 'ES256');
    assert.equal(jwk?.use, 'sig');
  });

  it('rotates: the old key stays trusted once, then is dropped and deleted', async () => {
    const dataDir = await temporaryDirectory();
    const k1 = await loadSigningKeys({ dataDir });
    const k2 = await rotateSigningKey(dataDir);
    assert.notEqual(k2.current.kid, k1.current.kid);
    assert.deepEqual(k2.previous.map((key) => key.kid), [k1.current.kid]);
    assert.deepEqual(jwksOf(k2).keys.map((key) => key.kid), [k2.current.kid, k1.current.kid]);
    const reloaded = await loadSigningKeys({ dataDir });
    assert.equal(reloaded.current.kid, k2.current.kid);
    assert.deepEqual(reloaded.previous.map((key) => key.kid), [k1.current.kid]);

    const k3 = await rotateSigningKey(dataDir);
    assert.deepEqual(k3.previous.map((key) => key.kid), [k2.current.kid]);
    assert.deepEqual(
      (await readdir(join(dataDir, 'keys'))).sort(),
      [`${k3.current.kid}.pem`, `${k2.current.kid}.pem`, 'manifest.json'].sort(),
    );
  });

  it('rotating an empty data directory just creates the first key', async () => {
    const keys = await rotateSigningKey(await temporaryDirectory());
    assert.deepEqual(keys.previous, []);
  });

  it('refuses a corrupt or tampered keys directory', async () => {
    const dataDir = await temporaryDirectory();
    const keys = await loadSigningKeys({ dataDir });
    const manifest = join(dataDir, 'keys', 'manifest.json');
    await writeFile(manifest, '{"version":1,"current":"../../etc/passwd","previous":[]}');
    await assert.rejects(loadSigningKeys({ dataDir }), SigningKeyError);
    await writeFile(manifest, 'not json');
    await assert.rejects(loadSigningKeys({ dataDir }), SigningKeyError);
    // A key file swapped for another key is noticed through its kid.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    await writeFile(manifest, JSON.stringify({ version: 1, current: `${keys.current.kid}.pem`, previous: [] }));
    await writeFile(join(dataDir, 'keys', `${keys.current.kid}.pem`), other);
    await assert.rejects(loadSigningKeys({ dataDir }), /does not match its name/);
    await assert.rejects(rotateSigningKey(dataDir), /does not match its name/);
  });

  describe('auth.token.keyFile', () => {
    let directory: string;
    before(async () => {
      directory = await temporaryDirectory();
    });

    async function keyFileError(content: string | undefined, pattern: RegExp): Promise<void> {
      const keyFile = join(directory, `key-${Math.random().toString(36).slice(2)}.pem`);
      if (content !== undefined) await writeFile(keyFile, content);
      await assert.rejects(loadSigningKeys({ keyFile, dataDir: directory }), (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, /auth\.token\.keyFile/);
        assert.ok(error.message.includes(keyFile), error.message);
        assert.match(error.message, pattern);
        return true;
      });
    }

    it('names the setting when the file is missing', () => keyFileError(undefined, /cannot read/));
    it('names the setting when the file is not a key', () => keyFileError('hello', /PEM private key/));
    it('refuses an RSA key', () =>
      keyFileError(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /P-256/));
    it('refuses a P-384 key', () =>
      keyFileError(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /P-256/));
    it('refuses a public key', () =>
      keyFileError(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string, /private key/));
    it('refuses an encrypted key', () =>
      keyFileError(
        generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
          type: 'pkcs8',
          format: 'pem',
          cipher: 'aes-256-cbc',
          passphrase: 'secret',
        }) as string,
        /unencrypted/,
      ));

    it('uses a P-256 PKCS#8 key and writes nothing to the data directory', async () => {
      const dataDir = await temporaryDirectory();
      const keyFile = join(directory, 'good.pem');
      await writeFile(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const keys = await loadSigningKeys({ keyFile, dataDir });
      assert.equal(keys.source, keyFile);
      assert.deepEqual(keys.previous, []);
      assert.equal((await loadSigningKeys({ keyFile, dataDir })).current.kid, keys.current.kid);
      assert.deepEqual(await readdir(dataDir), []);
    });
  });
});

describe('token service', () => {
  let dataDir: string;
  let keys: SigningKeys;
  let service: TokenService;
  let ourKey: KeyObject;
  const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const header = () => ({ alg: 'ES256', typ: 'JWT', kid: keys.current.kid });

  before(async () => {
    dataDir = await temporaryDirectory();
    keys = await loadSigningKeys({ dataDir });
    service = new TokenService(keys, { issuer: ISSUER, service: SERVICE, ttlSeconds: TTL });
    ourKey = await ourPrivateKey(dataDir, keys);
  });

  it('issues a token that verifies, with the access claim', async () => {
    const access: ResourceAccess[] = [
      { type: 'repository', name: 'team-a/app', actions: ['push', 'pull'] },
      { type: 'repository', name: 'team-a/app', actions: ['delete'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
      { type: 'repository', name: 'team-b/none', actions: [] },
    ];
    const now = new Date();
    const issued = await service.issue({ subject: 'alice', access, now });
    assert.equal(issued.expiresIn, TTL);
    assert.match(issued.issuedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(Date.parse(issued.issuedAt), Math.floor(now.getTime() / 1000) * 1000);

    const [headerPart, payloadPart] = issued.token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(headerPart ?? '', 'base64url').toString()), { alg: 'ES256', typ: 'JWT', kid: keys.current.kid });
    const payload = JSON.parse(Buffer.from(payloadPart ?? '', 'base64url').toString()) as Record<string, unknown>;
    assert.equal(payload.iss, ISSUER);
    assert.equal(payload.aud, SERVICE);
    assert.equal(payload.sub, 'alice');
    assert.equal(payload.jti, issued.jti);
    assert.equal(payload.nbf, payload.iat);
    assert.equal(payload.exp, (payload.iat as number) + TTL);
    const expectedAccess = [
      { type: 'repository', name: 'team-a/app', actions: ['pull', 'push', 'delete'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
      { type: 'repository', name: 'team-b/none', actions: [] },
    ];
    assert.deepEqual(payload.access, expectedAccess);

    const verified = await service.verify(issued.token);
    assert.equal(verified.subject, 'alice');
    assert.deepEqual(verified.access, expectedAccess);
    assert.equal(verified.expiresAt.getTime(), (payload.exp as number) * 1000);
    assert.equal(verified.jti, issued.jti);
    assert.equal(verified.kid, keys.current.kid);
    assert.ok(grants(verified.access, 'repository', 'team-a/app', 'delete'));
  });

  it('gives every token a fresh jti and accepts the anonymous subject', async () => {
    const a = await service.issue({ subject: '', access: [] });
    const b = await service.issue({ subject: '', access: [] });
    assert.notEqual(a.jti, b.jti);
    assert.equal((await service.verify(a.token)).subject, '');
    assert.deepEqual((await service.verify(a.token)).access, []);
  });

  it('refuses to issue access that is not well formed', async () => {
    await assert.rejects(service.issue({ subject: 'a', access: [{ type: 'repository', name: '../x', actions: ['pull'] }] }), TypeError);
    await assert.rejects(service.issue({ subject: 'a', access: [{ type: 'repository', name: 'x', actions: ['admin'] }] }), TypeError);
  });

  it('serves repeated verifications from its cache without sharing mutable state', async () => {
    const { token } = await service.issue({ subject: 'bob', access: [{ type: 'repository', name: 'x', actions: ['pull'] }] });
    const first = await service.verify(token);
    first.expiresAt.setTime(0);
    const second = await service.verify(token);
    assert.notEqual(second.expiresAt.getTime(), 0);
    assert.throws(() => (second.access as ResourceAccess[]).push({ type: 'repository', name: 'y', actions: ['push'] }));
    assert.throws(() => (second.access[0]?.actions as string[]).push('push'));
    // A cached token still expires.
    await rejects(service, token, 'expired', new Date(Date.now() + (TTL + 60) * 1000));
  });

  describe('rejects', () => {
    it('garbage', async () => {
      const garbage = ['', 'abc', 'a.b', 'a.b.c.d.e', '...', 'x'.repeat(20000), `${b64(header())}.${b64(claims())}.%%%`];
      for (const token of garbage) await rejects(service, token, 'malformed');
      // Well-formed but without a (valid) signature.
      await rejects(service, `${b64(header())}.${b64(claims())}.`, 'signature');
      await rejects(service, `${b64(header())}.${b64(claims())}.AAAA`, 'signature');
      // The signature is checked before the payload is even decoded.
      await rejects(service, `${b64(header())}.%%%.AAAA`, 'signature');
    });

    it('alg none', async () => {
      const token = `${b64({ alg: 'none', typ: 'JWT', kid: keys.current.kid })}.${b64(claims())}.`;
      await rejects(service, token, 'algorithm');
      await rejects(service, `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`, 'algorithm');
    });

    it('HS256 signed with our public key as the HMAC secret', async () => {
      const [jwk] = jwksOf(keys).keys;
      const pem = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk?.x, y: jwk?.y }, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      for (const secret of [pem, JSON.stringify(jwk)]) {
        const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: keys.current.kid })}.${b64(claims())}`;
        const token = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
        await rejects(service, token, 'algorithm');
      }
    });

    it('a token carrying its own jwk, signed by the attacker (CVE-2025-24976)', async () => {
      const attackerJwk = { ...createPublicKey(attacker).export({ format: 'jwk' }), kid: keys.current.kid };
      await rejects(service, signEs256({ ...header(), jwk: attackerJwk }, claims(), attacker), 'header');
      // Even our own public key embedded in the header is refused: the header never supplies keys.
      await rejects(service, signEs256({ ...header(), jwk: jwksOf(keys).keys[0] }, claims(), ourKey), 'header');
    });

    it('jku, x5u and x5c headers', async () => {
      await rejects(service, signEs256({ ...header(), jku: 'https://evil.example/jwks.json' }, claims(), attacker), 'header');
      await rejects(service, signEs256({ ...header(), x5u: 'https://evil.example/cert.pem' }, claims(), attacker), 'header');
      await rejects(service, signEs256({ ...header(), x5c: ['MIIBfake'] }, claims(), attacker), 'header');
      // Also with a valid signature by our own key: the header alone disqualifies.
      await rejects(service, signEs256({ ...header(), x5c: ['MIIBfake'] }, claims(), ourKey), 'header');
    });

    it('unexpected header parameters or typ', async () => {
      await rejects(service, signEs256({ ...header(), crit: ['exp'] }, claims(), ourKey), 'header');
      await rejects(service, signEs256({ alg: 'ES256', kid: keys.current.kid }, claims(), ourKey), 'header');
      await rejects(service, signEs256({ ...header(), typ: 'at+jwt' }, claims(), ourKey), 'header');
    });

    it('a missing or unknown kid', async () => {
      await rejects(service, signEs256({ alg: 'ES256', typ: 'JWT' }, claims(), ourKey), 'unknown_key');
      await rejects(service, signEs256({ ...header(), kid: 'someone-else' }, claims(), attacker), 'unknown_key');
      await rejects(service, signEs256({ ...header(), kid: 42 }, claims(), ourKey), 'unknown_key');
    });

    it('a token signed by an unknown key under our kid', async () => {
      await rejects(service, signEs256(header(), claims(), attacker), 'signature');
    });

    it('a tampered payload', async () => {
      const { token } = await service.issue({ subject: 'alice', access: [{ type: 'repository', name: 'team-a/app', actions: ['pull'] }] });
      const [h, p, s] = token.split('.');
      const payload = JSON.parse(Buffer.from(p ?? '', 'base64url').toString()) as Record<string, unknown>;
      payload.access = [{ type: 'repository', name: 'team-a/app', actions: ['*'] }];
      await rejects(service, `${h}.${b64(payload)}.${s}`, 'signature');
      payload.access = [{ type: 'repository', name: 'team-a/app', actions: ['pull'] }];
      payload.sub = 'admin';
      await rejects(service, `${h}.${b64(payload)}.${s}`, 'signature');
    });

    it('a wrong issuer', async () => {
      await rejects(service, signEs256(header(), claims({ iss: 'someone-else' }), ourKey), 'issuer');
      await rejects(service, signEs256(header(), claims({ iss: undefined }), ourKey), 'claims');
    });

    it('a wrong audience', async () => {
      await rejects(service, signEs256(header(), claims({ aud: 'other-registry' }), ourKey), 'audience');
      await rejects(service, signEs256(header(), claims({ aud: ['other-registry'] }), ourKey), 'audience');
      await rejects(service, signEs256(header(), claims({ aud: [SERVICE, 'other-registry'] }), ourKey), 'audience');
    });

    it('an expired token, allowing 30 s of clock skew', async () => {
      const past = new Date(Date.now() - (TTL + 3600) * 1000);
      await rejects(service, (await service.issue({ subject: 'alice', access: [], now: past })).token, 'expired');
      const justExpired = new Date(Date.now() - (TTL + 10) * 1000);
      await service.verify((await service.issue({ subject: 'alice', access: [], now: justExpired })).token);
      const beyondSkew = new Date(Date.now() - (TTL + 31) * 1000);
      await rejects(service, (await service.issue({ subject: 'alice', access: [], now: beyondSkew })).token, 'expired');
    });

    it('a token not valid yet, allowing 30 s of clock skew', async () => {
      const future = new Date(Date.now() + 5 * 60 * 1000);
      await rejects(service, (await service.issue({ subject: 'alice', access: [], now: future })).token, 'not_yet_valid');
      await service.verify((await service.issue({ subject: 'alice', access: [], now: new Date(Date.now() + 20_000) })).token);
    });

    it('missing or mistyped claims', async () => {
      for (const claim of ['sub', 'jti', 'exp', 'nbf', 'iat', 'access']) {
        await rejects(service, signEs256(header(), claims({ [claim]: undefined }), ourKey), 'claims');
      }
      await rejects(service, signEs256(header(), claims({ sub: 42 }), ourKey), 'claims');
      await rejects(service, signEs256(header(), claims({ jti: {} }), ourKey), 'claims');
      await rejects(service, signEs256(header(), claims({ exp: 'tomorrow' }), ourKey), 'claims');
    });

    it('a malformed access claim', async () => {
      const bad: unknown[] = [
        'repository:team-a/app:pull',
        {},
        [null],
        [{ type: 'repository', name: '../x', actions: ['pull'] }],
        [{ type: 'repository', name: 'team-a/app', actions: 'pull' }],
        [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'sudo'] }],
        [{ type: 'namespace', name: 'team-a', actions: ['pull'] }],
        [{ type: 'registry', name: 'everything', actions: ['*'] }],
        [{ name: 'team-a/app', actions: ['pull'] }],
      ];
      for (const access of bad) {
        await rejects(service, signEs256(header(), claims({ access }), ourKey), 'claims');
      }
    });
  });

  describe('across key rotation', () => {
    it('accepts tokens of the previous key until a second rotation drops it', async () => {
      const rotatingDir = await temporaryDirectory();
      const k1 = await loadSigningKeys({ dataDir: rotatingDir });
      const tokens = new TokenService(k1, { issuer: ISSUER, service: SERVICE, ttlSeconds: TTL });
      const old = (await tokens.issue({ subject: 'alice', access: [{ type: 'repository', name: 'a', actions: ['pull'] }] })).token;
      assert.equal((await tokens.verify(old)).kid, k1.current.kid); // now cached too

      const k2 = await rotateSigningKey(rotatingDir);
      tokens.useKeys(k2);
      assert.equal((await tokens.verify(old)).kid, k1.current.kid);
      const fresh = (await tokens.issue({ subject: 'alice', access: [] })).token;
      assert.equal((await tokens.verify(fresh)).kid, k2.current.kid);
      assert.deepEqual(tokens.jwks().keys.map((key) => key.kid), [k2.current.kid, k1.current.kid]);

      // A restarted process with the rotated store accepts both as well.
      const restarted = new TokenService(await loadSigningKeys({ dataDir: rotatingDir }), { issuer: ISSUER, service: SERVICE, ttlSeconds: TTL });
      assert.equal((await restarted.verify(old)).subject, 'alice');
      assert.equal((await restarted.verify(fresh)).subject, 'alice');

      const k3 = await rotateSigningKey(rotatingDir);
      tokens.useKeys(k3);
      await rejects(tokens, old, 'unknown_key');
      assert.equal((await tokens.verify(fresh)).kid, k2.current.kid);
    });
  });
});
