// A large, deterministic, incompressible blob that is never held in memory.
//
// The content is a 4 MiB block of AES-256-CTR keystream derived from the seed, repeated; the first
// 64 KiB of every block is a private copy with the seed and block index written into its first 16
// bytes, so no two blocks (and no two seeds) are alike. Only that 64 KiB head is allocated per
// block; the rest is a shared read-only slice, so generating the stream costs almost no CPU.
import { createCipheriv, createHash } from 'node:crypto';

const BLOCK = 4 * 1024 * 1024;
const HEAD = 64 * 1024;

interface Part {
  start: number;
  bytes: Buffer;
}

const digestMemo = new Map<string, string>();

export class PatternBlob {
  private readonly base: Buffer;

  constructor(
    readonly seed: number,
    readonly size: number,
  ) {
    const key = createHash('sha256').update(`portcullis-bench:${seed}`).digest();
    this.base = createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(BLOCK));
  }

  /** The bytes [start, end) as a sequence of buffers (at most 4 MiB each). */
  *segments(start = 0, end = this.size): Generator<Buffer> {
    for (let block = Math.floor(start / BLOCK); block * BLOCK < end; block++) {
      for (const part of this.blockParts(block)) {
        const from = Math.max(start, part.start) - part.start;
        const to = Math.min(end, part.start + part.bytes.length) - part.start;
        if (to > from) yield part.bytes.subarray(from, to);
      }
    }
  }

  /** sha256 of the whole blob, computed once per (seed, size) in this process. */
  digest(): string {
    const key = `${this.seed}:${this.size}`;
    let digest = digestMemo.get(key);
    if (!digest) {
      const hash = createHash('sha256');
      for (const segment of this.segments()) hash.update(segment);
      digest = `sha256:${hash.digest('hex')}`;
      digestMemo.set(key, digest);
    }
    return digest;
  }

  private blockParts(block: number): Part[] {
    const start = block * BLOCK;
    const length = Math.min(BLOCK, this.size - start);
    const head = Buffer.from(this.base.subarray(0, Math.min(HEAD, length)));
    const stamp = Buffer.alloc(16);
    stamp.writeBigUInt64LE(BigInt(this.seed), 0);
    stamp.writeBigUInt64LE(BigInt(block), 8);
    stamp.copy(head, 0, 0, Math.min(16, head.length));
    return [
      { start, bytes: head },
      { start: start + head.length, bytes: this.base.subarray(head.length, length) },
    ];
  }
}
