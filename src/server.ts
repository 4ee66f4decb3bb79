// Assembles Portcullis from its configuration: metadata store, blob store, registry domain,
// HTTP app, metrics; starts listening, the background upload sweeper and the garbage collector; shuts down gracefully:
// drain (/readyz 503, still serving), stop accepting, finish the requests in flight (bounded),
// close the connections, the database pool and the blob store.
import { mkdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, databaseConfig, storageSettings, type Config } from './config/config.js';
import { createAuth } from './auth/index.js';
import type { LdapIdentityProvider } from './auth/identity/ldap.js';
import { createApp } from './http/app.js';
import { clientAddressResolver } from './http/client-address.js';
import { createListener } from './http/listener.js';
import { commitBarrier, migrateToLatest, openDatabase } from './metadata/database.js';
import { KnexMetadataStore } from './metadata/knex-store.js';
import { parseDigest } from './registry/reference.js';
import { lockSqliteDatabase } from './metadata/sqlite-lock.js';
import { createRegistry, type Registry } from './registry/index.js';
import { RegistryAuditTrail } from './audit/registry-changes.js';
import { KnexSignatureReport } from './metadata/knex-signature-report.js';
import { KnexSignatureStore } from './metadata/knex-signature-store.js';
import { SignatureReport } from './trust/report.js';
import { openBlobStore } from './storage/index.js';
import { createSignatureServices } from './trust/index.js';
import { createTrustPolicies } from './trust/policies.js';
import type { BlobReader } from './trust/intake.js';
import { Metrics } from './metrics/metrics.js';
import { gcSettingsOf, startCollector } from './gc/index.js';
import { startMetricsListener, type MetricsListener } from './metrics/listener.js';

export interface RunningServer {
  address: string;
  /**
   * The graceful shutdown (config.shutdown): /readyz turns 503 while requests are still served
   * for drainSeconds, then the listener closes, the requests in flight get up to timeoutSeconds,
   * and everything is closed. Resolves true when every request finished, false when some were
   * cut off (they are logged). Calling it again returns the same shutdown.
   */
  shutdown(signal: string): Promise<boolean>;
  /** Cuts off every request now (a second signal), logging which; the process should exit next. */
  abort(signal: string): void;
}

/** How long closing the pools may take once the requests are done (a hung one must not keep the process). */
const BACKEND_CLOSE_MS = 10_000;

/**
 * The directory is tried at start: a setting it refuses (service bind, base DN, certificate) stops
 * the start with a message naming it; a directory that cannot be reached is logged, and /readyz
 * reports it until it can.
 */
async function probeDirectory(directory: LdapIdentityProvider, log: Logger): Promise<void> {
  try {
    await directory.probe();
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    log.warn({ err: (error as Error).message }, 'LDAP directory unreachable at startup; /readyz reports it until it answers');
  }
}

/** Reads a small blob (a signature payload, a bundle) a repository holds, bounded by `maxBytes`. */
function blobReader(registry: Registry): BlobReader {
  return async (repository, digest, maxBytes) => {
    let blob;
    try {
      blob = await registry.blobs.stat(repository, parseDigest(digest));
    } catch {
      return undefined; // not a digest, or not in this repository
    }
    if (blob.size > maxBytes) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of await registry.blobs.open(blob)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };
}

/** A database that cannot be reached at start is a configuration problem: say which setting. */
function unreachableDatabase(url: string, error: unknown): ConfigError {
  let shown = url;
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    shown = parsed.toString();
  } catch {
    shown = '(not a URL)';
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new ConfigError(`metadata.postgres.url: cannot use the database at ${shown}: ${reason}`);
}

/** The metrics listener, or a ConfigError naming metrics.listen when its address cannot be had. */
async function metricsListenerOn(listen: string, metrics: Metrics, log: Logger): Promise<MetricsListener> {
  try {
    return await startMetricsListener(metrics, splitListen(listen), log);
  } catch (error) {
    const { code } = error as { code?: string };
    const why = code === 'EADDRINUSE' ? 'the address is already in use' : code === 'EADDRNOTAVAIL' ? 'no network interface has that address' : (error as Error).message;
    throw new ConfigError(`metrics.listen: cannot listen on ${listen}: ${why}`);
  }
}

/** Whether `work` finished within `ms` (a failure of it is thrown). */
async function within(work: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)));
  try {
    return await Promise.race([work.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

function splitListen(listen: string): { host: string; port: number } {
  const index = listen.lastIndexOf(':');
  return { host: listen.slice(0, index).replace(/^\[|\]$/g, ''), port: Number(listen.slice(index + 1)) };
}

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  // A gc.untagged pattern that can never match stops the start, naming its key.
  const gcSettings = gcSettingsOf(config);
  // Keys, the database and blobs live here: the registry's user only (a folder that exists keeps its mode).
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const database = databaseConfig(config);
  if (database.driver === 'sqlite') await mkdir(dirname(database.path), { recursive: true, mode: 0o700 });
  const unlock = database.driver === 'sqlite' ? lockSqliteDatabase(database.path) : () => undefined;
  const db = openDatabase(database.driver === 'sqlite' ? { ...database, groupCommit: true } : database);
  try {
    const applied = await migrateToLatest(db);
    if (applied.length > 0) log.info({ migrations: applied }, 'database migrated');
  } catch (error) {
    await db.destroy().catch(() => undefined);
    unlock();
    throw database.driver === 'postgres' ? unreachableDatabase(database.url, error) : error;
  }
  const metadata = new KnexMetadataStore(db);
  const trustPolicies = createTrustPolicies(db, config.auth.rulesCacheSeconds * 1000);
  const blobs = await openBlobStore(storageSettings(config));
  const { store } = blobs;

  const auth = await createAuth(config, db, log);
  const registry = createRegistry({
    metadata,
    store,
    log,
    pageMaxEntries: config.limits.pageMaxEntries,
    uploads: { maxOpenPerOwner: config.uploads.maxOpenPerPrincipal },
    referrersPageMaxBytes: config.limits.referrersPageMaxBytes,
    tagGuard: trustPolicies,
    changeLog: new RegistryAuditTrail(auth.audit),
  });
  const { directory } = auth;
  const metrics = config.metrics.enabled ? new Metrics() : undefined;
  if (directory && metrics) directory.observe(metrics.directory.observe);
  if (directory) await probeDirectory(directory, log);
  const signatureServices = createSignatureServices({
    db,
    policies: trustPolicies,
    blobs: blobReader(registry),
    recordPull: (event) =>
      auth.audit.record({
        type: event.type,
        actor: event.actor,
        clientIp: event.clientIp,
        repository: event.repository,
        tag: event.tag,
        newDigest: event.digest,
        reason: event.reason,
        details: { policy: event.policy },
      }),
    log,
  });
  if (metrics) {
    signatureServices.intake.observe((format, outcome) => metrics.signatures.verified(format, outcome, 'arrival'));
    signatureServices.signatures.observe((format, outcome) => metrics.signatures.verified(format, outcome, 'arrival'));
    signatureServices.reverifier.observe((format, outcome) => metrics.signatures.verified(format, outcome, 'reverify'));
  }
  const app = createApp({
    registry,
    log,
    manifestMaxBytes: config.limits.manifestMaxBytes,
    clientAddress: clientAddressResolver(config.http.trustProxy),
    authRequestTimeoutMs: config.http.authRequestTimeoutSeconds * 1000,
    healthChecks: {
      required: { metadata: () => metadata.checkHealth(), storage: () => store.checkHealth() },
      advisory: directory ? { directory: () => directory.checkHealth() } : {},
    },
    auth,
    ...signatureServices,
    trust: {
      policies: trustPolicies,
      explain: { policies: trustPolicies, manifests: metadata, verifications: new KnexSignatureStore(db) },
      report: new SignatureReport(trustPolicies, new KnexSignatureReport(db)),
      afterTrustChange: () => signatureServices.reverifier.afterTrustChange(),
    },
    metrics,
    serveMetrics: config.metrics.listen === undefined,
    draining: () => drain.draining,
    commits: commitBarrier(db),
    ...(config.console.enabled
      ? { console: { sessionSeconds: config.console.sessionSeconds, secureCookie: config.console.secureCookie ?? config.tls.certificate !== undefined } }
      : {}),
  });

  // Requests wait until the bootstrap administrator exists (it is created once the port is ours).
  let bootstrapped = false;
  let finishBootstrap = (): void => undefined;
  const bootstrap = new Promise<void>((resolve) => (finishBootstrap = resolve));
  const handle = app.callback();
  const { server, stopWatching, drain } = createListener(
    config,
    (request, response) => (bootstrapped ? void handle(request, response) : void bootstrap.then(() => handle(request, response))),
    log,
  );

  const { host, port } = splitListen(config.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  let metricsListener: MetricsListener | undefined;
  try {
    if (metrics && config.metrics.listen !== undefined) metricsListener = await metricsListenerOn(config.metrics.listen, metrics, log);
  } catch (error) {
    server.close();
    throw error;
  }
  try {
    await auth.bootstrap();
  } finally {
    bootstrapped = true;
    finishBootstrap();
  }

  let sweeping = false;
  const sweep = async (): Promise<void> => {
    if (sweeping) return; // a slow sweep is not stacked on by the next tick
    sweeping = true;
    try {
      const expired = await registry.uploads.expireIdle(config.uploads.expireAfterSeconds * 1000);
      if (expired > 0) log.info({ expired }, 'expired idle uploads');
    } catch (error) {
      log.warn({ err: error }, 'upload sweep failed');
    } finally {
      sweeping = false;
    }
  };
  void sweep();
  signatureServices.reverifier.start();
  const collector = startCollector({ db, store, settings: gcSettings, log, metrics: metrics?.registry });
  const sweeper = setInterval(() => void sweep(), config.uploads.sweepIntervalSeconds * 1000);
  sweeper.unref();

  log.info(
    { listen: config.listen, metrics: metrics ? (config.metrics.listen ?? config.listen) : null, dataDir: config.dataDir, metadata: config.metadata.driver, storage: config.storage.driver },
    'portcullis listening',
  );

  const closeBackends = async (): Promise<void> => {
    await collector.stop();
    stopWatching();
    await signatureServices.reverifier.stop();
    await auth.close();
    await metadata.close();
    blobs.close();
    unlock();
  };
  let stopping: Promise<boolean> | undefined;
  const shutdown = async (signal: string): Promise<boolean> => {
    const { drainSeconds, timeoutSeconds } = config.shutdown;
    clearInterval(sweeper);
    // Load balancers polling /readyz take the server out; requests still arriving are served,
    // each with Connection: close, so that clients and proxies reconnect elsewhere.
    drain.startDraining();
    if (drainSeconds > 0) {
      log.info({ signal, drainSeconds, inFlight: drain.requestsInFlight }, 'draining: /readyz answers 503 while requests are still served');
      await sleep(drainSeconds * 1000);
    }
    drain.stopAccepting();
    log.info({ signal, inFlight: drain.requestsInFlight, timeoutSeconds }, 'listener closed: new connections are refused; finishing the requests in flight');
    const cutOff = await drain.settled(timeoutSeconds * 1000);
    if (cutOff.length > 0) log.error({ requests: cutOff, timeoutSeconds }, 'shutdown timeout: requests still in flight are cut off');
    drain.cutOff(); // whatever is left: connections cut off, or idle ones a client opened but sent nothing on
    await metricsListener?.close();
    const closed = await within(closeBackends(), BACKEND_CLOSE_MS);
    if (!closed) log.error({ ms: BACKEND_CLOSE_MS }, 'the database pool or blob store did not close in time');
    log.info({ complete: cutOff.length === 0 && closed }, 'portcullis stopped');
    return cutOff.length === 0 && closed;
  };
  return {
    address: config.listen,
    shutdown(signal) {
      stopping ??= shutdown(signal);
      return stopping;
    },
    abort(signal) {
      const requests = drain.running();
      log.error({ signal, requests }, requests.length > 0 ? 'stopping at once: requests in flight are cut off' : 'stopping at once');
      drain.cutOff();
    },
  };
}
