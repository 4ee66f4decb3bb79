// Liveness and readiness for load balancers and Kubernetes probes.
import { replyJson, type AppContext } from '../context.js';

export type HealthCheck = () => Promise<void>;

export interface HealthChecks {
  /** Backends without which this server cannot serve: readiness fails when one does not answer. */
  required: Record<string, HealthCheck>;
  /**
   * Backends that only some requests need, and that every replica shares (the directory): one
   * that does not answer is reported, but readiness holds. Failing it would take every replica
   * out of service at once, stopping pulls and pushes with valid tokens and local and robot
   * logins, for an outage that only stops directory logins (which answer 503 meanwhile).
   */
  advisory: Record<string, HealthCheck>;
}

/**
 * `draining`: true once a shutdown has begun. Readiness then fails (so load balancers stop sending
 * requests) while liveness holds (a restart now would only cut the requests in flight short).
 */
export function opsRoutes(checks: HealthChecks, draining: () => boolean = () => false) {
  return {
    async live(ctx: AppContext): Promise<void> {
      replyJson(ctx, 200, { status: 'ok' });
    },

    /**
     * 503 when a required backend cannot serve, naming which, or while the server shuts down;
     * 200 `degraded` when only an advisory one cannot.
     */
    async ready(ctx: AppContext): Promise<void> {
      if (draining()) return replyJson(ctx, 503, { status: 'draining' });
      const probe = (group: Record<string, HealthCheck>) =>
        Promise.all(
          Object.entries(group).map(async ([name, check]) => {
            try {
              await check();
              return [name, 'ok'] as const;
            } catch (error) {
              ctx.state.log.warn({ err: error, backend: name }, 'readiness check failed');
              return [name, 'unavailable'] as const;
            }
          }),
        );
      const [required, advisory] = await Promise.all([probe(checks.required), probe(checks.advisory)]);
      const ready = required.every(([, state]) => state === 'ok');
      const status = !ready ? 'unavailable' : advisory.every(([, state]) => state === 'ok') ? 'ok' : 'degraded';
      replyJson(ctx, ready ? 200 : 503, { status, checks: Object.fromEntries([...required, ...advisory]) });
    },
  };
}
