// What the HTTP layer keeps per request.
import type Koa from 'koa';
import type { Logger } from 'pino';
import type { ResourceAccess } from '../auth/tokens/access.js';

export interface RequestState {
  requestId: string;
  log: Logger;
  /** name of the matched route, for logs and metrics */
  route?: string;
  /** validated repository name, when the route has one */
  repository?: string;
  /** decoded path parameters of the matched route */
  params: Record<string, string>;
  /** request body bytes consumed by the handler */
  bytesIn?: number;
  /** the verified bearer token's subject and access claim */
  auth?: { subject: string; access: readonly ResourceAccess[] };
  /** who the request acts for, for the request log: the bearer token's subject, or who logged in at /auth/token */
  principal?: { kind: 'user' | 'robot' | 'anonymous'; subject: string };
}

export type AppContext = Koa.ParameterizedContext<RequestState>;
export type Handler = (ctx: AppContext) => Promise<void>;

/**
 * Sets status, headers and an optional body in one place, so handlers read as the spec does.
 * Headers are applied last, so an explicit Content-Length survives (HEAD responses rely on it).
 */
export function reply(
  ctx: AppContext,
  status: number,
  headers: Record<string, string | number> = {},
  body?: string | Buffer | NodeJS.ReadableStream,
): void {
  ctx.body = body ?? null;
  ctx.status = status;
  for (const [name, value] of Object.entries(headers)) ctx.set(name, String(value));
}

export function replyJson(ctx: AppContext, status: number, value: unknown, headers: Record<string, string> = {}, type = 'application/json'): void {
  const body = Buffer.from(JSON.stringify(value));
  reply(ctx, status, { 'Content-Type': type, 'Content-Length': body.length, ...headers }, body);
}
