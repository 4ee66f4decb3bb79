// Signatures made the way cosign makes them, offline, for tests: keys of every type cosign
// accepts, simple-signing payloads and their signatures, and sigstore bundles (v0.3, DSSE around an
// in-toto statement) signed with a key or keyless through a fake sigstore (@sigstore/mock's Fulcio
// CA with a CT log, and its Rekor), together with the trusted root that trusts exactly that fake.
import { createHash, generateKeyPairSync, sign, constants, type KeyObject } from 'node:crypto';
// The submodules, not the package index: the index also loads nock's HTTP interception.
import { initializeCA, initializeCTLog, type CA } from '@sigstore/mock/dist/fulcio/index.js';
import { initializeTLog, type TLog } from '@sigstore/mock/dist/rekor/index.js';
import { OCI_MANIFEST, type Descriptor, type TestRegistry } from './registry-client.js';

export type KeyKind = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-pkcs1' | 'rsa-pss' | 'ed25519';

export interface TestKey {
  kind: KeyKind;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicKeyPem: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, hex: what cosign results name a key by */
  fingerprint: string;
}

export function makeKey(kind: KeyKind): TestKey {
  const pair =
    kind === 'ecdsa-p256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : kind === 'ecdsa-p384'
        ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
        : kind === 'ed25519'
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = pair.publicKey.export({ type: 'spki', format: 'der' });
  return {
    kind,
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    fingerprint: createHash('sha256').update(spki).digest('hex'),
  };
}

/** Signs as cosign does for the key type: the curve's hash for ECDSA (DER), SHA-256 for RSA. */
export function signBytes(key: TestKey, data: Uint8Array, options: { hash?: string } = {}): Buffer {
  switch (key.kind) {
    case 'ecdsa-p256':
      return sign(options.hash ?? 'sha256', data, key.privateKey);
    case 'ecdsa-p384':
      return sign(options.hash ?? 'sha384', data, key.privateKey);
    case 'rsa-pkcs1':
      return sign(options.hash ?? 'sha256', data, { key: key.privateKey, padding: constants.RSA_PKCS1_PADDING });
    case 'rsa-pss':
      return sign(options.hash ?? 'sha256', data, { key: key.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
    case 'ed25519':
      return sign(null, data, key.privateKey);
  }
}

export interface CosignPayloadOptions {
  /** critical.identity.docker-reference, e.g. `registry.example:5000/team/app` */
  reference: string;
  /** critical.image.docker-manifest-digest */
  digest: string;
  type?: string;
  optional?: Record<string, string> | null;
}

/** A simple-signing payload, with cosign's key order and compact encoding. */
export function cosignPayload(options: CosignPayloadOptions): Buffer {
  const document = {
    critical: {
      identity: { 'docker-reference': options.reference },
      image: { 'docker-manifest-digest': options.digest },
      type: options.type ?? 'cosign container image signature',
    },
    optional: options.optional ?? null,
  };
  return Buffer.from(JSON.stringify(document));
}

/** The `dev.cosignproject.cosign/signature` annotation for a payload. */
export function cosignSignature(key: TestKey, payload: Buffer, options: { hash?: string } = {}): string {
  return signBytes(key, payload, options).toString('base64');
}

export const IN_TOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

/** An in-toto statement about one image, as `cosign sign` (v3) writes it. */
export function inTotoStatement(options: { digest: string; name?: string; predicateType?: string }): Buffer {
  const [algorithm, hex] = options.digest.split(':') as [string, string];
  return Buffer.from(
    JSON.stringify({
      _type: IN_TOTO_STATEMENT_V1,
      subject: [{ ...(options.name !== undefined ? { name: options.name } : {}), digest: { [algorithm]: hex } }],
      predicateType: options.predicateType ?? COSIGN_SIGN_PREDICATE,
      predicate: {},
    }),
  );
}

const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const OID_ISSUER_V1 = '1.3.6.1.4.1.57264.1.1';
const OID_ISSUER_V2 = '1.3.6.1.4.1.57264.1.8';
const REKOR_URL = 'https://rekor.sigstore.mock';
const LONG_AGO = '2000-01-01T00:00:00Z';

/** DSSE's pre-authentication encoding: what a DSSE signature is over. */
export function preAuthEncoding(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType);
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

/** One Rekor log entry as the mock answers (the Rekor v1 API's shape). */
interface RekorEntry {
  body: string;
  integratedTime: number;
  logID: string;
  logIndex: number;
  verification: {
    inclusionProof: { logIndex: number; treeSize: number; rootHash: string; hashes: string[]; checkpoint: string };
    signedEntryTimestamp: string;
  };
}

export interface KeylessIdentity {
  /** the certificate's subject alternative name (a URI) */
  subject: string;
  /** the OIDC issuer extension */
  issuer: string;
}

export interface FakeSigstore {
  /** trusted_root.json for exactly this fake's CA, CT log and Rekor, as parsed JSON */
  trustedRoot: Record<string, unknown>;
  /** A bundle signed keyless: a fresh key and a certificate for `identity`, logged in Rekor. */
  signKeyless(statement: Buffer, identity: KeylessIdentity): Promise<Buffer>;
  /** A bundle signed with `key` (a public-key hint, no certificate), logged in Rekor. */
  signWithKey(statement: Buffer, key: TestKey): Promise<Buffer>;
}

function der(view: ArrayBufferView): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function p256(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

function logInstance(baseUrl: string, publicKeyDer: Buffer): Record<string, unknown> {
  return {
    baseUrl,
    hashAlgorithm: 'SHA2_256',
    publicKey: { rawBytes: publicKeyDer.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: LONG_AGO } },
    logId: { keyId: createHash('sha256').update(publicKeyDer).digest('base64') },
  };
}

export async function createFakeSigstore(): Promise<FakeSigstore> {
  const ctLogKeys = p256();
  const ctLog = await initializeCTLog(ctLogKeys);
  const ca: CA = await initializeCA(p256(), ctLog);
  const tlog: TLog = await initializeTLog(REKOR_URL, p256());

  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [logInstance(REKOR_URL, tlog.publicKey)],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: 'https://fulcio.sigstore.mock',
        certChain: { certificates: [{ rawBytes: der(ca.rootCertificate).toString('base64') }] },
        validFor: { start: LONG_AGO },
      },
    ],
    ctlogs: [logInstance('https://ctfe.sigstore.mock', ctLog.publicKey)],
    timestampAuthorities: [],
  };

  async function bundle(statement: Buffer, signature: Buffer, verifier: string, material: Record<string, unknown>): Promise<Buffer> {
    const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
    const envelope = { payload: statement.toString('base64'), payloadType: IN_TOTO_PAYLOAD_TYPE, signatures: [{ sig: signature.toString('base64'), keyid: '' }] };
    // The Rekor "dsse" entry: what the verifier compares with the envelope.
    const proposed = {
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(Buffer.from(JSON.stringify(envelope))) },
        payloadHash: { algorithm: 'sha256', value: sha256(statement) },
        signatures: [{ signature: signature.toString('base64'), verifier: Buffer.from(verifier).toString('base64') }],
      },
    };
    const logged = Object.values((await tlog.log(proposed)) as Record<string, RekorEntry>)[0] as RekorEntry;
    const proof = logged.verification.inclusionProof;
    const document = {
      mediaType: BUNDLE_V03,
      verificationMaterial: {
        ...material,
        tlogEntries: [
          {
            logIndex: String(logged.logIndex),
            logId: { keyId: Buffer.from(logged.logID, 'hex').toString('base64') },
            kindVersion: { kind: 'dsse', version: '0.0.1' },
            integratedTime: String(logged.integratedTime),
            inclusionPromise: { signedEntryTimestamp: logged.verification.signedEntryTimestamp },
            inclusionProof: {
              logIndex: String(proof.logIndex),
              rootHash: Buffer.from(proof.rootHash, 'hex').toString('base64'),
              treeSize: String(proof.treeSize),
              hashes: proof.hashes,
              checkpoint: { envelope: proof.checkpoint },
            },
            canonicalizedBody: logged.body,
          },
        ],
        timestampVerificationData: { rfc3161Timestamps: [] },
      },
      dsseEnvelope: envelope,
    };
    return Buffer.from(JSON.stringify(document));
  }

  return {
    trustedRoot,
    async signKeyless(statement, identity) {
      const ephemeral = p256();
      const certificate = der(
        await ca.issueCertificate({
          publicKey: ephemeral.publicKey.export({ type: 'spki', format: 'der' }),
          subjectAltName: identity.subject,
          extensions: [
            { oid: OID_ISSUER_V1, value: identity.issuer, legacy: true },
            { oid: OID_ISSUER_V2, value: identity.issuer },
          ],
        }),
      );
      const signature = sign('sha256', preAuthEncoding(IN_TOTO_PAYLOAD_TYPE, statement), ephemeral.privateKey);
      const pem = `-----BEGIN CERTIFICATE-----\n${certificate.toString('base64')}\n-----END CERTIFICATE-----\n`;
      return bundle(statement, signature, pem, { certificate: { rawBytes: certificate.toString('base64') } });
    },
    async signWithKey(statement, key) {
      const signature = signBytes(key, preAuthEncoding(IN_TOTO_PAYLOAD_TYPE, statement));
      return bundle(statement, signature, key.publicKeyPem, { publicKey: { hint: key.fingerprint } });
    },
  };
}

/**
 * Pushes a cosign signature of `signed` into a registry, in exactly the layout cosign writes: a
 * manifest under `sha256-<hex>.sig` whose one layer is the payload, the signature in its annotation.
 */
export async function pushCosignSignature(
  registry: TestRegistry,
  repository: string,
  signed: string,
  key: TestKey,
  payload: Buffer,
  options: { signedPayload?: Buffer } = {},
): Promise<void> {
  const config = await registry.pushBlob(repository, Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
  const layer = await registry.pushBlob(repository, payload, 'application/vnd.dev.cosign.simplesigning.v1+json');
  // `signedPayload`: the bytes the signature was made over, when the pushed payload differs (tampering).
  const signature = cosignSignature(key, options.signedPayload ?? payload);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config,
    layers: [{ ...layer, annotations: { 'dev.cosignproject.cosign/signature': signature } }],
  };
  await registry.pushManifest(repository, `${signed.replace(':', '-')}.sig`, manifest, OCI_MANIFEST);
}

/** Pushes a sigstore bundle as an OCI referrer of `subject`, in the layout cosign v3 writes. */
export async function pushSigstoreBundle(registry: TestRegistry, repository: string, subject: Descriptor, bundle: Buffer): Promise<void> {
  const empty = await registry.pushBlob(repository, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const layer = await registry.pushBlob(repository, bundle, BUNDLE_V03);
  const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: BUNDLE_V03, config: empty, layers: [layer], subject };
  await registry.pushManifest(repository, subject.digest.replace(':', '-'), manifest, OCI_MANIFEST);
}
