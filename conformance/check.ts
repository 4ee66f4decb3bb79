// Check bookkeeping and the expectations checks are written with.
//
// A check is a named async function; it passes unless it throws. The expect*
// helpers throw a CheckFailure whose message says what the spec wanted and
// what the registry did, which becomes the check's detail in the report.
import type { Content, RegistryClient, RegistryResponse } from './client.js';

export type Workflow = 'pull' | 'push' | 'discovery' | 'management';

export const WORKFLOWS: readonly Workflow[] = ['pull', 'push', 'discovery', 'management'];

export interface CheckResult {
  workflow: Workflow;
  check: string;
  passed: boolean;
  /** Why it failed, or a note on how it passed. */
  detail: string;
}

export class CheckFailure extends Error {
  override name = 'CheckFailure';
}

/** Thrown by Checks.setup after recording the failure; ends the current section. */
class SetupFailed extends Error {
  override name = 'SetupFailed';
}

export function fail(message: string): never {
  throw new CheckFailure(message);
}

function errorMessage(err: unknown): string {
  if (err instanceof CheckFailure) return err.message;
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.name}: ${err.message}${cause}`;
  }
  return String(err);
}

export class Checks {
  readonly results: CheckResult[] = [];

  constructor(
    readonly workflow: Workflow,
    private readonly onResult?: (result: CheckResult) => void,
  ) {}

  /** Runs one check. A returned string becomes the detail of a pass. */
  async check(name: string, body: () => Promise<string | void>): Promise<boolean> {
    try {
      const note = await body();
      this.record(name, true, note ?? '');
      return true;
    } catch (err) {
      this.record(name, false, errorMessage(err));
      return false;
    }
  }

  /**
   * Runs a setup step (pushing the content some checks need). A failure is
   * recorded as a failed check "setup: <name>" and ends the enclosing section.
   */
  async setup<T>(name: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      this.record(`setup: ${name}`, false, errorMessage(err));
      throw new SetupFailed(name);
    }
  }

  /** A group of setup steps and checks; a failed setup skips only the rest of this group. */
  async section(body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      if (err instanceof SetupFailed) return;
      this.record('unexpected error', false, errorMessage(err));
    }
  }

  private record(check: string, passed: boolean, detail: string): void {
    const result: CheckResult = { workflow: this.workflow, check, passed, detail };
    this.results.push(result);
    this.onResult?.(result);
  }
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function bodySnippet(res: RegistryResponse): string {
  const text = res.text().replace(/\s+/g, ' ').trim();
  if (text === '') return '';
  return ` (body: ${text.length > 160 ? `${text.slice(0, 160)}...` : text})`;
}

export function expectStatus(res: RegistryResponse, expected: number | readonly number[]): void {
  const allowed = typeof expected === 'number' ? [expected] : expected;
  if (!allowed.includes(res.status)) fail(`${res.describe()}, expected ${allowed.join(' or ')}${bodySnippet(res)}`);
}

export function expectHeader(res: RegistryResponse, name: string): string {
  const value = res.header(name);
  if (value === undefined || value === '') fail(`${res.describe()}: no ${name} header`);
  return value;
}

export function expectHeaderValue(res: RegistryResponse, name: string, expected: string): void {
  const value = expectHeader(res, name);
  if (value !== expected) fail(`${res.describe()}: ${name} is "${value}", expected "${expected}"`);
}

/** Compares the media type part of Content-Type, ignoring parameters such as charset. */
export function expectContentType(res: RegistryResponse, mediaType: string): void {
  const value = expectHeader(res, 'Content-Type');
  const base = value.split(';')[0]?.trim().toLowerCase();
  if (base !== mediaType.toLowerCase()) fail(`${res.describe()}: Content-Type is "${value}", expected "${mediaType}"`);
}

export function expectDigestHeader(res: RegistryResponse, digest: string): void {
  expectHeaderValue(res, 'Docker-Content-Digest', digest);
}

/** When the optional header is present, it must carry this digest. */
export function expectDigestHeaderIfPresent(res: RegistryResponse, digest: string): void {
  if (res.header('Docker-Content-Digest') !== undefined) expectDigestHeader(res, digest);
}

export function expectEqual(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: got ${a}, expected ${e}`);
}

export function expectBytes(res: RegistryResponse, expected: Uint8Array): void {
  if (!res.body.equals(expected)) {
    fail(`${res.describe()}: body differs from what was pushed (${res.body.length} bytes, expected ${expected.length})`);
  }
}

export function parseJson(res: RegistryResponse): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(res.text());
  } catch {
    fail(`${res.describe()}: body is not JSON${bodySnippet(res)}`);
  }
  if (!isRecord(value)) fail(`${res.describe()}: body is not a JSON object${bodySnippet(res)}`);
  return value;
}

export function stringList(obj: Record<string, unknown>, field: string, what: string): string[] {
  const value = obj[field];
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    fail(`${what}: "${field}" is not a list of strings`);
  }
  return value;
}

export function recordList(obj: Record<string, unknown>, field: string, what: string): Record<string, unknown>[] {
  const value = obj[field];
  if (!Array.isArray(value) || !value.every(isRecord)) fail(`${what}: "${field}" is not a list of objects`);
  return value;
}

/**
 * Spec error shape: a 4xx whose JSON body is {"errors":[{"code","message","detail"}]}
 * with `code` made of capitals and underscores (`message` and `detail` optional).
 * When `code` is given, one of the errors must carry it (or one of them).
 */
export function expectError(res: RegistryResponse, status: number, code?: string | readonly string[]): void {
  expectStatus(res, status);
  const body = parseJson(res);
  const errors = recordList(body, 'errors', `${res.describe()} error body`);
  if (errors.length === 0) fail(`${res.describe()}: "errors" is empty`);
  for (const error of errors) {
    if (typeof error.code !== 'string' || !/^[A-Z_]+$/.test(error.code)) {
      fail(`${res.describe()}: error code ${JSON.stringify(error.code)} is not an upper-case identifier`);
    }
    if (error.message !== undefined && typeof error.message !== 'string') {
      fail(`${res.describe()}: error message is not a string`);
    }
  }
  if (code === undefined) return;
  const wanted = typeof code === 'string' ? [code] : code;
  const got = errors.map((e) => String(e.code));
  if (!got.some((c) => wanted.includes(c))) {
    fail(`${res.describe()}: error code ${got.join(', ')}, expected ${wanted.join(' or ')}`);
  }
}

/** A HEAD answer carries headers only. */
export function expectEmptyBody(res: RegistryResponse): void {
  if (res.body.length > 0) fail(`${res.describe()}: HEAD response has a ${res.body.length}-byte body`);
}

/**
 * A manifest read: 200, Docker-Content-Digest of the manifest, Content-Type equal
 * to its mediaType; GET returns the bytes exactly as pushed, HEAD only headers
 * with the stored Content-Length.
 */
export function expectManifest(res: RegistryResponse, manifest: Content): void {
  expectStatus(res, 200);
  expectDigestHeader(res, manifest.digest);
  expectContentType(res, manifest.mediaType);
  expectPayload(res, manifest);
}

/** A blob read: 200, Docker-Content-Digest if sent, then the bytes (GET) or length (HEAD). */
export function expectBlob(res: RegistryResponse, blob: Content): void {
  expectStatus(res, 200);
  expectDigestHeaderIfPresent(res, blob.digest);
  expectPayload(res, blob);
}

function expectPayload(res: RegistryResponse, pushed: Content): void {
  if (res.method === 'HEAD') {
    expectHeaderValue(res, 'Content-Length', String(pushed.size));
    expectEmptyBody(res);
  } else {
    expectBytes(res, pushed.bytes);
  }
}

/** What every workflow receives: a client, its own repository namespace, and the check recorder. */
export interface WorkflowContext {
  client: RegistryClient;
  /** e.g. conformance/3f9a1c2b7d; the workflow creates repositories below it. */
  namespace: string;
  t: Checks;
}
