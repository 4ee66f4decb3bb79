// Content hashing. Blobs are hashed while they stream; nothing here buffers a whole blob.
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { DigestAlgorithm } from './reference.js';

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

export function newHash(algorithm: DigestAlgorithm = 'sha256'): Hash {
  return createHash(algorithm);
}

export async function digestOfStream(stream: Readable, algorithm: DigestAlgorithm): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return `${algorithm}:${hash.digest('hex')}`;
}
