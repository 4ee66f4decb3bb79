// The repositories the person may pull (the catalog answers only those), a page at a time, with
// a filter that keeps reading pages until it has a page of matches.
import { useState } from 'preact/hooks';
import { callJson, scopes } from '../api.js';
import { pageLink, Show, useLoad, Pager } from '../components.js';

const PAGE = 50;

interface Found {
  names: string[];
  /** the catalog's `last` for the next page, when there may be more */
  next?: string | undefined;
}

async function find(filter: string, after: string | undefined): Promise<Found> {
  const names: string[] = [];
  let last = after;
  for (;;) {
    const query = new URLSearchParams({ n: String(PAGE), ...(last ? { last } : {}) });
    const page = await callJson<{ repositories: string[] }>(`/v2/_catalog?${query.toString()}`, [scopes.catalog]);
    for (const name of page.repositories) {
      last = name;
      if (filter === '' || name.includes(filter)) names.push(name);
      if (names.length === PAGE) return { names, next: name };
    }
    if (page.repositories.length < PAGE) return { names };
  }
}

export function Repositories() {
  const [filter, setFilter] = useState('');
  const [pages, setPages] = useState<(string | undefined)[]>([undefined]);
  const start = pages[pages.length - 1];
  const [loaded] = useLoad(() => find(filter, start), [filter, start]);
  return (
    <main>
      <h1>Repositories</h1>
      <form
        class="filters"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          const value = String(new FormData(event.currentTarget as HTMLFormElement).get('filter') ?? '').trim();
          setPages([undefined]);
          setFilter(value);
        }}
      >
        <label for="repo-filter">Name contains</label>
        <input id="repo-filter" name="filter" defaultValue={filter} />
        <button type="submit">Search</button>
      </form>
      <Show loaded={loaded}>
        {(found) => (
          <>
            {found.names.length === 0 ? (
              <p class="muted">No repositories{filter ? ` whose name contains “${filter}”` : ' you may pull'}.</p>
            ) : (
              <ul class="repositories" aria-label="Repositories">
                {found.names.map((name) => (
                  <li key={name}>
                    <a href={pageLink('/ui/repository', { name })}>{name}</a>
                  </li>
                ))}
              </ul>
            )}
            <Pager cursors={pages} next={found.next} onChange={setPages} />
          </>
        )}
      </Show>
    </main>
  );
}
