// The single place where failures become HTTP responses: OCI error bodies with the spec's codes.
import type { Logger } from 'pino';
import { RegistryError } from '../../registry/errors.js';
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
      } else if (error.status >= 500) {
        requestLog.error({ err: thrown, cause: (thrown as Error).cause }, error.message);
      }
      if (ctx.headerSent) return; // a stream broke mid-response; nothing more can be said
      // The body was not read to its end (a failed upload): close the connection after this
      // answer, so the client stops sending instead of the server draining gigabytes.
      if (!ctx.req.complete) ctx.set('Connection', 'close');
      const body = { errors: [{ code: error.code, message: error.message, detail: error.detail ?? null }] };
      replyJson(ctx, error.status, body, error.headers);
    }
  };
}
