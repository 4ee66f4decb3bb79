// Prometheus metrics: one prom-client Registry per server (never prom-client's global one, so
// that two servers in one process keep apart), the instruments the server's parts feed, and the
// text a scrape of GET /metrics gets.
//
// Labels take values from fixed sets the code chooses (route templates, methods, status codes,
// outcomes), never from what a request names: no repository, tag, digest or user name, and no
// way for a client to make the number of series grow.
//
// A part added later registers its figures on `registry` the same way. The garbage collector,
// say, in a src/metrics/gc.ts of its own: `new Counter({ name: 'portcullis_gc_runs_total', help,
// registers: [metrics.registry] })`, a Counter of reclaimed bytes, and a Gauge of the queue depth
// whose `collect()` asks the collector when Prometheus scrapes (nothing to keep up to date in
// between); server.ts hands `metrics` to it when it assembles the server.
import { collectDefaultMetrics, Registry } from 'prom-client';
import { HttpMetrics } from './http.js';
import { DirectoryMetrics, SignatureMetrics, TokenMetrics } from './outcomes.js';

export class Metrics {
  readonly registry = new Registry();
  readonly http: HttpMetrics;
  readonly tokens: TokenMetrics;
  readonly directory: DirectoryMetrics;
  readonly signatures: SignatureMetrics;
  private rendering: Promise<string> | undefined;

  constructor() {
    // The process and the runtime: CPU, memory, heap, event loop delay, open files, Node's own GC.
    collectDefaultMetrics({ register: this.registry });
    this.http = new HttpMetrics(this.registry);
    this.tokens = new TokenMetrics(this.registry);
    this.directory = new DirectoryMetrics(this.registry);
    this.signatures = new SignatureMetrics(this.registry);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition. Scrapes that arrive while one is rendered share it: a flood costs one. */
  render(): Promise<string> {
    this.rendering ??= this.registry.metrics().finally(() => (this.rendering = undefined));
    return this.rendering;
  }
}
