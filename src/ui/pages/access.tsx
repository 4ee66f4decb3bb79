// Access administration: the access rules and the trust policies as YAML, changed through the
// same dry run as `policy apply` / `trust apply` (a diff to read before applying); "explain
// access" for a user or robot on a repository; robot accounts. Auditors see everything here
// read-only; the server refuses their changes anyway.
import { useState } from 'preact/hooks';
import { parse, stringify } from 'yaml';
import { ApiError, call, callJson, readScope, scopes, type Session } from '../api.js';
import { Copyable, Failure, Show, Time, useLoad } from '../components.js';

interface Rule {
  id?: number;
  subject: string;
  repositories: string;
  actions: string[];
}

interface Diff {
  added: unknown[];
  removed: unknown[];
  changed: unknown[];
  /** the version of the set this difference is against: Apply applies only to it */
  basedOn: string;
  warnings?: string[];
}

/** An item of a diff as YAML, every line marked with `sign` (+ added, - removed, ~ before, → after). */
const marked = (sign: string, value: unknown): string =>
  (typeof value === 'string' ? value : stringify(value, { lineWidth: 0 }).trimEnd())
    .split('\n')
    .map((line) => `${sign} ${line}`)
    .join('\n');

function DiffView({ diff }: { diff: Diff }) {
  const empty = diff.added.length + diff.removed.length + diff.changed.length === 0;
  return (
    <div class="diff" data-testid="diff" aria-live="polite">
      {empty && <p>No changes: what you wrote is what is in force.</p>}
      {diff.removed.map((item, index) => (
        <pre key={`r${index}`} class="removed">
          {marked('-', item)}
        </pre>
      ))}
      {diff.added.map((item, index) => (
        <pre key={`a${index}`} class="added">
          {marked('+', item)}
        </pre>
      ))}
      {diff.changed.map((item, index) => {
        const pair = item as { before?: unknown; after?: unknown };
        return pair.before !== undefined ? (
          <pre key={`c${index}`} class="changed">
            {`${marked('~', pair.before)}\n${marked('→', pair.after)}`}
          </pre>
        ) : (
          <pre key={`c${index}`} class="changed">{marked('~', item)}</pre>
        );
      })}
      {diff.warnings?.map((warning) => (
        <p key={warning} class="notice">
          {warning}
        </p>
      ))}
    </div>
  );
}

/** What the parent shows once a change is applied (the editor itself is then read afresh). */
function AppliedNotice({ diff }: { diff: Diff | undefined }) {
  if (!diff) return null;
  return (
    <p class="ok" role="status">
      Applied: {diff.added.length} added, {diff.removed.length} removed, {diff.changed.length} changed.
    </p>
  );
}

/**
 * A YAML document edited in place: Preview sends it as a dry run and shows the difference;
 * Apply sends the same document for real.
 */
function YamlEditor({ label, text, editable, send, onApplied }: { label: string; text: string; editable: boolean; send: (document: unknown, dryRun: boolean, basedOn?: string) => Promise<Diff>; onApplied: (diff: Diff) => void }) {
  const [draft, setDraft] = useState(text);
  const [preview, setPreview] = useState<{ diff: Diff; of: string } | undefined>();
  const [message, setMessage] = useState<{ kind: 'error' | 'ok'; text: string } | undefined>();
  const run = async (dryRun: boolean) => {
    setMessage(undefined);
    let document: unknown;
    try {
      document = parse(draft);
    } catch (error) {
      setMessage({ kind: 'error', text: `Not valid YAML: ${(error as Error).message}` });
      return;
    }
    try {
      const diff = await send(document, dryRun, dryRun ? undefined : preview?.diff.basedOn);
      if (dryRun) setPreview({ diff, of: draft });
      else {
        setPreview(undefined);
        onApplied(diff);
      }
    } catch (error) {
      const conflict = error instanceof ApiError && error.status === 412;
      if (conflict) setPreview(undefined);
      setMessage({ kind: 'error', text: conflict ? `Not applied: ${error.message}. Preview again to see the difference against what is in force now.` : (error as Error).message });
    }
  };
  const id = label.toLowerCase().replace(/\W+/g, '-');
  return (
    <div class="yaml-editor">
      <label for={id}>{label}</label>
      <textarea id={id} value={draft} readOnly={!editable} rows={Math.min(30, Math.max(8, draft.split('\n').length + 1))} spellcheck={false} onInput={(event) => setDraft((event.currentTarget as HTMLTextAreaElement).value)} />
      {editable ? (
        <div class="actions">
          <button type="button" onClick={() => void run(true)}>
            Preview changes
          </button>
          <button type="button" class="primary" disabled={!preview || preview.of !== draft} onClick={() => void run(false)}>
            Apply
          </button>
        </div>
      ) : (
        <p class="small">Read-only: changes need an administrator.</p>
      )}
      {preview && preview.of === draft && <DiffView diff={preview.diff} />}
      {message && (
        <p class={message.kind === 'error' ? 'error' : 'ok'} role={message.kind === 'error' ? 'alert' : 'status'}>
          {message.text}
        </p>
      )}
    </div>
  );
}

function Rules({ session }: { session: Session }) {
  const [loaded, reload] = useLoad(() => callJson<{ rules: Rule[] }>('/admin/v1/rules', [readScope(session)]), []);
  const [applied, setApplied] = useState<Diff | undefined>();
  return (
    <section aria-labelledby="rules-heading">
      <h2 id="rules-heading">Access rules</h2>
      <AppliedNotice diff={applied} />
      <Show loaded={loaded}>
        {({ rules }) => (
          <YamlEditor
            key={JSON.stringify(rules)}
            label="Rules (YAML, as policy apply takes them)"
            text={stringify({ rules: rules.map(({ id: _id, ...rule }) => rule) })}
            editable={session.admin}
            send={async (document, dryRun, basedOn) => {
              return callJson<Diff>(`/admin/v1/rules?dryRun=${dryRun}`, [scopes.admin], { method: 'PUT', body: document, ...(basedOn ? { ifMatch: basedOn } : {}) });
            }}
            onApplied={(diff) => {
              setApplied(diff);
              reload();
            }}
          />
        )}
      </Show>
    </section>
  );
}

function TrustPolicies({ session }: { session: Session }) {
  const [loaded, reload] = useLoad(async () => (await call('/admin/v1/trust?format=yaml', [readScope(session)])).text(), []);
  const [applied, setApplied] = useState<Diff | undefined>();
  return (
    <section aria-labelledby="trust-heading">
      <h2 id="trust-heading">Trust policies</h2>
      <AppliedNotice diff={applied} />
      <Show loaded={loaded}>
        {(text) => (
          <YamlEditor
            key={text}
            label="Trust policies (YAML, as trust apply takes them)"
            text={text}
            editable={session.admin}
            send={async (document, dryRun, basedOn) => {
              return callJson<Diff>(`/admin/v1/trust?dryRun=${dryRun}`, [scopes.admin], { method: 'PUT', body: document, ...(basedOn ? { ifMatch: basedOn } : {}) });
            }}
            onApplied={(diff) => {
              setApplied(diff);
              reload();
            }}
          />
        )}
      </Show>
    </section>
  );
}

interface Explained {
  subject: string;
  repository: string;
  admin: boolean;
  groups: string[];
  allowed: string[];
  rules: Rule[];
}

function ExplainAccess({ session }: { session: Session }) {
  const [asked, setAsked] = useState<{ subject: string; repository: string } | undefined>();
  const [loaded] = useLoad(async () => {
    if (!asked) return undefined;
    const query = new URLSearchParams(asked);
    return callJson<Explained>(`/admin/v1/access?${query.toString()}`, [readScope(session)]);
  }, [asked?.subject, asked?.repository]);
  return (
    <section aria-labelledby="explain-heading">
      <h2 id="explain-heading">Explain access</h2>
      <form
        class="filters"
        onSubmit={(event) => {
          event.preventDefault();
          const form = new FormData(event.currentTarget as HTMLFormElement);
          setAsked({ subject: String(form.get('subject') ?? '').trim(), repository: String(form.get('repository') ?? '').trim() });
        }}
      >
        <label for="x-subject">User or robot$name</label>
        <input id="x-subject" name="subject" required />
        <label for="x-repository">Repository</label>
        <input id="x-repository" name="repository" required />
        <button type="submit">Explain</button>
      </form>
      {asked && (
        <Show loaded={loaded}>
          {(explained) =>
            explained && (
              <div data-testid="explanation">
                <p>
                  <strong>{explained.subject}</strong> may {explained.allowed.length > 0 ? explained.allowed.join(', ') : 'do nothing'} on <strong>{explained.repository}</strong>
                  {explained.admin ? ' (administrator)' : ''}.
                </p>
                <p class="small">Groups: {explained.groups.join(', ') || 'none'}</p>
                {explained.rules.length > 0 ? (
                  <ul>
                    {explained.rules.map((rule) => (
                      <li key={rule.id}>
                        rule {rule.id}: {rule.subject} → {rule.repositories}: {rule.actions.join(', ')}
                      </li>
                    ))}
                  </ul>
                ) : (
                  <p class="small">No rule grants anything here: denied by default.</p>
                )}
              </div>
            )
          }
        </Show>
      )}
    </section>
  );
}

interface Robot {
  name: string;
  description?: string;
  createdBy: string;
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
}

function Robots({ session }: { session: Session }) {
  const [loaded, reload] = useLoad(() => callJson<{ robots: Robot[] }>('/admin/v1/robots', [readScope(session)]), []);
  const [created, setCreated] = useState<{ username: string; secret: string } | undefined>();
  const [error, setError] = useState<Error | undefined>();
  const create = async (event: Event) => {
    event.preventDefault();
    const formElement = event.currentTarget as HTMLFormElement;
    const form = new FormData(formElement);
    setError(undefined);
    setCreated(undefined);
    try {
      const expires = String(form.get('expiresAt') ?? '');
      const rulesText = String(form.get('rules') ?? '').trim();
      const rules = rulesText === '' ? [] : (parse(rulesText) as unknown);
      const body = {
        name: String(form.get('name') ?? ''),
        ...(String(form.get('description') ?? '') ? { description: String(form.get('description')) } : {}),
        ...(expires ? { expiresAt: new Date(expires).toISOString() } : {}),
        rules,
      };
      const answer = await callJson<{ username: string; secret: string }>('/admin/v1/robots', [scopes.admin], { method: 'POST', body });
      setCreated(answer);
      formElement.reset();
      reload();
    } catch (failure) {
      setError(failure as Error);
    }
  };
  const revoke = async (name: string) => {
    if (!window.confirm(`Revoke robot$${name}? Its secret stops working at once.`)) return;
    try {
      await call(`/admin/v1/robots/${encodeURIComponent(name)}`, [scopes.admin], { method: 'DELETE' });
      reload();
    } catch (failure) {
      setError(failure as Error);
    }
  };
  const now = Date.now();
  return (
    <section aria-labelledby="robots-heading">
      <h2 id="robots-heading">Robot accounts</h2>
      <Show loaded={loaded}>
        {({ robots }) => (
          <table>
            <caption>Robots log in as robot$name with their secret</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Description</th>
                <th scope="col">Created</th>
                <th scope="col">Expires</th>
                <th scope="col">State</th>
                {session.admin && <th scope="col">Action</th>}
              </tr>
            </thead>
            <tbody>
              {robots.map((robot) => {
                const state = robot.revokedAt !== undefined ? 'revoked' : robot.expiresAt !== undefined && robot.expiresAt <= now ? 'expired' : 'active';
                return (
                  <tr key={robot.name}>
                    <th scope="row">robot${robot.name}</th>
                    <td>{robot.description ?? ''}</td>
                    <td>
                      <Time at={robot.createdAt} /> <span class="small">by {robot.createdBy}</span>
                    </td>
                    <td>{robot.expiresAt === undefined ? 'never' : <Time at={robot.expiresAt} />}</td>
                    <td>{state}</td>
                    {session.admin && (
                      <td>
                        {state !== 'revoked' && (
                          <button type="button" onClick={() => void revoke(robot.name)}>
                            Revoke
                          </button>
                        )}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </Show>
      {created && (
        <div class="secret" role="status">
          <p>
            Created <strong>{created.username}</strong>. Its secret is shown only now:
          </p>
          <Copyable value={created.secret} label="the robot's secret" />
        </div>
      )}
      {error && <Failure error={error} />}
      {session.admin && (
        <form class="robot-form" onSubmit={create}>
          <h3>New robot</h3>
          <label for="r-name">Name</label>
          <input id="r-name" name="name" required pattern="[a-z0-9][a-z0-9._-]*" />
          <label for="r-description">Description</label>
          <input id="r-description" name="description" />
          <label for="r-expires">Expires at</label>
          <input id="r-expires" name="expiresAt" type="datetime-local" />
          <label for="r-rules">Rules (YAML list of repositories and actions)</label>
          <textarea id="r-rules" name="rules" rows={4} spellcheck={false} placeholder={'- repositories: ci/**\n  actions: [pull, push]'} />
          <button type="submit" class="primary">
            Create robot
          </button>
        </form>
      )}
    </section>
  );
}

const TABS = ['Rules', 'Trust policies', 'Explain access', 'Robots'] as const;

const tabId = (name: string): string => name.toLowerCase().replace(/\W+/g, '-');

export function Access({ session }: { session: Session }) {
  const [tab, setTab] = useState<(typeof TABS)[number]>('Rules');
  // The tabs pattern: one tab in the Tab order, the arrow keys (and Home, End) move between them.
  const moveBetweenTabs = (event: KeyboardEvent) => {
    const at = TABS.indexOf(tab);
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const chosen = TABS[(next + TABS.length) % TABS.length] ?? 'Rules';
    setTab(chosen);
    document.getElementById(`tab-${tabId(chosen)}`)?.focus();
  };
  if (!session.admin && !session.auditor) return <main><p class="error">Access administration needs administrator or auditor rights.</p></main>;
  return (
    <main>
      <h1>Access</h1>
      <div role="tablist" aria-label="Access administration" class="tabs" onKeyDown={moveBetweenTabs}>
        {TABS.map((name) => (
          <button
            key={name}
            id={`tab-${tabId(name)}`}
            type="button"
            role="tab"
            aria-selected={tab === name}
            aria-controls="access-panel"
            tabIndex={tab === name ? 0 : -1}
            onClick={() => setTab(name)}
          >
            {name}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="access-panel" aria-labelledby={`tab-${tabId(tab)}`}>
        {tab === 'Rules' && <Rules session={session} />}
        {tab === 'Trust policies' && <TrustPolicies session={session} />}
        {tab === 'Explain access' && <ExplainAccess session={session} />}
        {tab === 'Robots' && <Robots session={session} />}
      </div>
    </main>
  );
}
