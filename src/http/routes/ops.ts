// Liveness and readiness for load balancers and Kubernetes probes.
import { replyJson, type AppContext } from '../context.js';

export type HealthCheck = () => Promise<void>;

/**
 * `draining`: true once a shutdown has begun. Readiness then fails (so load balancers stop sending
 * requests) while liveness holds (a restart now would only cut the requests in flight short).
 */
export function opsRoutes(checks: Record<string, HealthCheck>, draining: () => boolean = () => false) {
  return {
    async live(ctx: AppContext): Promise<void> {
      replyJson(ctx, 200, { status: 'ok' });
    },

    /** 503 when a backend cannot serve, naming which, or while the server shuts down. */
    async ready(ctx: AppContext): Promise<void> {
      if (draining()) return replyJson(ctx, 503, { status: 'draining' });
      const results = await Promise.all(
        Object.entries(checks).map(async ([name, check]) => {
          try {
            await check();
            return [name, 'ok'] as const;
          } catch (error) {
            ctx.state.log.warn({ err: error, backend: name }, 'readiness check failed');
            return [name, 'unavailable'] as const;
          }
        }),
      );
      const ready = results.every(([, state]) => state === 'ok');
      replyJson(ctx, ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable', checks: Object.fromEntries(results) });
    },
  };
}
