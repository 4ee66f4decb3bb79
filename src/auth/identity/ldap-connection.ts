// Connections to the directory: one ldapts Client per socket (never silently reconnected), and a
// small pool of service-bound connections shared by the lookups.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Client, ResultCodeError, type Control } from 'ldapts';

const CLOSE_GRACE_MS = 1000;

/** An LDAP result (the server answered) rather than a transport failure (socket, TLS, timeout). */
export function isLdapResult(err: unknown): err is ResultCodeError {
  return err instanceof ResultCodeError;
}

/** ldapts reports an operation timeout as a plain Error ("…: Operation timed out"); so does withDeadline. */
function isTimeout(err: unknown): boolean {
  return err instanceof Error && /timed out|timeout/i.test(err.message);
}

/** Races `work` against a timer; on timeout runs `onTimeout` (which tears the connection down). */
async function withDeadline<T>(work: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what} timed out after ${ms} ms`));
    }, ms);
  });
  work.catch(() => undefined); // after a timeout its own failure is expected: not an unhandled rejection
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export interface ConnectionSettings {
  url: string;
  /** ldaps:// */
  secure: boolean;
  /** Upgrade an ldap:// connection with StartTLS before anything else is sent. */
  startTls: boolean;
  tls: tls.ConnectionOptions;
  timeoutMs: number;
}

/**
 * One ldapts Client on exactly one socket. ldapts silently reconnects a client whose socket closed
 * (and after StartTLS it would reconnect WITHOUT TLS and unbound), so the socket factories below
 * refuse a second socket: a lost connection fails its operation and is replaced by the pool.
 * Tracking the sockets also lets us see a close that ldapts misses after StartTLS, and always
 * destroy them (ldapts leaves the TCP socket open when a StartTLS handshake fails).
 */
export class LdapConnection {
  readonly client: Client;
  private readonly sockets: net.Socket[] = [];
  private plainOpened = false;
  private secureOpened = false;
  private lost = false;

  constructor(private readonly settings: ConnectionSettings) {
    this.client = new Client({
      url: settings.url,
      timeout: settings.timeoutMs,
      connectTimeout: settings.timeoutMs,
      // ldapts connects with TLS whenever tlsOptions has a value, so they are given only for ldaps://.
      tlsOptions: settings.secure ? settings.tls : undefined,
      createConnection: this.plainConnect as typeof net.connect,
      createSecureConnection: this.secureConnect as typeof tls.connect,
    });
  }

  /** False once any of its sockets closed: the pool then discards it. */
  get usable(): boolean {
    return !this.lost;
  }

  private readonly plainConnect = (port: number, host: string): net.Socket => {
    if (this.plainOpened) throw new Error('LDAP connection was lost');
    this.plainOpened = true;
    return this.track(net.connect(port, host));
  };

  // Called as (port, host, options) for ldaps:// and as (options-with-socket) by startTLS().
  private readonly secureConnect = (
    portOrOptions: number | tls.ConnectionOptions,
    host?: string,
    options?: tls.ConnectionOptions,
  ): tls.TLSSocket => {
    if (this.secureOpened) throw new Error('LDAP connection was lost');
    this.secureOpened = true;
    const socket =
      typeof portOrOptions === 'number' ? tls.connect(portOrOptions, host ?? 'localhost', options) : tls.connect(portOrOptions);
    return this.track(socket);
  };

  private track<S extends net.Socket>(socket: S): S {
    this.sockets.push(socket);
    socket.once('close', () => {
      this.lost = true;
    });
    return socket;
  }

  /** Connects and, for StartTLS, upgrades; an ldap:// or ldaps:// connection is otherwise opened by its first operation. */
  async connect(): Promise<void> {
    if (!this.settings.startTls) return;
    // startTLS() mutates its options (adds the socket), hence the copy; its handshake has no timeout of its own.
    await withDeadline(this.client.startTLS({ ...this.settings.tls }), this.settings.timeoutMs, 'LDAP StartTLS', () => this.destroy());
  }

  bind(dn: string, password: string, controls?: Control[]): Promise<void> {
    return this.client.bind(dn, password, controls);
  }

  destroy(): void {
    this.lost = true;
    for (const socket of this.sockets) {
      socket.on('error', () => undefined); // ldapts may have removed its listeners; a late error must not crash us
      socket.destroy();
    }
  }

  /** Unbinds politely when still connected, then destroys the sockets whatever happened. */
  async close(): Promise<void> {
    try {
      if (this.usable && this.client.isConnected) {
        await withDeadline(this.client.unbind(), CLOSE_GRACE_MS, 'LDAP unbind', () => this.destroy());
      }
    } catch {
      // closing anyway
    } finally {
      this.destroy();
    }
  }
}

interface Lease {
  connection: LdapConnection;
  reused: boolean;
}

/**
 * A few service-bound connections, each used by one request at a time. A connection that failed
 * at the transport level is discarded (and replaced on demand); LDAP result errors leave it in the
 * pool. A transport failure on a reused connection is retried once on a fresh one, because a
 * server restart or idle timeout may have closed it while it sat in the pool.
 */
export class ConnectionPool {
  private readonly idle: LdapConnection[] = [];
  private readonly waiters: (() => void)[] = [];
  private open = 0;
  private closed = false;

  constructor(
    private readonly max: number,
    private readonly waitMs: number,
    private readonly create: () => Promise<LdapConnection>,
  ) {}

  async use<T>(work: (client: Client) => Promise<T>, retry = true): Promise<T> {
    const lease = await this.acquire();
    let result: T;
    try {
      result = await work(lease.connection.client);
    } catch (err) {
      if (isLdapResult(err)) {
        this.release(lease.connection);
        throw err;
      }
      this.discard(lease.connection);
      // A slow directory is not retried: that would only double the wait before the client hears it is unavailable.
      if (retry && lease.reused && !this.closed && !isTimeout(err)) return this.use(work, false);
      throw err;
    }
    this.release(lease.connection);
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    const idle = this.idle.splice(0);
    this.open -= idle.length;
    for (const wake of this.waiters.splice(0)) wake();
    await Promise.all(idle.map((c) => c.close()));
  }

  private async acquire(): Promise<Lease> {
    for (;;) {
      if (this.closed) throw new Error('LDAP identity provider is closed');
      const connection = this.takeIdle();
      if (connection) return { connection, reused: true };
      if (this.open < this.max) return { connection: await this.grow(), reused: false };
      await this.waitForSlot();
    }
  }

  private takeIdle(): LdapConnection | undefined {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      if (c.usable) return c;
      this.open--;
      c.destroy();
    }
    return undefined;
  }

  private async grow(): Promise<LdapConnection> {
    this.open++;
    try {
      return await this.create();
    } catch (err) {
      this.open--;
      this.wake();
      throw err;
    }
  }

  private waitForSlot(): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(new Error(`no free LDAP connection within ${this.waitMs} ms`));
      }, this.waitMs);
      this.waiters.push(waiter);
    });
  }

  private wake(): void {
    this.waiters.shift()?.();
  }

  private release(connection: LdapConnection): void {
    if (this.closed || !connection.usable) {
      this.discard(connection);
      return;
    }
    this.idle.push(connection);
    this.wake();
  }

  private discard(connection: LdapConnection): void {
    this.open--;
    connection.destroy();
    this.wake();
  }
}
