// The listening socket: plain HTTP or HTTPS (certificate re-read when its files change), with the
// limits that keep one client from starving the rest: header timeout, idle timeout, a cap on open
// connections overall and per client address.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
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

export function createListener(config: Pick<Config, 'http' | 'tls'>, handler: RequestListener, log: Logger): Listener {
  const { http, tls } = config;
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
  return { server, stopWatching };
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
