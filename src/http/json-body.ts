// Reading a small JSON object body (the admin API, the web console's session endpoints): the
// type must be JSON in UTF-8 without a Content-Encoding — which no HTML form can send, so a
// cross-site form post never gets this far — and the body at most `limit` bytes.
import getRawBody from 'raw-body';
import type { AppContext } from './context.js';
import { badRequest, HttpError } from './errors.js';

const unsupported = (message: string) => new HttpError('UNSUPPORTED', message, 415);

/** Accepts `application/json` and `application/…+json` in UTF-8, without a Content-Encoding. */
function requireJson(ctx: AppContext): void {
  const [mediaType = '', ...parameters] = ctx.get('Content-Type').split(';');
  const type = mediaType.trim().toLowerCase();
  if (type !== 'application/json' && !/^application\/[a-z0-9.+-]+\+json$/.test(type)) {
    throw unsupported(`send the request body as application/json (got ${JSON.stringify(type.slice(0, 80) || 'no Content-Type')})`);
  }
  const charset = parameters.map((p) => /^\s*charset\s*=\s*"?([^"]*)"?\s*$/i.exec(p)?.[1]).find((value) => value !== undefined);
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) throw unsupported('the request body must be UTF-8');
  const encoding = ctx.get('Content-Encoding').trim().toLowerCase();
  if (encoding !== '' && encoding !== 'identity') throw unsupported(`Content-Encoding ${JSON.stringify(encoding.slice(0, 40))} is not supported`);
}

/** The body as a JSON object; raw-body's own errors (too large, aborted) pass through. */
export async function readJsonObject(ctx: AppContext, limit: number): Promise<Record<string, unknown>> {
  requireJson(ctx);
  const text = (await getRawBody(ctx.req, { limit, encoding: 'utf8' })) as string;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw badRequest(`request body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('request body must be a JSON object');
  return value as Record<string, unknown>;
}
