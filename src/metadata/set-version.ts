// The version of a whole set (the access rules, the trust policies): a digest of its entries in
// a fixed order, so two readers of the same set get the same version on any replica, and an
// administrator's "apply what I previewed" can say which set it previewed (If-Match).
import { createHash } from 'node:crypto';

export function setVersion(entries: readonly string[]): string {
  const hash = createHash('sha256');
  for (const entry of [...entries].sort()) hash.update(`${entry.length}:${entry}`);
  return hash.digest('base64url').slice(0, 22);
}
