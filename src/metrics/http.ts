// HTTP figures: requests by method, route template and status, their duration, the bytes they
// moved, and what is in flight (requests, uploads streaming in).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The route label of a request that matched no route (any unknown path: one series, not one per path). */
export const UNMATCHED_ROUTE = 'unmatched';

/** Methods with a label of their own; anything else Node lets through is `other`. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** From a manifest GET (milliseconds) to a layer pushed or pulled over a slow link (minutes). */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * A route's path pattern as a template for the route label: `^/v2/(?<name>.+)/manifests/(?<reference>[^/]+)$`
 * becomes `/v2/<name>/manifests/<reference>`, and a router path's `:name` becomes `<name>`.
 */
export function routeTemplate(pattern: RegExp | string): string {
  if (typeof pattern === 'string') return pattern.replace(/:(\w+)/g, '<$1>');
  return pattern.source
    .replace(/^\^|\$$/g, '')
    .replace(/\(\?<(\w+)>[^)]*\)/g, '<$1>')
    .replace(/\\\//g, '/')
    .replace(/\/\?/g, '/');
}

/** What the middleware needs of a Koa context. */
interface RequestContext {
  method: string;
  req: IncomingMessage;
  res: ServerResponse;
}

export class HttpMetrics {
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly duration: Histogram<'method' | 'route' | 'status_class'>;
  private readonly received: Counter<'method' | 'route'>;
  private readonly sent: Counter<'method' | 'route'>;
  private readonly inFlight: Gauge;
  private readonly uploads: Gauge;
  /** Bytes read from each connection up to the end of its previous response (requests on it come one after another). */
  private readonly readUpTo = new WeakMap<Socket, number>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'portcullis_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code (status "none": the connection ended before an answer)',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'portcullis_http_request_duration_seconds',
      help: 'Time from a request to the end of its response, by method, route template and status class',
      labelNames: ['method', 'route', 'status_class'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.received = new Counter({
      name: 'portcullis_http_received_bytes_total',
      help: 'Bytes read from the connection for a request, headers included, by method and route template',
      labelNames: ['method', 'route'],
      registers,
    });
    this.sent = new Counter({
      name: 'portcullis_http_sent_bytes_total',
      help: 'Bytes written to the connection for a response, headers included, by method and route template',
      labelNames: ['method', 'route'],
      registers,
    });
    this.inFlight = new Gauge({ name: 'portcullis_http_requests_in_flight', help: 'Requests being answered now', registers });
    this.uploads = new Gauge({
      name: 'portcullis_uploads_in_progress',
      help: 'Authorised upload requests whose body is streaming in now (POST with digest, PATCH, PUT)',
      registers,
    });
  }

  /**
   * Koa middleware: counts every request when its response closes, under the route template
   * `routeOf` names once routing is done (UNMATCHED_ROUTE when none matched).
   */
  middleware<C extends RequestContext>(routeOf: (ctx: C) => string) {
    return async (ctx: C, next: () => Promise<void>): Promise<void> => {
      const started = process.hrtime.bigint();
      const { socket } = ctx.req;
      // A request's headers, and often the start of its body, were read before it got here.
      const readBefore = this.readUpTo.get(socket) ?? 0;
      const writtenBefore = socket.bytesWritten;
      this.inFlight.inc();
      ctx.res.once('close', () => {
        this.inFlight.dec();
        const method = METHODS.has(ctx.method) ? ctx.method : 'other';
        const route = routeOf(ctx);
        const status = ctx.res.headersSent ? ctx.res.statusCode : undefined;
        this.requests.inc({ method, route, status: status === undefined ? 'none' : String(status) });
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        this.duration.observe({ method, route, status_class: status === undefined ? 'none' : `${Math.floor(status / 100)}xx` }, seconds);
        const read = socket.bytesRead;
        this.readUpTo.set(socket, read);
        this.received.inc({ method, route }, Math.max(0, read - readBefore));
        this.sent.inc({ method, route }, Math.max(0, socket.bytesWritten - writtenBefore));
      });
      await next();
    };
  }

  /** An upload whose body streams in: in progress until its response closes. */
  uploadStarted(res: ServerResponse): void {
    this.uploads.inc();
    res.once('close', () => this.uploads.dec());
  }
}
