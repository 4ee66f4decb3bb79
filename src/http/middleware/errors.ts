// Turns every failure of a request into an OCI error body, through the one mapping in ../errors.ts.
import type { Logger } from 'pino';
import { DatabaseUnavailableError } from '../../metadata/errors.js';
import { BackendUnavailableError } from '../../registry/errors.js';
import { replyJson, type AppContext } from '../context.js';
import { responseOf } from '../errors.js';

export function errorResponses(log: Logger) {
  return async (ctx: AppContext, next: () => Promise<void>): Promise<void> => {
    try {
      await next();
    } catch (thrown) {
      const requestLog = ctx.state.log ?? log;
      let response = responseOf(thrown);
      if (!response) {
        requestLog.error({ err: thrown }, 'unexpected error');
        response = { code: 'INTERNAL', message: 'internal server error', detail: { requestId: ctx.state.requestId }, status: 500, headers: {} };
      } else if (thrown instanceof BackendUnavailableError || thrown instanceof DatabaseUnavailableError) {
        // The backend's own component logs the outage when it starts; per request, one short line.
        const cause = thrown.cause instanceof Error ? thrown.cause.message : undefined;
        requestLog.warn({ cause }, response.message);
      } else if (response.status >= 500) {
        requestLog.error({ err: thrown, cause: (thrown as Error).cause }, response.message);
      }
      if (ctx.headerSent) return; // a stream broke mid-response; nothing more can be said
      // A body abandoned half-read (a failed upload) cannot be drained: close the connection
      // after this answer. A body never started on (too large) is discarded by Node as usual,
      // so the client can finish sending and read the answer.
      if (ctx.req.destroyed && !ctx.req.complete) ctx.set('Connection', 'close');
      const body = { errors: [{ code: response.code, message: response.message, detail: response.detail ?? null }] };
      replyJson(ctx, response.status, body, response.headers);
    }
  };
}
