// Shared helpers for the end-to-end auth tests: the token endpoint, JWT inspection and forging,
// the admin API, WWW-Authenticate challenges, and local users made with the CLI.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac, sign, type KeyObject } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { backendEnvOf, CLI } from '../support/server.js';
import type { Credentials } from '../support/registry-client.js';

export const SERVICE = 'portcullis';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const basic = (credentials: Credentials): string =>
  `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;

export interface TokenResponse {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
  refresh_token?: string;
  scope?: string;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface Claims {
  iss: string;
  sub: string;
  aud: string | string[];
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: AccessEntry[];
}

export interface DecodedJwt {
  header: Record<string, unknown>;
  payload: Claims;
}

/** Decodes a compact JWS without verifying it (the tests only look inside). */
export function decodeJwt(token: string): DecodedJwt {
  const [header, payload, signature] = token.split('.');
  assert.ok(header && payload && signature !== undefined, `not a compact JWS: ${token.slice(0, 40)}`);
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Claims,
  };
}

export const accessOf = (token: string): AccessEntry[] => decodeJwt(token).payload.access;

export interface TokenRequest {
  credentials?: Credentials | undefined;
  scopes?: string[];
  /** Extra query parameters (service defaults to portcullis; pass service: '' to leave it out). */
  params?: Record<string, string>;
  headers?: Record<string, string>;
}

/** GET /auth/token, the way Docker asks: Basic credentials (or none) and repeated scope parameters. */
export async function requestToken(url: string, request: TokenRequest = {}): Promise<Response> {
  const query = new URLSearchParams();
  const params = { service: SERVICE, ...request.params };
  for (const [key, value] of Object.entries(params)) if (value !== '') query.append(key, value);
  for (const scope of request.scopes ?? []) query.append('scope', scope);
  const headers: Record<string, string> = { ...request.headers };
  if (request.credentials) headers.Authorization = basic(request.credentials);
  return fetch(`${url}/auth/token?${query.toString()}`, { headers });
}

/** A successful token response (asserts 200). */
export async function getToken(url: string, credentials: Credentials | undefined, scopes: string[] = [], params: Record<string, string> = {}): Promise<TokenResponse> {
  const response = await requestToken(url, { credentials, scopes, params });
  const text = await response.text();
  assert.equal(response.status, 200, `token request failed: ${response.status} ${text}`);
  return JSON.parse(text) as TokenResponse;
}

export async function tokenFor(url: string, credentials: Credentials | undefined, scopes: string[] = []): Promise<string> {
  return (await getToken(url, credentials, scopes)).token;
}

/** POST /auth/token with an OAuth2 form. */
export async function postToken(url: string, fields: Record<string, string | string[]>, contentType = 'application/x-www-form-urlencoded'): Promise<Response> {
  const form = new URLSearchParams();
  for (const [key, value] of Object.entries(fields)) {
    for (const item of Array.isArray(value) ? value : [value]) form.append(key, item);
  }
  return fetch(`${url}/auth/token`, { method: 'POST', headers: { 'Content-Type': contentType }, body: form.toString() });
}

/** A token carrying registry:admin:* for the bootstrap administrator. */
export async function adminToken(server: { url: string; admin: Credentials }): Promise<string> {
  const token = await tokenFor(server.url, server.admin, ['registry:admin:*']);
  assert.deepEqual(accessOf(token), [{ type: 'registry', name: 'admin', actions: ['*'] }]);
  return token;
}

export interface ApiResponse<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
  text: string;
}

/** One admin API call with a bearer token (or none); JSON in, JSON out. */
export async function api<T = Record<string, unknown>>(url: string, token: string | undefined, method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${url}${path}`, { method, headers, ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) });
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed as T, headers: response.headers, text };
}

/** The first OCI error code of a response body, or undefined. */
export function errorCode(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { errors?: { code?: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** Asserts a response's status and OCI error code, consuming the body; returns the body text. */
export async function expectStatus(response: Response, status: number, code?: string): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, `expected ${status}${code ? ` ${code}` : ''}, got ${response.status}: ${text}`);
  if (code !== undefined && text.length > 0) assert.equal(errorCode(text), code, text);
  return text;
}

/** The parameters of a `Bearer k="v",…` challenge; undefined when there is none. */
export function parseChallenge(header: string | null): Record<string, string> | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(.*)$/i.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const part of (match[1] as string).matchAll(/([a-z_]+)="([^"]*)"/gi)) params[part[1] as string] = part[2] as string;
  return params;
}

/** Creates a local user with the CLI, next to the running server (SQLite allows a second writer). */
export async function addUser(dataDir: string, username: string, password: string, admin = false): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [CLI, 'user', 'add', username, '--password-stdin', ...(admin ? ['--admin'] : [])],
      { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir, ...backendEnvOf(dataDir) }, timeout: 20_000 },
      (error, stdout, stderr) => (error ? reject(new Error(`user add ${username} failed: ${stderr || stdout || error.message}`)) : resolve()),
    );
    child.stdin?.end(`${password}\n`);
  });
}

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A compact ES256 JWS exactly as given (any header, any payload, any EC P-256 key): the forger's tool. */
export function signEs256(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

export function signHs256(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | Buffer): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

export function unsigned(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  return `${b64url(header)}.${b64url(payload)}.`;
}

/** Replaces a JWS payload, keeping the original header and signature. */
export function withPayload(token: string, payload: Record<string, unknown>): string {
  const [header, , signature] = token.split('.');
  return `${header ?? ''}.${b64url(payload)}.${signature ?? ''}`;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * A request from a chosen loopback source address (127.0.0.x): the server sees that address as
 * the client, so per-address throttling can be tested without one test disturbing another.
 */
export function requestFrom(localAddress: string, url: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers, localAddress, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}
