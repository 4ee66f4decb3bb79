// High-entropy secrets (robot accounts, refresh tokens) are stored as SHA-256 digests: with 256
// random bits there is nothing to brute-force, and a fast hash keeps token issuance cheap.
// Comparison is constant-time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function secretDigest(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function secretMatches(secret: string, digest: string): boolean {
  const actual = Buffer.from(secretDigest(secret), 'hex');
  const expected = Buffer.from(digest, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
