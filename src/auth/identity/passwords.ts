// Password hashing for local users and robot secrets: scrypt (memory-hard, in node:crypto),
// self-describing hashes so parameters can be raised later, constant-time comparison.
import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';

// At most this many hashes run at once: each takes a libuv thread (shared with file I/O) for
// tens of milliseconds, so a flood of logins must queue instead of stalling blob reads and writes.
const MAX_CONCURRENT_HASHES = 2;
let running = 0;
const waiting: (() => void)[] = [];

/**
 * Told whether a login computed a password hash, so a failed login that hashed nothing can be made
 * to cost one (decoyVerify). Passed down explicitly: an AsyncLocalStorage would turn on async hooks
 * for the whole process, a cost every request and every streamed chunk would pay.
 */
export interface HashMeter {
  hashed: boolean;
}

async function scrypt(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  if (running >= MAX_CONCURRENT_HASHES) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await new Promise((resolve, reject) => {
      scryptCallback(password, salt, length, options, (error, key) => (error ? reject(error) : resolve(key)));
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}

const PARAMETERS = { N: 2 ** 15, r: 8, p: 1 };
const KEY_LENGTH = 32;
// N=2^15, r=8 needs 32 MiB; allow some headroom above Node's 32 MiB default.
const MAX_MEMORY = 64 * 1024 * 1024;

/** `scrypt$<N>$<r>$<p>$<salt b64>$<key b64>` */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, KEY_LENGTH, { ...PARAMETERS, maxmem: MAX_MEMORY });
  return ['scrypt', PARAMETERS.N, PARAMETERS.r, PARAMETERS.p, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifyPassword(password: string, stored: string, meter?: HashMeter): Promise<boolean> {
  if (meter) meter.hashed = true;
  const [scheme, n, r, p, salt, key] = stored.split('$');
  if (scheme !== 'scrypt' || !n || !r || !p || !salt || !key) return false;
  const expected = Buffer.from(key, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: MAX_MEMORY,
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** A hash of a random password, compared against when a user does not exist, so timing does not tell. */
let decoy: Promise<string> | undefined;
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(randomBytes(16).toString('hex'));
  return decoy;
}

/** Costs what checking a local password costs, and matches nothing (failed logins that hashed nothing). */
export async function decoyVerify(password: string): Promise<void> {
  await verifyPassword(password, await decoyHash());
}

/** A random secret for generated passwords and robot accounts (URL-safe, 32 bytes of entropy). */
export function generateSecret(): string {
  return randomBytes(32).toString('base64url');
}
