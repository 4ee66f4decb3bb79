// The single place where failures become HTTP responses: OCI error bodies with the spec's codes.
import type { Logger } from 'pino';
import { BackendUnavailableError, RegistryError } from '../../registry/errors.js';
import { replyJson, type AppContext } from '../context.js';

/** Errors thrown by libraries we use (raw-body, Koa) carry an HTTP status and a type. */
interface LibraryHttpError extends Error {
  status?: number;
  statusCode?: number;
  type?: string;
  expose?: boolean;
}

function translate(error: unknown): RegistryError | undefined {
  if (error instanceof RegistryError) return error;
  if (!(error instanceof Error)) return undefined;
  const { status, type } = error as LibraryHttpError;
  switch (type) {
    case 'entity.too.large':
      return new RegistryError('SIZE_INVALID', 'request body is too large', undefined, 413);
    case 'request.aborted':
    case 'request.size.invalid':
      return new RegistryError('SIZE_INVALID', 'request body does not match its Content-Length');
    case 'encoding.unsupported':
      return new RegistryError('UNSUPPORTED', 'unsupported Content-Encoding', undefined, 415);
  }
  if (status === 400) return new RegistryError('UNSUPPORTED', error.message, undefined, 400);
  return undefined;
}

export function errorResponses(log: Logger) {
  return async (ctx: AppContext, next: () => Promise<void>): Promise<void> => {
    try {
      await next();
    } catch (thrown) {
      let error = translate(thrown);
      const requestLog = ctx.state.log ?? log;
      if (!error) {
        requestLog.error({ err: thrown }, 'unexpected error');
        error = new RegistryError('INTERNAL', 'internal server error', { requestId: ctx.state.requestId });
      } else if (error instanceof BackendUnavailableError) {
        // The backend's own component logs the outage once when it starts; per request, one short line.
        const cause = error.cause instanceof Error ? error.cause.message : undefined;
        requestLog.warn({ cause }, error.message);
      } else if (error.status >= 500) {
        requestLog.error({ err: thrown, cause: (thrown as Error).cause }, error.message);
      }
      if (ctx.headerSent) return; // a stream broke mid-response; nothing more can be said
      // A body abandoned half-read (a failed upload) cannot be drained: close the connection
      // after this answer. A body never started on (too large) is discarded by Node as usual,
      // so the client can finish sending and read the answer.
      if (ctx.req.destroyed && !ctx.req.complete) ctx.set('Connection', 'close');
      const body = { errors: [{ code: error.code, message: error.message, detail: error.detail ?? null }] };
      replyJson(ctx, error.status, body, error.headers);
    }
  };
}
