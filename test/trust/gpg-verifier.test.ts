// GPG simple signing: GpgVerifier judges signatures made by skopeo itself (and, for the cases no
// client would produce, OpenPGP messages crafted with openpgp.js from the same gpg key), and
// SignatureService keeps them with their results on SQLite and on PostgreSQL.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import * as openpgp from 'openpgp';
import { pino } from 'pino';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { KnexMetadataStore } from '../../src/metadata/knex-store.js';
import { KnexSignatureStore } from '../../src/metadata/knex-signature-store.js';
import { RegistryError } from '../../src/registry/errors.js';
import { satisfyingSignature } from '../../src/trust/enforcement.js';
import { GpgKeyError, GpgVerifier, NO_TRUSTED_SIGNER, readGpgPublicKey } from '../../src/trust/gpg.js';
import { ManifestSignatures } from '../../src/trust/intake.js';
import type { TrustPolicy } from '../../src/trust/policy.js';
import { policyDigest } from '../../src/trust/policy-digest.js';
import { Reverifier } from '../../src/trust/reverify.js';
import { SignatureService } from '../../src/trust/signatures.js';
import type { TrustContext } from '../../src/trust/verifier.js';
import { createGpgKey, exportSecretKey, standaloneSign, type GpgKey } from '../support/gpg.js';
import { createTestDatabase } from '../support/postgres.js';

const REPOSITORY = 'team/app';
/** Who sends the signatures, as the audit log records it. */
const PUSHER = { actor: 'alice', clientIp: '192.0.2.7' };
const HOST = '127.0.0.1:5000';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

function manifestBytes(): Buffer {
  const empty = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(Buffer.from('{}')), size: 2 };
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: empty, layers: [], annotations: { nonce: randomBytes(8).toString('hex') } }));
}

let dir: string;
let trusted: GpgKey;
let stranger: GpgKey;
let trustedSecret: openpgp.PrivateKey;
let strangerSecret: openpgp.PrivateKey;
const manifest = manifestBytes();
const digest = sha256(manifest);
const otherManifest = manifestBytes();
const otherDigest = sha256(otherManifest);
let trust: TrustContext;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-gpg-'));
  trusted = await createGpgKey(join(dir, 'trusted'), 'Release Signer <release@example.test>');
  stranger = await createGpgKey(join(dir, 'stranger'), 'Someone Else <else@example.test>');
  trustedSecret = await openpgp.readPrivateKey({ armoredKey: await exportSecretKey(trusted) });
  strangerSecret = await openpgp.readPrivateKey({ armoredKey: await exportSecretKey(stranger) });
  trust = { signers: [{ name: 'release', kind: 'gpg', armoredPublicKey: trusted.armoredPublicKey }] };
});

after(async () => {
  await trusted?.close();
  await stranger?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The document containers/image signs, with `change` applied to it. */
function document(change: (doc: { critical: Record<string, unknown>; optional: Record<string, unknown> }) => void = () => undefined): string {
  const doc = {
    critical: {
      identity: { 'docker-reference': `${HOST}/${REPOSITORY}:v1` },
      image: { 'docker-manifest-digest': digest },
      type: 'atomic container signature',
    },
    optional: { creator: 'test', timestamp: 1_700_000_000 },
  };
  change(doc);
  return JSON.stringify(doc);
}

/** An OpenPGP message signed by `keys` over `content` (uncompressed, unlike gpg's). */
async function signed(content: string | Buffer, keys: openpgp.PrivateKey[] = [trustedSecret]): Promise<Buffer> {
  const message = await openpgp.createMessage({ binary: new Uint8Array(Buffer.from(content)) });
  return Buffer.from(await openpgp.sign({ message, signingKeys: keys, format: 'binary' }));
}

const verifier = new GpgVerifier();
const verify = (message: Buffer, context: TrustContext = trust, repository = REPOSITORY) =>
  verifier.verify({ message }, { repository, manifestDigest: digest }, context);

describe('GpgVerifier', () => {
  it('accepts a signature skopeo made with a trusted key for this manifest in this repository', async () => {
    const signature = await standaloneSign(trusted, manifest, `${HOST}/${REPOSITORY}:v1`, dir);
    assert.deepEqual(await verify(signature), {
      format: 'gpg',
      outcome: 'valid',
      signer: 'release',
      identity: trusted.fingerprint,
      reason: `signed by release (key ${trusted.fingerprint})`,
    });
  });

  it('accepts the repository under any registry host, with or without a tag', async () => {
    for (const reference of [`registry.example.com/${REPOSITORY}`, `localhost:5000/${REPOSITORY}:v2`, `[::1]:5000/${REPOSITORY}:latest`]) {
      const result = await verify(await signed(document((doc) => (doc.critical.identity = { 'docker-reference': reference }))));
      assert.equal(result.outcome, 'valid', `${reference}: ${result.reason}`);
    }
  });

  it('with no trusted signer, judges every signature invalid and says why', async () => {
    const signature = await standaloneSign(trusted, manifest, `${HOST}/${REPOSITORY}:v1`, dir);
    assert.deepEqual(await verify(signature, { signers: [] }), { format: 'gpg', outcome: 'invalid', reason: NO_TRUSTED_SIGNER });
    const cosignOnly: TrustContext = { signers: [{ name: 'ci', kind: 'cosign', publicKeyPem: 'unused' }] };
    assert.equal((await verify(signature, cosignOnly)).reason, 'none of the trusted signers for this repository has a GPG key');
  });

  it('refuses a signature made with a key no trusted signer holds', async () => {
    const result = await verify(await standaloneSign(stranger, manifest, `${HOST}/${REPOSITORY}:v1`, dir));
    const keyId = stranger.fingerprint.slice(-16);
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.identity, keyId);
    assert.equal(result.reason, `signed with key ${keyId}, which no trusted signer of this repository holds`);
  });

  it('refuses a tampered signature: the signed bytes were changed after signing', async () => {
    const original = await signed(document());
    const at = original.indexOf(`${REPOSITORY}:v1`);
    assert.ok(at > 0);
    const tampered = Buffer.from(original);
    tampered[at + REPOSITORY.length + 2] = '2'.charCodeAt(0); // :v1 → :v2, same length
    assert.equal((await verify(original)).outcome, 'valid');
    const result = await verify(tampered);
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.identity, trusted.fingerprint);
    assert.match(result.reason, /^the signature does not verify with the key of release: /);

    // gpg compresses its messages: a changed byte there breaks the message itself.
    const fromSkopeo = await standaloneSign(trusted, manifest, `${HOST}/${REPOSITORY}:v1`, dir);
    const broken = Buffer.from(fromSkopeo);
    const middle = Math.floor(broken.length / 2);
    broken.writeUInt8(broken.readUInt8(middle) ^ 0x01, middle);
    assert.equal((await verify(broken)).outcome, 'invalid');
  });

  it('refuses a valid signature of another manifest', async () => {
    const result = await verify(await standaloneSign(trusted, otherManifest, `${HOST}/${REPOSITORY}:v1`, dir));
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.reason, `the signature is for manifest "${otherDigest}", not ${digest}`);
  });

  it('refuses a valid signature replayed from another repository', async () => {
    const result = await verify(await standaloneSign(trusted, manifest, `${HOST}/team/other:v1`, dir));
    assert.equal(result.outcome, 'invalid');
    assert.equal(result.reason, `the signature is for repository "team/other" (docker-reference "${HOST}/team/other:v1"), not ${REPOSITORY}`);
  });

  it('reads the signed document strictly, and only what the signature covers', async () => {
    const cases: [string, string | Buffer, RegExp][] = [
      // JSON.parse keeps the last of two equal keys, another parser the first: refused outright.
      [
        'a repeated key',
        `{"critical":{"identity":{"docker-reference":"${HOST}/${REPOSITORY}:v1"},"image":{"docker-manifest-digest":"${otherDigest}","docker-manifest-digest":"${digest}"},"type":"atomic container signature"},"optional":{}}`,
        /^the signed content is refused: the key "docker-manifest-digest" appears twice in one object$/,
      ],
      ['an unknown critical field', document((doc) => (doc.critical.extra = 1)), /^critical has an unknown field "extra"$/],
      ['another type', document((doc) => (doc.critical.type = 'cosign container image signature')), /^critical.type is not "atomic container signature"$/],
      ['no optional part', JSON.stringify({ critical: JSON.parse(document()).critical }), /^the signed document lacks optional$/],
      ['a digest that is not a string', document((doc) => (doc.critical.image = { 'docker-manifest-digest': 7 })), /^critical.image.docker-manifest-digest is not a string$/],
      ['text that is not JSON', 'not json at all', /^the signed content is refused: not valid JSON/],
      ['bytes that are not UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), /^the signed content is refused: not valid UTF-8$/],
      [
        'a reference naming another digest',
        document((doc) => (doc.critical.identity = { 'docker-reference': `${HOST}/${REPOSITORY}@${otherDigest}` })),
        /names another manifest$/,
      ],
      ['a reference that is no reference', document((doc) => (doc.critical.identity = { 'docker-reference': 'Not A Reference' })), /is not a valid image reference$/],
    ];
    for (const [label, content, reason] of cases) {
      const result = await verify(await signed(content));
      assert.equal(result.outcome, 'invalid', label);
      assert.match(result.reason, reason, label);
      assert.equal(result.identity, trusted.fingerprint, label);
    }
  });

  it('refuses a message carrying more than one signature, and bytes that are no OpenPGP message', async () => {
    const twice = await verify(await signed(document(), [trustedSecret, strangerSecret]));
    assert.equal(twice.outcome, 'invalid');
    assert.equal(twice.reason, 'the message carries 2 signatures; exactly one is accepted');
    const noise = await verify(randomBytes(300));
    assert.equal(noise.outcome, 'invalid');
    assert.match(noise.reason, /^not a signed OpenPGP message: /);
  });

  it('throws for a trusted key that cannot be read, and refuses private keys in a policy', async () => {
    const signature = await signed(document());
    await assert.rejects(verify(signature, { signers: [{ name: 'broken', kind: 'gpg', armoredPublicKey: 'not a key' }] }), GpgKeyError);
    await assert.rejects(readGpgPublicKey(await exportSecretKey(trusted)), /this is a private key/);
    assert.equal((await readGpgPublicKey(trusted.armoredPublicKey)).fingerprint, trusted.fingerprint);
  });
});

interface Backend {
  name: string;
  open(): Promise<{ db: Knex; close(): Promise<void> }>;
}

const BACKENDS: Backend[] = [
  {
    name: 'SQLite',
    async open() {
      const db = openDatabase({ driver: 'sqlite', path: join(dir, `store-${randomBytes(4).toString('hex')}.db`) });
      return { db, close: () => db.destroy() };
    },
  },
  {
    name: 'PostgreSQL',
    async open() {
      const database = await createTestDatabase();
      const db = openDatabase({ driver: 'postgres', url: database.url, poolMax: 4 });
      return {
        db,
        async close() {
          await db.destroy();
          await database.drop();
        },
      };
    },
  },
];

const silent = pino({ level: 'silent' });

for (const backend of BACKENDS) {
  describe(`SignatureService on ${backend.name}`, () => {
    let db: Knex;
    let close: () => Promise<void>;
    let metadata: KnexMetadataStore;
    let current: TrustContext;
    let service: SignatureService;

    before(async () => {
      ({ db, close } = await backend.open());
      await migrateToLatest(db);
      metadata = new KnexMetadataStore(db);
      current = trust;
      service = new SignatureService({ store: new KnexSignatureStore(db), log: silent, trust: async () => current, maxPerManifest: 3 });
    });
    after(() => close());

    /** A manifest of its own in REPOSITORY (or `repository`) for one test. */
    async function pushManifest(repository = REPOSITORY): Promise<{ bytes: Buffer; digest: string }> {
      const bytes = manifestBytes();
      const record = { digest: sha256(bytes), mediaType: OCI_MANIFEST, size: bytes.length, payload: bytes };
      assert.deepEqual(await metadata.putManifest(repository, record, []), { problems: [] });
      return { bytes, digest: record.digest };
    }

    /** The audit events about one repository, oldest first. */
    async function auditTrail(repository: string): Promise<{ type: string; actor: string | null; actor_kind: string; outcome: string; new_digest: string }[]> {
      return db('audit_events').where({ repository }).orderBy('seq').select('type', 'actor', 'actor_kind', 'outcome', 'new_digest');
    }

    const nameFor = (manifestDigest: string) => `${manifestDigest}@${randomBytes(16).toString('hex')}`;

    it('stores a signature with its result, serves it back, and takes the same bytes again without a second copy', async () => {
      current = trust;
      const image = await pushManifest();
      const content = await standaloneSign(trusted, image.bytes, `${HOST}/${REPOSITORY}:v1`, dir);
      const name = nameFor(image.digest);
      const first = await service.add(REPOSITORY, image.digest, { name, content }, PUSHER);
      assert.equal(first.added, true);
      assert.equal(first.verification?.outcome, 'valid');
      const again = await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content }, PUSHER);
      assert.equal(again.added, false);
      assert.deepEqual(again.verification, first.verification);
      assert.deepEqual(await service.list(REPOSITORY, image.digest), [{ schemaVersion: 2, name, type: 'atomic', content: content.toString('base64') }]);
      const [result, ...more] = await service.verifications(REPOSITORY, image.digest);
      assert.deepEqual(more, []);
      assert.deepEqual({ ...result, verifiedAt: 0 }, {
        format: 'gpg',
        signatureRef: name,
        outcome: 'valid',
        signer: 'release',
        identity: trusted.fingerprint,
        reason: `signed by release (key ${trusted.fingerprint})`,
        verifiedAt: 0,
        policyDigest: undefined, // judged against signers given directly, not a stored policy
      });
    });

    it('stores a tampered signature too, with an invalid result that says why', async () => {
      current = trust;
      const image = await pushManifest();
      const original = await signed(document((doc) => (doc.critical.image = { 'docker-manifest-digest': image.digest })));
      const tampered = Buffer.from(original);
      tampered[original.indexOf(`${REPOSITORY}:v1`) + REPOSITORY.length + 2] = '9'.charCodeAt(0);
      const name = nameFor(image.digest);
      const outcome = await service.add(REPOSITORY, image.digest, { name, content: tampered }, PUSHER);
      assert.equal(outcome.added, true);
      assert.equal(outcome.verification?.outcome, 'invalid');
      assert.deepEqual((await service.list(REPOSITORY, image.digest)).map((s) => Buffer.from(s.content, 'base64')), [tampered]);
      const [result] = await service.verifications(REPOSITORY, image.digest);
      assert.equal(result?.outcome, 'invalid');
      assert.match(result?.reason ?? '', /^the signature does not verify with the key of release: /);
    });

    it('refuses a signature of a manifest the repository does not hold, storing nothing', async () => {
      const content = await signed(document());
      await assert.rejects(service.add(REPOSITORY, otherDigest, { name: nameFor(otherDigest), content }, PUSHER), (error: unknown) => {
        assert.ok(error instanceof RegistryError);
        assert.equal(error.code, 'MANIFEST_UNKNOWN');
        return true;
      });
      assert.deepEqual(await service.list(REPOSITORY, otherDigest), []);
      assert.equal(await service.describe(REPOSITORY, otherDigest), undefined);
    });

    it('never replaces a signature under a taken name, and keeps to the limit per manifest', async () => {
      const image = await pushManifest();
      const name = nameFor(image.digest);
      await service.add(REPOSITORY, image.digest, { name, content: await signed('first') }, PUSHER);
      await assert.rejects(service.add(REPOSITORY, image.digest, { name, content: await signed('second') }, PUSHER), { code: 'DENIED', message: /never replaced/ });
      await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('third') }, PUSHER);
      await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('fourth') }, PUSHER);
      await assert.rejects(service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('fifth') }, PUSHER), {
        code: 'DENIED',
        message: 'the manifest already has 3 signatures, the most it may carry',
      });
      assert.equal((await service.list(REPOSITORY, image.digest)).length, 3);
      assert.equal((await service.verifications(REPOSITORY, image.digest)).length, 3);
    });

    it('lets only one of two signatures sent at once take the last place', async () => {
      const image = await pushManifest();
      await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('a') }, PUSHER);
      await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('b') }, PUSHER);
      const racing = await Promise.allSettled(
        ['c', 'd'].map(async (text) => service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed(text) }, PUSHER)),
      );
      assert.deepEqual(racing.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
      assert.equal((await service.list(REPOSITORY, image.digest)).length, 3);
    });

    it('records the arrival of a signature and its result in the audit log, with the transaction that stores them', async () => {
      current = trust;
      const repository = `team/audited-${randomBytes(4).toString('hex')}`;
      const image = await pushManifest(repository);
      const content = await standaloneSign(trusted, image.bytes, `${HOST}/${repository}:v1`, dir);
      await service.add(repository, image.digest, { name: nameFor(image.digest), content }, PUSHER);
      await service.add(repository, image.digest, { name: nameFor(image.digest), content }, PUSHER); // the same bytes again: nothing stored, nothing recorded
      assert.deepEqual(await auditTrail(repository), [
        { type: 'signature.stored', actor: 'alice', actor_kind: 'user', outcome: 'success', new_digest: image.digest },
        { type: 'signature.verified', actor: 'alice', actor_kind: 'user', outcome: 'success', new_digest: image.digest },
      ]);
      await assert.rejects(service.add(repository, otherDigest, { name: nameFor(otherDigest), content }, PUSHER), { code: 'MANIFEST_UNKNOWN' });
      assert.equal((await auditTrail(repository)).length, 2);
    });

    it('judges stored signatures again when the policy changes; a result of an earlier policy counts for nothing until then', async () => {
      // Each test's repository stands alone: the reverifier walks every repository holding results.
      const repository = `team/rekeyed-${randomBytes(4).toString('hex')}`;
      const policyOf = (...signers: TrustContext['signers']): TrustPolicy => ({ repositories: repository, immutableTags: [], signatures: { mode: 'enforce', signers: [...signers] } });
      const release = policyOf(...trust.signers);
      let policies: TrustPolicy[] = [];
      const reverifier = () =>
        new Reverifier({ store: new KnexSignatureStore(db), policies: async () => policies, gpg: service, manifests: new ManifestSignatures(async () => undefined), log: silent });
      const results = () => service.verifications(repository, image.digest);

      current = { signers: [] }; // judged where no policy applied
      const image = await pushManifest(repository);
      const name = nameFor(image.digest);
      await service.add(repository, image.digest, { name, content: await standaloneSign(trusted, image.bytes, `${HOST}/${repository}:v1`, dir) }, PUSHER);
      assert.deepEqual((await results()).map((r) => [r.outcome, r.reason, r.policyDigest]), [['invalid', NO_TRUSTED_SIGNER, undefined]]);

      policies = [release];
      assert.deepEqual(await reverifier().reverifyStale(), { checked: 1, changed: 1, failed: 0 });
      assert.deepEqual((await results()).map((r) => [r.signatureRef, r.outcome, r.identity, r.policyDigest]), [[name, 'valid', trusted.fingerprint, policyDigest(release)]]);
      assert.equal(satisfyingSignature(release, await results())?.signatureRef, name);
      assert.deepEqual(await reverifier().reverifyStale(), { checked: 0, changed: 0, failed: 0 }, 'nothing is stale any more');

      // The signer keeps its name, but its key is now another one: the old verdict is stale at once.
      const rekeyed = policyOf({ name: 'release', kind: 'gpg', armoredPublicKey: stranger.armoredPublicKey });
      policies = [rekeyed];
      assert.equal(satisfyingSignature(rekeyed, await results()), undefined, 'a valid result of an earlier policy does not satisfy this one');
      // Two replicas at once: both judge it, one replaces it, and its event is written once.
      const runs = await Promise.all([reverifier().reverifyStale(), reverifier().reverifyStale()]);
      assert.deepEqual(runs.map((counts) => counts.checked), [1, 1]);
      assert.equal(runs[0].changed + runs[1].changed, 1);
      assert.deepEqual((await results()).map((r) => [r.outcome, r.policyDigest]), [['invalid', policyDigest(rekeyed)]]);
      assert.match((await results())[0]?.reason ?? '', /no trusted signer of this repository holds/);

      policies = [release];
      assert.deepEqual(await reverifier().reverifyStale(), { checked: 1, changed: 1, failed: 0 });
      assert.ok(satisfyingSignature(release, await results()));
      assert.deepEqual(
        (await auditTrail(repository)).map((event) => [event.type, event.actor_kind, event.outcome]),
        [
          ['signature.stored', 'user', 'success'],
          ['signature.verified', 'user', 'failure'],
          ['signature.verified', 'system', 'success'],
          ['signature.verified', 'system', 'failure'],
          ['signature.verified', 'system', 'success'],
        ],
      );
    });

    it('stores a signature whose check failed inside the verifier as failed, and keeps it', async () => {
      current = { signers: [{ name: 'broken', kind: 'gpg', armoredPublicKey: '-----BEGIN PGP PUBLIC KEY BLOCK-----\nnonsense' }] };
      const image = await pushManifest();
      const outcome = await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await signed('x') }, PUSHER);
      assert.equal(outcome.added, true);
      assert.equal(outcome.verification?.outcome, 'invalid');
      assert.match(outcome.verification?.reason ?? '', /^the signature could not be verified: not an armored OpenPGP public key/);
      assert.equal((await service.list(REPOSITORY, image.digest)).length, 1);
    });

    it('forgets the signatures and results of a deleted manifest, also when it is pushed again', async () => {
      current = trust;
      const image = await pushManifest();
      await service.add(REPOSITORY, image.digest, { name: nameFor(image.digest), content: await standaloneSign(trusted, image.bytes, `${HOST}/${REPOSITORY}:v1`, dir) }, PUSHER);
      assert.equal((await metadata.deleteManifest(REPOSITORY, image.digest)).deleted, true);
      assert.deepEqual(await service.list(REPOSITORY, image.digest), []);
      assert.deepEqual(await service.verifications(REPOSITORY, image.digest), []);
      await metadata.putManifest(REPOSITORY, { digest: image.digest, mediaType: OCI_MANIFEST, size: image.bytes.length, payload: image.bytes }, []);
      assert.deepEqual(await service.describe(REPOSITORY, image.digest), { signatures: [], verifications: [] });
    });
  });
}
