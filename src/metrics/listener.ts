// metrics.listen: a plain HTTP listener of its own that answers GET /metrics and nothing else,
// for operators who keep the figures off the registry's own address.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';

export interface MetricsListener {
  /** Stops accepting and closes its connections (a scrape is short; none is waited for). */
  close(): Promise<void>;
}

function answer(response: ServerResponse, status: number, headers: Record<string, string>, body: string, head: boolean): void {
  response.writeHead(status, { 'Content-Length': Buffer.byteLength(body), ...headers });
  response.end(head ? undefined : body);
}

export async function startMetricsListener(metrics: Metrics, where: { host: string; port: number }, log: Logger): Promise<MetricsListener> {
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '').split('?')[0];
    const head = request.method === 'HEAD';
    if (path !== '/metrics') return answer(response, 404, { 'Content-Type': 'text/plain; charset=utf-8' }, 'not found: this listener serves /metrics only\n', head);
    if (request.method !== 'GET' && !head) return answer(response, 405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }, 'method not allowed\n', false);
    answer(response, 200, { 'Content-Type': metrics.contentType, 'Cache-Control': 'no-store' }, await metrics.render(), head);
  };
  const server: Server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (request, response) => {
    handle(request, response).catch((error: unknown) => {
      log.error({ err: error }, 'metrics could not be rendered');
      if (!response.headersSent) answer(response, 500, { 'Content-Type': 'text/plain; charset=utf-8' }, 'metrics could not be rendered\n', false);
      else response.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where.port, where.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
