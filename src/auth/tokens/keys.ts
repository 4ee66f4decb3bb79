// Token signing keys: ES256 (ECDSA P-256) only.
//
// Either the operator supplies one key (`auth.token.keyFile`, PEM PKCS#8), or Portcullis keeps its
// own under `<dataDir>/keys/`:
//   manifest.json   {"version":1,"current":"<kid>.pem","previous":["<kid>.pem"]}
//   <kid>.pem       one PKCS#8 private key per file, mode 0600
// The manifest is the single commit point: key files are written first (temp + rename), then
// the manifest is replaced atomically, then dropped key files are removed. A crash at any
// moment leaves either the old or the new key set, at worst plus an orphaned key file.
// `kid` is the RFC 7638 JWK thumbprint (SHA-256) of the public key.
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { calculateJwkThumbprint, importJWK, type CryptoKey, type JWK_EC_Private } from 'jose';
import { ConfigError } from '../../config/config.js';

export const KEYS_DIRECTORY = 'keys';
const MANIFEST = 'manifest.json';
/** How many retired keys stay trusted after a rotation. One covers tokens issued just before it. */
const KEEP_PREVIOUS = 1;
// A thumbprint is 43 base64url characters; anything else in the manifest is refused, so a
// tampered manifest cannot point outside the directory.
const KEY_FILE_NAME = /^[A-Za-z0-9_-]{43}\.pem$/;

export interface PublicJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
  kid: string;
  alg: 'ES256';
  use: 'sig';
}

export interface Jwks {
  keys: PublicJwk[];
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly jwk: PublicJwk;
}

export interface SigningKeys {
  /** Signs new tokens. */
  readonly current: SigningKey;
  /** Retired keys still accepted when verifying, newest first (at most one). */
  readonly previous: readonly SigningKey[];
  /** Where the keys came from, for the startup log: the key file or the keys directory. */
  readonly source: string;
}

export interface LoadKeysOptions {
  /** `auth.token.keyFile`: when set, the only key, and nothing is written. */
  keyFile?: string | undefined;
  dataDir: string;
}

/** The keys directory under dataDir is unusable (corrupt manifest, unreadable key file). */
export class SigningKeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SigningKeyError';
  }
}

interface Manifest {
  version: 1;
  current: string;
  previous: string[];
}

/** Parses a PEM private key (PKCS#8, or SEC1 `EC PRIVATE KEY`) and insists on EC P-256. */
function parseP256(pem: string, fail: (why: string) => Error): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw fail(`not a readable unencrypted PEM private key (${(error as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const what = key.asymmetricKeyType === 'ec' ? `EC ${key.asymmetricKeyDetails?.namedCurve ?? 'unknown curve'}` : key.asymmetricKeyType;
    throw fail(`an ${what} key; tokens are signed with ES256, which needs an EC P-256 (prime256v1) key`);
  }
  return key;
}

async function toSigningKey(key: KeyObject): Promise<SigningKey> {
  const jwk = key.export({ format: 'jwk' });
  const { x, y, d } = jwk;
  if (typeof x !== 'string' || typeof y !== 'string' || typeof d !== 'string') throw new Error('EC key export lacks x, y or d');
  const kid = await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x, y }, 'sha256');
  const privateJwk: JWK_EC_Private = { kty: 'EC', crv: 'P-256', x, y, d };
  // Imported once as WebCrypto keys: jose would otherwise convert a KeyObject on every call
  // (Node 20 has no KeyObject.toCryptoKey). Non-extractable: nothing needs the bytes back.
  const privateKey = await importJWK(privateJwk, 'ES256', { extractable: false });
  const publicKey = await importJWK({ kty: 'EC', crv: 'P-256', x, y }, 'ES256');
  if (privateKey instanceof Uint8Array) throw new Error('EC key imported as a secret'); // narrows the type only
  return Object.freeze({
    kid,
    privateKey,
    publicKey,
    jwk: Object.freeze({ kty: 'EC', crv: 'P-256', x, y, kid, alg: 'ES256', use: 'sig' }),
  });
}

function newKeyPem(): { pem: string; key: KeyObject } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, key: privateKey };
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

async function fsyncDirectory(directory: string): Promise<void> {
  // Makes the rename durable; not supported everywhere (e.g. some network file systems).
  try {
    const handle = await open(directory, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    /* best effort */
  }
}

/** Writes a new file next to `path` with mode 0600 and syncs it; returns the temp path. */
async function writeTemp(path: string, data: string): Promise<string> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temp, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temp;
}

async function writeAtomic(path: string, data: string): Promise<void> {
  const temp = await writeTemp(path, data);
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await fsyncDirectory(dirname(path));
}

/** Creates `path` only if it does not exist yet (link fails with EEXIST); false if it existed. */
async function createExclusive(path: string, data: string): Promise<boolean> {
  const temp = await writeTemp(path, data);
  try {
    await link(temp, path);
    await fsyncDirectory(dirname(path));
    return true;
  } catch (error) {
    if (isErrno(error, 'EEXIST')) return false;
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

function keysDirectory(dataDir: string): string {
  return join(dataDir, KEYS_DIRECTORY);
}

async function readManifest(directory: string): Promise<Manifest | undefined> {
  const path = join(directory, MANIFEST);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return undefined;
    throw new SigningKeyError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SigningKeyError(`${path} is not valid JSON`, { cause: error });
  }
  const record = parsed as Partial<Record<keyof Manifest, unknown>> | null;
  const valid =
    typeof record === 'object' &&
    record !== null &&
    record.version === 1 &&
    typeof record.current === 'string' &&
    KEY_FILE_NAME.test(record.current) &&
    Array.isArray(record.previous) &&
    record.previous.every((file) => typeof file === 'string' && KEY_FILE_NAME.test(file));
  if (!valid) throw new SigningKeyError(`${path} is not a Portcullis key manifest`);
  return { version: 1, current: record.current as string, previous: record.previous as string[] };
}

async function readStoredKey(directory: string, file: string): Promise<SigningKey> {
  const path = join(directory, file);
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (error) {
    throw new SigningKeyError(`cannot read signing key ${path}: ${(error as Error).message}`, { cause: error });
  }
  const key = await toSigningKey(parseP256(pem, (why) => new SigningKeyError(`signing key ${path} is ${why}`)));
  // The file name is the kid; a mismatch means the file was replaced behind our back.
  if (`${key.kid}.pem` !== file) throw new SigningKeyError(`signing key ${path} does not match its name (kid ${key.kid})`);
  return key;
}

async function loadStore(directory: string, manifest: Manifest): Promise<SigningKeys> {
  const current = await readStoredKey(directory, manifest.current);
  const previous = await Promise.all(manifest.previous.map((file) => readStoredKey(directory, file)));
  return { current, previous, source: directory };
}

/** Writes a fresh key file and returns its file name (the kid + .pem). */
async function writeNewKey(directory: string): Promise<string> {
  const { pem, key } = newKeyPem();
  const { kid } = await toSigningKey(key);
  const file = `${kid}.pem`;
  await writeAtomic(join(directory, file), pem);
  return file;
}

/** Removes key files the manifest no longer names (rotated out, or left by a crash). */
async function removeUnlisted(directory: string, manifest: Manifest): Promise<void> {
  const keep = new Set([manifest.current, ...manifest.previous]);
  for (const entry of await readdir(directory)) {
    if ((KEY_FILE_NAME.test(entry) || entry.endsWith('.tmp')) && !keep.has(entry)) {
      await unlink(join(directory, entry)).catch(() => undefined);
    }
  }
}

async function loadKeyFile(keyFile: string): Promise<SigningKeys> {
  const fail = (why: string) => new ConfigError(`auth.token.keyFile ${keyFile}: ${why}`);
  let pem: string;
  try {
    pem = await readFile(keyFile, 'utf8');
  } catch (error) {
    throw fail(`cannot read the signing key (${(error as Error).message})`);
  }
  const key = await toSigningKey(parseP256(pem, (why) => fail(`is ${why}`)));
  return { current: key, previous: [], source: keyFile };
}

/**
 * The keys to sign and verify with. With `keyFile`, that key alone (errors are ConfigErrors naming
 * `auth.token.keyFile`). Otherwise the keys directory under dataDir, created with a new key on
 * first start; several processes starting at once agree on one key (exclusive manifest create).
 */
export async function loadSigningKeys(options: LoadKeysOptions): Promise<SigningKeys> {
  if (options.keyFile) return loadKeyFile(options.keyFile);
  const directory = keysDirectory(options.dataDir);
  const existing = await readManifest(directory);
  if (existing) return loadStore(directory, existing);

  await mkdir(directory, { recursive: true, mode: 0o700 });
  const file = await writeNewKey(directory);
  const manifest: Manifest = { version: 1, current: file, previous: [] };
  if (!(await createExclusive(join(directory, MANIFEST), `${JSON.stringify(manifest)}\n`))) {
    // Another process created the store first: use its key, drop ours.
    await unlink(join(directory, file)).catch(() => undefined);
  }
  const winner = await readManifest(directory);
  if (!winner) throw new SigningKeyError(`${join(directory, MANIFEST)} vanished while starting`);
  return loadStore(directory, winner);
}

/**
 * Makes a new current key; the old current stays trusted for verification (tokens it signed keep
 * working until they expire) and the key before it is dropped and deleted. Only for the keys
 * directory: with `auth.token.keyFile` the operator rotates by replacing that file. Not safe to
 * run concurrently with itself; running processes pick the new key up when they reload keys.
 */
export async function rotateSigningKey(dataDir: string): Promise<SigningKeys> {
  const directory = keysDirectory(dataDir);
  const existing = await readManifest(directory);
  if (!existing) return loadSigningKeys({ dataDir });
  // Refuse to rotate a broken store: that would make the broken key "previous" silently.
  await loadStore(directory, existing);
  const file = await writeNewKey(directory);
  const manifest: Manifest = { version: 1, current: file, previous: [existing.current, ...existing.previous].slice(0, KEEP_PREVIOUS) };
  await writeAtomic(join(directory, MANIFEST), `${JSON.stringify(manifest)}\n`);
  await removeUnlisted(directory, manifest);
  return loadStore(directory, manifest);
}

/** The public JWK Set for `/auth/jwks`: current key first, then the still-trusted previous ones. */
export function jwksOf(keys: SigningKeys): Jwks {
  return { keys: [keys.current, ...keys.previous].map((key) => ({ ...key.jwk })) };
}
