// Public keys that trust policies name (PEM), and raw signature checks with them the way cosign
// signs: ECDSA with the hash that fits the curve, RSA PKCS#1 v1.5 or PSS, Ed25519.
import { constants, createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

/** A public key a policy names could not be used: the message says why, for the administrator. */
export class PublicKeyError extends Error {
  override readonly name = 'PublicKeyError';
}

export interface PublicKey {
  key: KeyObject;
  /** SHA-256 of the key's SubjectPublicKeyInfo (DER), lower-case hex: how results name the key. */
  fingerprint: string;
  /** e.g. `ECDSA P-256`, `RSA 3072`, `Ed25519` */
  algorithm: string;
}

/** RSA below this is breakable in practice; cosign itself refuses to make such keys. */
const MIN_RSA_BITS = 2048;

const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

/**
 * Reads a PEM public key (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`). A private key is
 * refused rather than reduced to its public half: it does not belong in a policy file.
 */
export function parsePublicKeyPem(pem: string): PublicKey {
  const text = pem.trim();
  const header = /^-----BEGIN ([A-Z ]+)-----/.exec(text)?.[1];
  if (header === undefined) throw new PublicKeyError('not a PEM public key (no -----BEGIN PUBLIC KEY----- line)');
  if (header !== 'PUBLIC KEY' && header !== 'RSA PUBLIC KEY') {
    throw new PublicKeyError(`a PEM ${header.toLowerCase()}, not a public key`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: text, format: 'pem' });
  } catch (error) {
    throw new PublicKeyError(`the PEM public key cannot be read: ${(error as Error).message}`);
  }
  const algorithm = describeKey(key);
  const fingerprint = createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
  return { key, fingerprint, algorithm };
}

// Reading a PEM key costs several times more than verifying a signature with it, and policies
// name few keys: keep the parsed ones (public material, so nothing secret is held), bounded so a
// stream of policy changes cannot grow it without end.
const MAX_CACHED_KEYS = 256;
const parsedKeys = new Map<string, PublicKey>();

/** parsePublicKeyPem, remembering the keys it has read. */
export function cachedPublicKey(pem: string): PublicKey {
  const known = parsedKeys.get(pem);
  if (known !== undefined) return known;
  const parsed = parsePublicKeyPem(pem);
  if (parsedKeys.size >= MAX_CACHED_KEYS) parsedKeys.delete(parsedKeys.keys().next().value as string);
  parsedKeys.set(pem, parsed);
  return parsed;
}

function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = CURVE_NAMES[details.namedCurve ?? ''];
      if (curve === undefined) throw new PublicKeyError(`unsupported elliptic curve ${details.namedCurve ?? '(unknown)'}: use P-256, P-384 or P-521`);
      return `ECDSA ${curve}`;
    }
    case 'rsa':
    case 'rsa-pss': {
      const bits = details.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) throw new PublicKeyError(`RSA key of ${bits} bits: at least ${MIN_RSA_BITS} are needed`);
      return key.asymmetricKeyType === 'rsa' ? `RSA ${bits}` : `RSA-PSS ${bits}`;
    }
    case 'ed25519':
      return 'Ed25519';
    default:
      throw new PublicKeyError(`unsupported key type ${key.asymmetricKeyType ?? '(unknown)'}: use ECDSA, RSA or Ed25519`);
  }
}

interface Scheme {
  /** null: the key type fixes the hash (Ed25519) */
  hash: string | null;
  padding?: number;
}

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING };
const PKCS1 = { padding: constants.RSA_PKCS1_PADDING };

// Which (hash, padding) pairs a cosign signature with this key may use. cosign hashes with the
// curve's own size since 2.x (P-384 → SHA-384) and with SHA-256 before, so both are accepted:
// each is a sound signature by the key's owner over exactly these bytes.
function schemesFor(key: KeyObject): Scheme[] {
  switch (key.asymmetricKeyType) {
    case 'ec':
      switch (key.asymmetricKeyDetails?.namedCurve) {
        case 'secp384r1':
          return [{ hash: 'sha384' }, { hash: 'sha256' }];
        case 'secp521r1':
          return [{ hash: 'sha512' }, { hash: 'sha256' }];
        default:
          return [{ hash: 'sha256' }];
      }
    case 'rsa':
      return [{ hash: 'sha256', ...PKCS1 }, { hash: 'sha256', ...PSS }];
    case 'rsa-pss':
      return [{ hash: 'sha256', ...PSS }];
    default:
      return [{ hash: null }];
  }
}

/**
 * Whether `signature` (ECDSA in ASN.1 DER, as cosign writes it) is `key`'s signature over `data`.
 * Never throws for a malformed signature: that is simply not a valid one.
 */
/** A policy's public-key signers, read: the usable ones, and why the others cannot be used. */
export interface SignerKeys<S extends { name: string; publicKeyPem: string }> {
  usable: { signer: S; key: PublicKey }[];
  /** `<name> (<why>)`, for the reason of a refusal */
  unreadable: string[];
}

/** Reads each signer's key; one broken key in a policy must not stop the others from verifying. */
export function signerKeys<S extends { name: string; publicKeyPem: string }>(signers: readonly S[]): SignerKeys<S> {
  const keys: SignerKeys<S> = { usable: [], unreadable: [] };
  for (const signer of signers) {
    try {
      keys.usable.push({ signer, key: cachedPublicKey(signer.publicKeyPem) });
    } catch (error) {
      keys.unreadable.push(`${signer.name} (${(error as Error).message})`);
    }
  }
  return keys;
}

/** The tail of a refusal naming the keys that could not be used, if any. */
export function unusableKeys(unreadable: readonly string[]): string {
  return unreadable.length > 0 ? `; unusable keys: ${unreadable.join('; ')}` : '';
}

export function verifyRawSignature(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  return schemesFor(key).some((scheme) => {
    try {
      // PSS: the salt length is read from the signature (Node's default for verification).
      const keyInput = scheme.padding === undefined ? key : { key, padding: scheme.padding };
      return verify(scheme.hash, data, keyInput, signature);
    } catch {
      return false;
    }
  });
}
