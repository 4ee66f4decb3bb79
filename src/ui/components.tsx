// Small pieces every page uses: loading and error states, times, sizes, digests, status badges.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from './api.js';

export type Loaded<T> = { state: 'loading' } | { state: 'failed'; error: ApiError | Error } | { state: 'ready'; value: T };

/** Runs `load` whenever a dependency changes; the latest run wins. */
export function useLoad<T>(load: () => Promise<T>, dependencies: unknown[]): [Loaded<T>, () => void] {
  const [loaded, setLoaded] = useState<Loaded<T>>({ state: 'loading' });
  const [round, setRound] = useState(0);
  useEffect(() => {
    let current = true;
    setLoaded({ state: 'loading' });
    load().then(
      (value) => current && setLoaded({ state: 'ready', value }),
      (error: unknown) => current && setLoaded({ state: 'failed', error: error instanceof Error ? error : new Error(String(error)) }),
    );
    return () => {
      current = false;
    };
    // `load` is a new closure each render: the dependencies say when to run it again.
  }, [...dependencies, round]);
  return [loaded, () => setRound((n) => n + 1)];
}

export function Failure({ error }: { error: Error }) {
  const denied = error instanceof ApiError && (error.status === 401 || error.status === 403);
  return (
    <p class="error" role="alert">
      {denied ? 'You may not see this: ' : 'Something went wrong: '}
      {error.message}
    </p>
  );
}

export function Show<T>({ loaded, children }: { loaded: Loaded<T>; children: (value: T) => ComponentChildren }) {
  if (loaded.state === 'loading') return <p class="loading">Loading…</p>;
  if (loaded.state === 'failed') return <Failure error={loaded.error} />;
  return <>{children(loaded.value)}</>;
}

export function Time({ at }: { at: string | number | undefined }) {
  if (at === undefined) return <span class="muted">—</span>;
  const date = new Date(at);
  return <time dateTime={date.toISOString()}>{date.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z')}</time>;
}

export function formatSize(bytes: number | undefined): string {
  if (bytes === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export const shortDigest = (digest: string): string => digest.replace(/^(sha256:|sha512:)(.{12}).*$/, '$1$2…');

/** A value with a button that copies it. */
export function Copyable({ value, label }: { value: string; label: string }) {
  const [copied, setCopied] = useState(false);
  const copy = () => {
    void navigator.clipboard?.writeText(value).then(() => {
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    });
  };
  return (
    <span class="copyable">
      <code>{value}</code>
      <button type="button" onClick={copy} aria-label={`Copy ${label}`}>
        {copied ? 'Copied' : 'Copy'}
      </button>
    </span>
  );
}

const SIGNATURE_LABELS: Record<string, string> = { valid: 'verified', invalid: 'failed', none: 'unsigned' };

export function SignatureBadge({ status }: { status: string }) {
  return <span class={`badge sig-${status}`}>{SIGNATURE_LABELS[status] ?? status}</span>;
}

const VERDICT_LABELS: Record<string, string> = { served: 'served', 'served-unsatisfied': 'served (recorded)', refused: 'refused' };

export function VerdictBadge({ verdict }: { verdict: string }) {
  return <span class={`badge verdict-${verdict}`}>{VERDICT_LABELS[verdict] ?? verdict}</span>;
}

/** A link to a console page with its query, every value encoded. */
export function pageLink(path: string, query: Record<string, string>): string {
  return `${path}?${new URLSearchParams(query).toString()}`;
}

/** Back and forward through pages: `cursors` are the starts of the pages seen so far, the last one shown. */
export function Pager<C>({ cursors, next, onChange, labels = ['Previous', 'Next'] }: { cursors: C[]; next: C | undefined; onChange: (cursors: C[]) => void; labels?: [string, string] }) {
  return (
    <div class="pager">
      <button type="button" disabled={cursors.length === 1} onClick={() => onChange(cursors.slice(0, -1))}>
        {labels[0]}
      </button>
      <button type="button" disabled={next === undefined} onClick={() => next !== undefined && onChange([...cursors, next])}>
        {labels[1]}
      </button>
    </div>
  );
}
