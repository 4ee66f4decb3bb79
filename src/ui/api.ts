// The console's only way to the server: its session (a cookie the page cannot read, plus the
// CSRF token the session endpoint gives), and bearer tokens for the same registry and admin APIs
// the CLI calls. Tokens are asked for per set of scopes and kept until shortly before they expire.

export interface Session {
  user: string;
  provider: string;
  groups: string[];
  admin: boolean;
  auditor: boolean;
  expiresAt: string;
  csrfToken: string;
}

/** A failed call: its status and the server's own words. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/** The session is over (expired, signed out elsewhere, account changed): sign in again. */
export class SessionEnded extends ApiError {}

let session: Session | undefined;
const tokens = new Map<string, { token: string; until: number }>();
const endedListeners = new Set<() => void>();

export function onSessionEnded(listener: () => void): () => void {
  endedListeners.add(listener);
  return () => endedListeners.delete(listener);
}

function ended(): never {
  session = undefined;
  tokens.clear();
  for (const listener of endedListeners) listener();
  throw new SessionEnded(401, 'Your session has ended. Sign in again.');
}

/** The message of an error body: OCI `errors`, an RFC 9457 problem, or the status text. */
async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let code: string | undefined;
  try {
    const body = (await response.json()) as { errors?: { code?: string; message?: string }[]; detail?: string; title?: string };
    const first = body.errors?.[0];
    if (first?.message) {
      message = first.message;
      code = first.code;
    } else if (body.detail) message = body.detail;
  } catch {
    // not JSON: keep the status
  }
  return new ApiError(response.status, message, code);
}

async function sessionCall(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (session) headers['X-CSRF-Token'] = session.csrfToken;
  return fetch(path, { method, headers, credentials: 'same-origin', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
}

export async function signIn(username: string, password: string): Promise<Session> {
  const response = await sessionCall('POST', '/ui/api/session', { username, password });
  if (!response.ok) throw await errorOf(response);
  session = (await response.json()) as Session;
  tokens.clear();
  return session;
}

/** The current session, or undefined when nobody is signed in. */
export async function currentSession(): Promise<Session | undefined> {
  const response = await sessionCall('GET', '/ui/api/session');
  if (response.status === 401) return (session = undefined);
  if (!response.ok) throw await errorOf(response);
  session = (await response.json()) as Session;
  return session;
}

export async function signOut(): Promise<void> {
  try {
    await sessionCall('DELETE', '/ui/api/session');
  } finally {
    session = undefined;
    tokens.clear();
  }
}

async function tokenFor(scopes: readonly string[]): Promise<string> {
  const key = [...scopes].sort().join(' ');
  const held = tokens.get(key);
  if (held && held.until > Date.now()) return held.token;
  let response = await sessionCall('POST', '/ui/api/token', { scope: scopes });
  if (response.status === 403 && session) {
    // Signed in again in another tab: this tab's CSRF token is the old session's. Read it anew, once.
    if (await currentSession()) response = await sessionCall('POST', '/ui/api/token', { scope: scopes });
  }
  if (response.status === 401 || !session) ended();
  if (!response.ok) throw await errorOf(response);
  const issued = (await response.json()) as { token: string; expiresIn: number };
  // Kept no longer than the session: once it ends, the next call finds out and asks to sign in.
  const sessionEnds = session ? Date.parse(session.expiresAt) : Date.now();
  tokens.set(key, { token: issued.token, until: Math.min(Date.now() + Math.max(0, issued.expiresIn - 15) * 1000, sessionEnds) });
  return issued.token;
}

export interface CallOptions {
  method?: string;
  accept?: string;
  body?: unknown;
  /** the body as text with this type (YAML, say) */
  contentType?: string;
  /** apply only to this version of what is replaced (If-Match) */
  ifMatch?: string;
}

/** A call to the registry or admin API with a token for `scopes`; the raw response when it succeeded. */
export async function call(path: string, scopes: readonly string[], options: CallOptions = {}): Promise<Response> {
  const token = await tokenFor(scopes);
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (options.accept) headers.Accept = options.accept;
  if (options.ifMatch) headers['If-Match'] = `"${options.ifMatch}"`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['Content-Type'] = options.contentType ?? 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  const response = await fetch(path, { method: options.method ?? 'GET', headers, ...(body !== undefined ? { body } : {}) });
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function callJson<T>(path: string, scopes: readonly string[], options: CallOptions = {}): Promise<T> {
  return (await (await call(path, scopes, options)).json()) as T;
}

/** Scopes, spelled as the token endpoint takes them. */
export const scopes = {
  pull: (repository: string) => `repository:${repository}:pull`,
  catalog: 'registry:catalog:*',
  admin: 'registry:admin:*',
  audit: 'registry:audit:*',
};

/** The reading scope of an administrator or an auditor. */
export const readScope = (who: Session): string => (who.admin ? scopes.admin : scopes.audit);

/** Path segments of a repository name, each encoded. */
export const repositoryPath = (name: string): string => name.split('/').map(encodeURIComponent).join('/');
