// Names, tags and digests exactly as the OCI distribution-spec's grammar defines them. Every value
// taken from a URL passes through here before it reaches storage, SQL or a file path.
import { errors, RegistryError } from './errors.js';

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** distribution's limit; longer names break file systems and proxies. */
export const MAX_NAME_LENGTH = 255;

export const DIGEST_ALGORITHMS = {
  sha256: { hexLength: 64 },
  sha512: { hexLength: 128 },
} as const;
export type DigestAlgorithm = keyof typeof DIGEST_ALGORITHMS;

export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
  /** `algorithm:hex`, the canonical string form */
  value: string;
}

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

export function parseName(name: string): string {
  if (name.length > MAX_NAME_LENGTH) throw errors.nameInvalid(name, `repository name longer than ${MAX_NAME_LENGTH} characters`);
  if (!NAME.test(name)) throw errors.nameInvalid(name);
  return name;
}

export function isTag(reference: string): boolean {
  return TAG.test(reference);
}

/** Parses `algorithm:hex`; throws DIGEST_INVALID for bad grammar or an unsupported algorithm. */
export function parseDigest(text: string): Digest {
  const match = DIGEST.exec(text);
  if (!match) throw errors.digestInvalid({ digest: text }, 'invalid digest');
  const algorithm = match[1] as string;
  const hex = match[2] as string;
  if (!(algorithm in DIGEST_ALGORITHMS)) {
    throw errors.digestInvalid({ digest: text }, `unsupported digest algorithm ${algorithm}`);
  }
  const known = DIGEST_ALGORITHMS[algorithm as DigestAlgorithm];
  if (hex.length !== known.hexLength || !/^[a-f0-9]+$/.test(hex)) {
    throw errors.digestInvalid({ digest: text }, `invalid ${algorithm} digest`);
  }
  return { algorithm: algorithm as DigestAlgorithm, hex, value: text };
}

export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':');
}

export type ManifestReference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** A manifest reference in a URL is either a tag or a digest. */
export function parseManifestReference(reference: string): ManifestReference {
  if (looksLikeDigest(reference)) return { kind: 'digest', digest: parseDigest(reference) };
  if (isTag(reference)) return { kind: 'tag', tag: reference };
  throw new RegistryError('MANIFEST_INVALID', 'invalid tag or digest', { reference });
}
