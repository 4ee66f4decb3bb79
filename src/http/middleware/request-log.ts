// Request id and the one log line per request (method, route, repository, status, bytes, time).
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AppContext } from '../context.js';

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The kind of principal a token subject names ('' is anonymous, `robot$…` a robot). */
function principalKind(subject: string): 'user' | 'robot' | 'anonymous' {
  if (subject === '') return 'anonymous';
  return subject.startsWith('robot$') ? 'robot' : 'user';
}

export function requestLog(log: Logger) {
  return async (ctx: AppContext, next: () => Promise<void>): Promise<void> => {
    const started = process.hrtime.bigint();
    const offered = ctx.get('X-Request-Id');
    const requestId = CLIENT_REQUEST_ID.test(offered) ? offered : randomUUID();
    ctx.state.requestId = requestId;
    ctx.state.params = {};
    ctx.state.log = log.child({ reqId: requestId });
    ctx.set('X-Request-Id', requestId);
    ctx.res.once('close', () => {
      const status = ctx.res.headersSent ? ctx.res.statusCode : ctx.status;
      const line = {
        method: ctx.method,
        path: ctx.path,
        route: ctx.state.route ?? null,
        repository: ctx.state.repository ?? null,
        status,
        bytesIn: ctx.state.bytesIn ?? 0,
        bytesOut: ctx.response.length ?? 0,
        durationMs: Number(process.hrtime.bigint() - started) / 1e6,
        remote: ctx.request.ip,
        principal: ctx.state.principal?.kind ?? (ctx.state.auth ? principalKind(ctx.state.auth.subject) : null),
        subject: ctx.state.principal?.subject ?? ctx.state.auth?.subject ?? null,
        userAgent: ctx.get('User-Agent') || undefined,
        completed: ctx.res.writableFinished,
      };
      // A 503 from /readyz is the server reporting a backend down (logged by the check) or its
      // own shutdown, every few seconds per probe: a warning, not an error of the request.
      if (status >= 500 && ctx.state.route !== 'ops.ready') ctx.state.log.error(line, 'request');
      else if (status >= 500) ctx.state.log.warn(line, 'request');
      else ctx.state.log.info(line, 'request');
    });
    await next();
  };
}
