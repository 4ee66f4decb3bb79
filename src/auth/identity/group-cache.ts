// A small bounded TTL cache for a user's directory groups. Only group lookups are cached (never a
// password check), and a refresh REPLACES the entry: results are never merged, so a user removed
// from a group loses it as soon as the entry expires.
import type { Group } from './provider.js';

interface CacheEntry {
  groups: readonly Group[];
  expiresAt: number;
}

export class GroupCache {
  // A Map iterates in insertion order, and set() re-inserts, so the first key is always the oldest write.
  private readonly entries = new Map<string, CacheEntry>();
  private readonly ttlMs: number;

  constructor(
    ttlSeconds: number,
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {
    this.ttlMs = ttlSeconds * 1000;
  }

  /** TTL 0 turns the cache off. */
  get enabled(): boolean {
    return this.ttlMs > 0 && this.maxEntries > 0;
  }

  get size(): number {
    return this.entries.size;
  }

  /** A copy of the cached groups, or undefined when absent or expired (expired entries are dropped). */
  get(key: string): Group[] | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.groups.map((g) => ({ ...g }));
  }

  set(key: string, groups: readonly Group[]): void {
    if (!this.enabled) return;
    this.entries.delete(key); // re-insert at the end: it is now the newest
    this.entries.set(key, { groups: groups.map((g) => ({ ...g })), expiresAt: this.now() + this.ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
