// The listening socket: plain HTTP or HTTPS (certificate re-read when its files change), with the
// limits that keep one client from starving the rest: header timeout, idle timeout, a cap on open
// connections overall and per client address; and its part of a graceful shutdown (RequestDrain).
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../config/config.js';
import { trustedPeer } from './client-address.js';

/** How often the certificate files are checked for a renewal. */
const TLS_POLL_MS = 5_000;

export interface Listener {
  server: Server;
  /** Stops watching the certificate files. */
  stopWatching(): void;
  /** The requests in flight, and the steps of a graceful shutdown. */
  drain: RequestDrain;
}

/** A request cut off by a shutdown, as the log names it. */
export interface CutOffRequest {
  method: string;
  /** the path, without the query */
  path: string;
  requestId?: string;
  /** how long it had been running */
  seconds: number;
}

interface InFlight {
  request: IncomingMessage;
  response: ServerResponse;
  started: number;
}

/**
 * What the listener is answering, and its part of a graceful shutdown, in order:
 * startDraining() — every response not yet begun asks the client to close its connection, so
 * clients and proxies reconnect (elsewhere, once the load balancer has noticed); stopAccepting()
 * — the listening socket closes (new connections are refused), idle keep-alive connections are
 * closed, and each busy one as soon as its response ends; settled(ms) — waits until no request
 * is in flight, or names those still running after `ms`; cutOff() — drops every connection.
 */
export class RequestDrain {
  private readonly inFlight = new Set<InFlight>();
  private isDraining = false;
  private closing = false;
  private whenIdle: (() => void) | undefined;

  constructor(private readonly server: Server) {}

  /** Wraps the request handler so that every request is known until its response closes. */
  track(handler: RequestListener): RequestListener {
    return (request, response) => {
      const entry: InFlight = { request, response, started: Date.now() };
      this.inFlight.add(entry);
      if (this.isDraining) response.setHeader('Connection', 'close');
      response.once('close', () => {
        this.inFlight.delete(entry);
        // The connection it leaves idle would otherwise stay open for the keep-alive timeout.
        if (this.closing) setImmediate(() => this.server.closeIdleConnections());
        if (this.inFlight.size === 0) this.whenIdle?.();
      });
      handler(request, response);
    };
  }

  get draining(): boolean {
    return this.isDraining;
  }

  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  startDraining(): void {
    this.isDraining = true;
    for (const { response } of this.inFlight) if (!response.headersSent) response.setHeader('Connection', 'close');
  }

  /** Closes the listening socket and the idle connections; connections with a request in flight stay. */
  stopAccepting(): void {
    this.isDraining = true;
    this.closing = true;
    // Its callback would come only once every connection has ended: settled() waits for those.
    if (this.server.listening) this.server.close();
    this.server.closeIdleConnections();
  }

  /** Waits up to `ms` for the requests in flight; resolves with those still running then (none: all finished). */
  async settled(ms: number): Promise<CutOffRequest[]> {
    if (this.inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.whenIdle = resolve;
        timer = setTimeout(resolve, ms);
      });
      clearTimeout(timer);
      this.whenIdle = undefined;
    }
    return this.running();
  }

  /** The requests in flight now, as a shutdown log names them. */
  running(): CutOffRequest[] {
    const now = Date.now();
    return [...this.inFlight].map(({ request, response, started }) => {
      const requestId = response.getHeader('X-Request-Id');
      return {
        method: request.method ?? '',
        path: (request.url ?? '').split('?')[0] ?? '',
        ...(typeof requestId === 'string' ? { requestId } : {}),
        seconds: Math.round((now - started) / 100) / 10,
      };
    });
  }

  /** Drops every connection, busy or not. */
  cutOff(): void {
    this.closing = true;
    if (this.server.listening) this.server.close();
    this.server.closeAllConnections();
  }
}

interface KeyPair {
  cert: Buffer;
  key: Buffer;
}

function readKeyPair(tls: Config['tls']): KeyPair {
  const read = (setting: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new ConfigError(`${setting}: cannot read ${path}: ${(error as Error).message}`);
    }
  };
  const pair = { cert: read('tls.certificate', tls.certificate as string), key: read('tls.key', tls.key as string) };
  try {
    createSecureContext(pair); // a wrong file, or a key that does not belong to the certificate
  } catch (error) {
    throw new ConfigError(`tls.certificate / tls.key: ${(error as Error).message}`);
  }
  return pair;
}

export function createListener(config: Pick<Config, 'http' | 'tls'>, handle: RequestListener, log: Logger): Listener {
  const { http, tls } = config;
  // Every request goes through the drain's bookkeeping, which needs the server it belongs to.
  let tracked: RequestListener = handle;
  const handler: RequestListener = (request, response) => tracked(request, response);
  const options = {
    headersTimeout: http.headersTimeoutSeconds * 1000,
    // Large blobs take as long as they take; a stalled body is caught by the idle timeout instead
    // (and the token and admin routes have a deadline of their own).
    requestTimeout: 0,
    keepAliveTimeout: http.keepAliveTimeoutSeconds * 1000,
  };
  let stopWatching = (): void => undefined;
  let server: Server;
  if (tls.certificate && tls.key) {
    const https = createHttpsServer({ ...options, ...readKeyPair(tls), minVersion: 'TLSv1.2' }, handler);
    const reload = (): void => {
      try {
        https.setSecureContext(readKeyPair(tls));
        log.info({ certificate: tls.certificate }, 'TLS certificate reloaded');
      } catch (error) {
        log.error({ err: (error as Error).message }, 'TLS certificate not reloaded; still serving the previous one');
      }
    };
    watchFile(tls.certificate, { interval: TLS_POLL_MS, persistent: false }, reload);
    watchFile(tls.key, { interval: TLS_POLL_MS, persistent: false }, reload);
    stopWatching = () => {
      unwatchFile(tls.certificate as string, reload);
      unwatchFile(tls.key as string, reload);
    };
    // A failed handshake is the client's business: one debug line, never a certificate dump.
    https.on('tlsClientError', (error: Error) => log.debug({ err: error.message }, 'TLS handshake failed'));
    server = https;
  } else {
    server = createHttpServer(options, handler);
  }
  server.setTimeout(http.idleBodyTimeoutSeconds * 1000);
  server.maxConnections = http.maxConnections;
  limitConnectionsPerAddress(server, http.maxConnectionsPerAddress, trustedPeer(http.trustProxy));
  const drain = new RequestDrain(server);
  tracked = drain.track(handle);
  return { server, stopWatching, drain };
}

/** Closes new connections from an address that already holds `max` (trusted proxies excepted). */
function limitConnectionsPerAddress(server: Server, max: number, exempt: (address: string) => boolean): void {
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    if (exempt(address)) return;
    const count = (open.get(address) ?? 0) + 1;
    if (count > max) {
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
  });
}
