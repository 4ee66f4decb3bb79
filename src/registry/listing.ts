// Paged listings (tags, catalog). Always answered from the metadata store, never by walking
// storage, and always bounded (distribution CVE-2023-2253).
import type { MetadataStore } from '../metadata/store.js';
import { errors, RegistryError } from './errors.js';

export interface PageQuery {
  n?: string | undefined;
  last?: string | undefined;
}

/** What of the catalog one caller may see. */
export interface CatalogView {
  /** Name prefixes (each with everything below it) outside which nothing is visible. */
  namespaces: readonly string[] | 'everything';
  visible(repository: string): boolean;
}

export interface Page {
  items: string[];
  /** the `last` value for the next page, when there may be one */
  next?: { n: number; last: string };
}

export class ListingService {
  constructor(
    private readonly metadata: MetadataStore,
    private readonly maxEntries: number,
  ) {}

  async tags(repository: string, query: PageQuery): Promise<Page> {
    return this.page(query, async (limit, last) => {
      const tags = await this.metadata.listTags(repository, { limit, last });
      if (tags === undefined) throw errors.nameUnknown(repository);
      return tags;
    });
  }

  /**
   * Repositories in lexical order; with a view, only those it shows (the caller's pull rights),
   * read from the caller's namespaces only, in batches until the page is full or they end — a
   * page never stops early (that would hide what follows), and a Link never names a repository
   * the caller cannot see.
   */
  async repositories(query: PageQuery, view?: CatalogView): Promise<Page> {
    if (!view) return this.page(query, (limit, last) => this.metadata.listRepositories({ limit, last }));
    const { visible } = view;
    const namespaces = view.namespaces === 'everything' ? undefined : view.namespaces;
    return this.page(query, async (limit, last) => {
      if (namespaces?.length === 0) return []; // nothing anywhere: no rows to read
      const found: string[] = [];
      let cursor = last;
      while (found.length < limit) {
        const batch = await this.metadata.listRepositories({ limit: this.maxEntries, last: cursor, namespaces });
        if (batch.length === 0) break;
        for (const name of batch) {
          cursor = name;
          if (visible(name)) found.push(name);
          if (found.length === limit) break;
        }
        if (batch.length < this.maxEntries) break;
      }
      return found;
    });
  }

  private async page(query: PageQuery, fetch: (limit: number, last?: string) => Promise<string[]>): Promise<Page> {
    const n = this.pageSize(query.n);
    const last = query.last === undefined || query.last === '' ? undefined : query.last;
    // `last` is a name or tag from an earlier page: anything longer, or with control characters, is not.
    if (last !== undefined && (last.length > 255 || /[\u0000-\u001f\u007f]/.test(last))) {
      throw new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid last parameter', { last: last.slice(0, 64) });
    }
    if (n === 0) {
      // Still answer NAME_UNKNOWN for a missing repository.
      await fetch(1, last);
      return { items: [] };
    }
    // One extra row tells whether another page follows.
    const rows = await fetch(n + 1, last);
    if (rows.length <= n) return { items: rows };
    const items = rows.slice(0, n);
    return { items, next: { n, last: items[items.length - 1] as string } };
  }

  private pageSize(n: string | undefined): number {
    if (n === undefined || n === '') return this.maxEntries;
    if (!/^\d{1,9}$/.test(n)) throw new RegistryError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer', { n });
    // Larger requests are capped, not refused: the Link header leads to the rest.
    return Math.min(Number(n), this.maxEntries);
  }
}
