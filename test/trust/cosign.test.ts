// Keyed cosign signatures, verified with real keys of every type cosign accepts: valid ones name
// their signer and key, and each way a signature can fail to vouch for this manifest in this
// repository is refused with its reason.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { CosignSignatureVerifier } from '../../src/trust/cosign.js';
import { namesRepository, parseImageReference } from '../../src/trust/image-reference.js';
import { parsePublicKeyPem, PublicKeyError } from '../../src/trust/keys.js';
import type { SignedSubject, TrustContext, TrustedSigner } from '../../src/trust/verifier.js';
import { cosignPayload, cosignSignature, makeKey, type KeyKind, type TestKey } from '../support/signing.js';

const DIGEST = `sha256:${'a1'.repeat(32)}`;
const OTHER_DIGEST = `sha256:${'b2'.repeat(32)}`;
const SUBJECT: SignedSubject = { repository: 'team/app', manifestDigest: DIGEST };
const REFERENCE = 'registry.example:5000/team/app';

const verifier = new CosignSignatureVerifier();

function trusting(...keys: Array<{ name: string; key: TestKey }>): TrustContext {
  return { signers: keys.map(({ name, key }): TrustedSigner => ({ name, kind: 'cosign', publicKeyPem: key.publicKeyPem })) };
}

/** A payload for `reference`/`digest`, signed with `key`: what `cosign sign --key` pushes. */
function signed(key: TestKey, options: { reference?: string; digest?: string; hash?: string } = {}) {
  const payload = cosignPayload({ reference: options.reference ?? REFERENCE, digest: options.digest ?? DIGEST });
  return { payload, signatureBase64: cosignSignature(key, payload, options.hash !== undefined ? { hash: options.hash } : {}) };
}

describe('cosign keyed signatures', () => {
  const KINDS: KeyKind[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-pkcs1', 'rsa-pss', 'ed25519'];
  for (const kind of KINDS) {
    it(`accepts a signature made with a trusted ${kind} key and names the key`, async () => {
      const key = makeKey(kind);
      const result = await verifier.verify(signed(key), SUBJECT, trusting({ name: 'release', key }));
      assert.equal(result.outcome, 'valid', result.reason);
      assert.equal(result.format, 'cosign');
      assert.equal(result.signer, 'release');
      assert.equal(result.identity, key.fingerprint);
      assert.match(result.reason, new RegExp(`release's key .*${key.fingerprint}.* for team/app@${DIGEST}`));
    });
  }

  it('accepts a P-384 signature hashed with SHA-256, as cosign before 2.x made them', async () => {
    const key = makeKey('ecdsa-p384');
    const result = await verifier.verify(signed(key, { hash: 'sha256' }), SUBJECT, trusting({ name: 'release', key }));
    assert.equal(result.outcome, 'valid', result.reason);
    assert.match(result.reason, /ECDSA P-384/);
  });

  it('finds the signer among several trusted keys, past one that cannot be read', async () => {
    const key = makeKey('ecdsa-p256');
    const trust: TrustContext = {
      signers: [
        { name: 'broken', kind: 'cosign', publicKeyPem: 'not a key' },
        { name: 'someone-else', kind: 'cosign', publicKeyPem: makeKey('ed25519').publicKeyPem },
        { name: 'release', kind: 'cosign', publicKeyPem: key.publicKeyPem },
      ],
    };
    const result = await verifier.verify(signed(key), SUBJECT, trust);
    assert.equal(result.outcome, 'valid', result.reason);
    assert.equal(result.signer, 'release');
  });

  for (const reference of ['team/app', 'team/app:v1.2.3', 'registry.example/team/app:latest', 'localhost/team/app', `registry.example:5000/team/app@${DIGEST}`]) {
    it(`accepts the docker-reference ${reference} for team/app`, async () => {
      const key = makeKey('ecdsa-p256');
      const result = await verifier.verify(signed(key, { reference }), SUBJECT, trusting({ name: 'release', key }));
      assert.equal(result.outcome, 'valid', result.reason);
    });
  }

  it('refuses a tampered payload', async () => {
    const key = makeKey('ecdsa-p256');
    const signature = signed(key);
    const tampered = Buffer.from(signature.payload.toString().replace(DIGEST, OTHER_DIGEST));
    const result = await verifier.verify({ payload: tampered, signatureBase64: signature.signatureBase64 }, { ...SUBJECT, manifestDigest: OTHER_DIGEST }, trusting({ name: 'release', key }));
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.signer, undefined);
    assert.equal(result.identity, undefined);
    assert.match(result.reason, /does not verify with the public key of any trusted signer \(release\)/);
  });

  it('refuses a signature by a key the policy does not trust', async () => {
    const trusted = makeKey('ecdsa-p256');
    const stranger = makeKey('ecdsa-p256');
    const result = await verifier.verify(signed(stranger), SUBJECT, trusting({ name: 'release', key: trusted }));
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.identity, undefined);
    assert.match(result.reason, /does not verify with the public key of any trusted signer \(release\)/);
  });

  it('refuses a valid signature for another manifest digest', async () => {
    const key = makeKey('ecdsa-p256');
    const result = await verifier.verify(signed(key, { digest: OTHER_DIGEST }), SUBJECT, trusting({ name: 'release', key }));
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.signer, undefined);
    assert.equal(result.identity, key.fingerprint, 'the key did sign it: the result says whose it is');
    assert.match(result.reason, new RegExp(`signed with release's key .*but it signs the manifest ${OTHER_DIGEST}, not ${DIGEST}`));
  });

  for (const reference of ['registry.example:5000/other/app', 'team/app-other', 'other/team/app', 'registry.example/other/team/app', 'team']) {
    it(`refuses a valid signature replayed from another repository (${reference})`, async () => {
      const key = makeKey('ecdsa-p256');
      const result = await verifier.verify(signed(key, { reference }), SUBJECT, trusting({ name: 'release', key }));
      assert.equal(result.outcome, 'invalid');
      assert.match(result.reason, new RegExp(`docker-reference "${reference}" names another repository than team/app`));
    });
  }

  it('refuses a docker-reference that pins another digest', async () => {
    const key = makeKey('ecdsa-p256');
    const result = await verifier.verify(signed(key, { reference: `team/app@${OTHER_DIGEST}` }), SUBJECT, trusting({ name: 'release', key }));
    assert.equal(result.outcome, 'invalid');
    assert.match(result.reason, /names another manifest than/);
  });

  it('refuses signed payloads that are not exactly a cosign simple-signing document', async () => {
    const key = makeKey('ecdsa-p256');
    const cases: Array<[string, unknown, RegExp]> = [
      ['another type', { critical: { identity: { 'docker-reference': REFERENCE }, image: { 'docker-manifest-digest': DIGEST }, type: 'atomic container signature' }, optional: null }, /critical\.type is "atomic container signature"/],
      ['an extra critical field', { critical: { identity: { 'docker-reference': REFERENCE }, image: { 'docker-manifest-digest': DIGEST }, type: 'cosign container image signature', extra: 1 } }, /"critical" is not exactly/],
      ['a digest that is a number', { critical: { identity: { 'docker-reference': REFERENCE }, image: { 'docker-manifest-digest': 5 }, type: 'cosign container image signature' } }, /critical\.image is not exactly/],
      ['an unknown top-level field', { critical: {}, surprise: true }, /not a simple-signing document/],
      ['an array', [1, 2], /not a simple-signing document/],
    ];
    for (const [what, document, reason] of cases) {
      const payload = Buffer.from(JSON.stringify(document));
      const result = await verifier.verify({ payload, signatureBase64: cosignSignature(key, payload) }, SUBJECT, trusting({ name: 'release', key }));
      assert.equal(result.outcome, 'invalid', what);
      assert.match(result.reason, reason, what);
    }
    const notJson = Buffer.from('{"critical": ');
    const result = await verifier.verify({ payload: notJson, signatureBase64: cosignSignature(key, notJson) }, SUBJECT, trusting({ name: 'release', key }));
    assert.match(result.reason, /signed with release's key .*but the payload is not strict JSON \(not valid JSON/);
  });

  it('refuses a signed payload that repeats a key, which parsers would read differently', async () => {
    const key = makeKey('ecdsa-p256');
    // JSON.parse keeps the last digest, other parsers the first: no single meaning, so no signature.
    const payload = Buffer.from(
      `{"critical":{"identity":{"docker-reference":"${REFERENCE}"},"image":{"docker-manifest-digest":"${OTHER_DIGEST}","docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null}`,
    );
    const result = await verifier.verify({ payload, signatureBase64: cosignSignature(key, payload) }, SUBJECT, trusting({ name: 'release', key }));
    assert.equal(result.outcome, 'invalid');
    assert.match(result.reason, /payload is not strict JSON \(the key "docker-manifest-digest" appears twice in one object\)/);
  });

  it('refuses a signature annotation that is not base64', async () => {
    const key = makeKey('ecdsa-p256');
    const { payload, signatureBase64 } = signed(key);
    for (const broken of ['', `${signatureBase64}!`, signatureBase64.slice(1)]) {
      const result = await verifier.verify({ payload, signatureBase64: broken }, SUBJECT, trusting({ name: 'release', key }));
      assert.equal(result.outcome, 'invalid');
      assert.match(result.reason, /(not base64|does not verify)/);
    }
  });

  it('refuses every signature when the policy names no public key', async () => {
    const key = makeKey('ecdsa-p256');
    const trust: TrustContext = { signers: [{ name: 'ci', kind: 'keyless', issuer: 'https://issuer.example', subject: 'https://ci.example/*' }] };
    const result = await verifier.verify(signed(key), SUBJECT, trust);
    assert.equal(result.outcome, 'invalid');
    assert.match(result.reason, /names no cosign public key/);
  });

  it('measures verifications per second', async (t) => {
    for (const kind of ['ecdsa-p256', 'ed25519', 'rsa-pkcs1'] as const) {
      const key = makeKey(kind);
      const signature = signed(key);
      const trust = trusting({ name: 'release', key });
      const rounds = 300;
      const started = performance.now();
      for (let i = 0; i < rounds; i += 1) {
        const result = await verifier.verify(signature, SUBJECT, trust);
        assert.equal(result.outcome, 'valid');
      }
      const perSecond = Math.round(rounds / ((performance.now() - started) / 1000));
      t.diagnostic(`cosign ${kind}: ${perSecond} verifications/s (${rounds} rounds)`);
    }
  });
});

describe('public keys in policies', () => {
  it('reads a PEM public key and fingerprints its SubjectPublicKeyInfo', () => {
    const key = makeKey('ecdsa-p384');
    const parsed = parsePublicKeyPem(key.publicKeyPem);
    assert.equal(parsed.fingerprint, key.fingerprint);
    assert.equal(parsed.algorithm, 'ECDSA P-384');
  });

  it('refuses private keys, weak RSA keys, unknown curves and garbage, saying why', () => {
    const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const secp256k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const privatePem = makeKey('ecdsa-p256').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const cases: Array<[string, RegExp]> = [
      [privatePem, /a PEM private key, not a public key/],
      [rsa1024, /RSA key of 1024 bits: at least 2048/],
      [secp256k1, /unsupported elliptic curve secp256k1/],
      ['hello', /not a PEM public key/],
      ['-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----', /cannot be read/],
    ];
    for (const [pem, reason] of cases) assert.throws(() => parsePublicKeyPem(pem), (error: unknown) => error instanceof PublicKeyError && reason.test(error.message));
  });
});

describe('image references in signatures', () => {
  it('parses host, port, path, tag and digest', () => {
    assert.deepEqual(parseImageReference(`registry.example:5000/team/app:v1@${DIGEST}`), { host: 'registry.example:5000', path: 'team/app', tag: 'v1', digest: DIGEST });
    assert.deepEqual(parseImageReference('team/app'), { path: 'team/app' });
    assert.deepEqual(parseImageReference('[::1]:5000/app'), { host: '[::1]:5000', path: 'app' });
    for (const bad of ['', 'Team/App', 'team//app', 'team/app:', 'team/app@sha256', 'a@b@c', 'bad_host:x/app']) assert.equal(parseImageReference(bad), undefined, bad);
  });

  it('names a repository on any host, and only that repository', () => {
    const names = (reference: string, repository: string) => namesRepository(parseImageReference(reference) ?? assert.fail(reference), repository);
    assert.equal(names('docker.io/team/app', 'team/app'), true);
    assert.equal(names('example.com/app', 'example.com/app'), true, 'a repository whose first component looks like a host');
    assert.equal(names('team/app', 'team/app/sub'), false);
    assert.equal(names('other/team/app', 'team/app'), false);
  });
});
