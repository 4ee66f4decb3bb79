// The audit trail: the hash chain's verdict, the events filtered and paged (GET /admin/v1/audit),
// and the signature report with its CSV export (GET /admin/v1/signatures/report).
import { useState } from 'preact/hooks';
import { call, callJson, readScope, type Session } from '../api.js';
import { shortDigest, Show, SignatureBadge, Time, useLoad, VerdictBadge, Pager } from '../components.js';

interface AuditEntry {
  seq: number;
  time: string;
  type: string;
  actor?: string;
  actorKind?: string;
  clientIp?: string;
  repository?: string;
  tag?: string;
  oldDigest?: string;
  newDigest?: string;
  outcome?: string;
  reason?: string;
}

type Chain = { intact: true; count: number; head: { seq: number; hash: string } } | { intact: false; seq?: number; id?: number; problem: string };

interface ReportEntry {
  repository: string;
  tag: string;
  digest: string;
  status: string;
  signer?: string;
  reason: string;
  policy?: string;
  verdict: string;
}

const FILTERS = ['type', 'repository', 'actor', 'since', 'until'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

/** A datetime-local value (the viewer's time) as RFC 3339. */
const asRfc3339 = (local: string): string => new Date(local).toISOString();

function ChainStatus({ session }: { session: Session }) {
  const [loaded, again] = useLoad(() => callJson<Chain>('/admin/v1/audit/chain', [readScope(session)]), []);
  return (
    <section aria-labelledby="chain-heading" class="chain">
      <h2 id="chain-heading">Hash chain</h2>
      <Show loaded={loaded}>
        {(chain) =>
          chain.intact ? (
            <p class="ok" data-testid="chain-status">
              Verified: all {chain.count} events, up to event {chain.head.seq} (head <code>{chain.head.hash.slice(0, 16)}…</code>).
            </p>
          ) : (
            <p class="error" data-testid="chain-status">
              Broken{chain.seq !== undefined ? ` at event ${chain.seq}` : ''}: {chain.problem}
            </p>
          )
        }
      </Show>
      <button type="button" onClick={again}>
        Verify again
      </button>
    </section>
  );
}

function Events({ session }: { session: Session }) {
  const [filters, setFilters] = useState<Filters>({});
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const [loaded] = useLoad(() => {
    const query = new URLSearchParams({ limit: '50' });
    for (const [key, value] of Object.entries(filters)) if (value) query.set(key, key === 'since' || key === 'until' ? asRfc3339(value) : value);
    if (cursor) query.set('cursor', cursor);
    return callJson<{ events: AuditEntry[]; next?: string }>(`/admin/v1/audit?${query.toString()}`, [readScope(session)]);
  }, [JSON.stringify(filters), cursor]);
  const apply = (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const chosen: Filters = {};
    for (const key of FILTERS) {
      const value = String(form.get(key) ?? '').trim();
      if (value) chosen[key] = value;
    }
    setCursors([undefined]);
    setFilters(chosen);
  };
  return (
    <section aria-labelledby="events-heading">
      <h2 id="events-heading">Events</h2>
      <form class="filters" onSubmit={apply}>
        <label for="f-type">Type</label>
        <input id="f-type" name="type" placeholder="tag.moved" />
        <label for="f-repository">Repository</label>
        <input id="f-repository" name="repository" />
        <label for="f-actor">Actor</label>
        <input id="f-actor" name="actor" />
        <label for="f-since">Since</label>
        <input id="f-since" name="since" type="datetime-local" />
        <label for="f-until">Until</label>
        <input id="f-until" name="until" type="datetime-local" />
        <button type="submit">Filter</button>
      </form>
      <Show loaded={loaded}>
        {({ events, next }) => (
          <>
            <table class="events">
              <caption>Newest first</caption>
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Time</th>
                  <th scope="col">Type</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Image</th>
                  <th scope="col">Outcome</th>
                </tr>
              </thead>
              <tbody>
                {events.map((entry) => (
                  <tr key={entry.seq}>
                    <td>{entry.seq}</td>
                    <td>
                      <Time at={entry.time} />
                    </td>
                    <td>{entry.type}</td>
                    <td>
                      {entry.actor ?? '—'}
                      <div class="small">{[entry.actorKind, entry.clientIp].filter(Boolean).join(' · ')}</div>
                    </td>
                    <td>
                      {entry.repository ? `${entry.repository}${entry.tag ? `:${entry.tag}` : ''}` : '—'}
                      <div class="small">
                        {entry.oldDigest ? `${shortDigest(entry.oldDigest)} → ` : ''}
                        {entry.newDigest ? shortDigest(entry.newDigest) : ''}
                      </div>
                    </td>
                    <td>
                      {entry.outcome ?? ''}
                      <div class="small">{entry.reason ?? ''}</div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {events.length === 0 && <p class="muted">No events match.</p>}
            <Pager cursors={cursors} next={next} onChange={setCursors} labels={['Newer', 'Older']} />
          </>
        )}
      </Show>
    </section>
  );
}

/** Every page of the report as one CSV file (the header once), saved by the browser. */
async function exportCsv(session: Session): Promise<void> {
  const parts: string[] = [];
  let cursor: string | undefined;
  do {
    const query = new URLSearchParams({ format: 'csv', limit: '1000', ...(cursor ? { cursor } : {}) });
    const response = await call(`/admin/v1/signatures/report?${query.toString()}`, [readScope(session)]);
    const text = await response.text();
    parts.push(parts.length === 0 ? text : text.slice(text.indexOf('\r\n') + 2));
    cursor = /<[^>]*[?&]cursor=([^&>]+)[^>]*>;\s*rel="next"/.exec(response.headers.get('Link') ?? '')?.[1];
    cursor = cursor === undefined ? undefined : decodeURIComponent(cursor);
  } while (cursor !== undefined);
  const url = URL.createObjectURL(new Blob(parts, { type: 'text/csv' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = `signature-report-${new Date().toISOString().slice(0, 10)}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function SignatureReport({ session }: { session: Session }) {
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const [exporting, setExporting] = useState<string | undefined>();
  const [loaded] = useLoad(() => {
    const query = new URLSearchParams({ limit: '50', ...(cursor ? { cursor } : {}) });
    return callJson<{ entries: ReportEntry[]; next?: string }>(`/admin/v1/signatures/report?${query.toString()}`, [readScope(session)]);
  }, [cursor]);
  return (
    <section aria-labelledby="report-heading">
      <h2 id="report-heading">Signature report</h2>
      <button
        type="button"
        onClick={() => {
          setExporting('Exporting…');
          exportCsv(session).then(
            () => setExporting(undefined),
            (error: Error) => setExporting(`Export failed: ${error.message}`),
          );
        }}
      >
        Export CSV
      </button>
      {exporting && <span role="status"> {exporting}</span>}
      <Show loaded={loaded}>
        {({ entries, next }) => (
          <>
            <table>
              <caption>Every tag, its signature status and the policy's verdict</caption>
              <thead>
                <tr>
                  <th scope="col">Image</th>
                  <th scope="col">Digest</th>
                  <th scope="col">Signature</th>
                  <th scope="col">Policy</th>
                </tr>
              </thead>
              <tbody>
                {entries.map((entry) => (
                  <tr key={`${entry.repository}:${entry.tag}`}>
                    <td>
                      {entry.repository}:{entry.tag}
                    </td>
                    <td>
                      <code>{shortDigest(entry.digest)}</code>
                    </td>
                    <td>
                      <SignatureBadge status={entry.status} />
                      <div class="small">{entry.status === 'valid' ? `by ${entry.signer ?? '?'}` : entry.reason}</div>
                    </td>
                    <td>
                      <VerdictBadge verdict={entry.verdict} />
                      <div class="small">{entry.policy ?? 'no policy'}</div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <Pager cursors={cursors} next={next} onChange={setCursors} />
          </>
        )}
      </Show>
    </section>
  );
}

export function Audit({ session }: { session: Session }) {
  if (!session.admin && !session.auditor) return <main><p class="error">Reading the audit log needs administrator or auditor rights.</p></main>;
  return (
    <main>
      <h1>Audit</h1>
      <ChainStatus session={session} />
      <Events session={session} />
      <SignatureReport session={session} />
    </main>
  );
}
