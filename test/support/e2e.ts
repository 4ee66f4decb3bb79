// Shared harness for end-to-end tests with real container clients: makes sure the clients are
// installed, starts the registry under test on 127.0.0.1, hands out temp dirs, runs registered
// clean-ups in `after` even when a test failed, and attaches what the registry logged during a
// failing step to the error, so a failure shows the HTTP requests the client made.
//
// Environment:
//   PORTCULLIS_E2E_REGISTRY=reference  run against Debian's docker-registry instead of Portcullis
//   PORTCULLIS_E2E_LOG_DIR=DIR         keep the registry's (and dockerd's) log of each test file
//   PORTCULLIS_E2E_VERBOSE=1           echo every client command line on stderr
//
// The registry is Portcullis (startPortcullis) unless PORTCULLIS_E2E_REGISTRY=reference, which
// runs the same tests against Debian's docker-registry (CNCF distribution) to check the tests.
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCommands } from './packages.js';
import { startReferenceRegistry } from './reference-registry.js';
import { run } from './run.js';
import { adminClient, TestRegistry } from './registry-client.js';
import { startPortcullis, type RunningRegistry } from './server.js';

export type RegistryKind = 'portcullis' | 'reference';

export function registryKind(): RegistryKind {
  const kind = process.env.PORTCULLIS_E2E_REGISTRY ?? 'portcullis';
  if (kind !== 'portcullis' && kind !== 'reference') {
    throw new Error(`PORTCULLIS_E2E_REGISTRY must be "portcullis" or "reference", not "${kind}"`);
  }
  return kind;
}

export function startRegistryUnderTest(kind: RegistryKind = registryKind()): Promise<RunningRegistry> {
  return kind === 'reference' ? startReferenceRegistry() : startPortcullis();
}

/** Timeout of an end-to-end suite (each client command also has its own, see run()). */
export const E2E_TEST_TIMEOUT_MS = 10 * 60_000;

type Cleanup = () => Promise<void> | void;

export class E2E {
  private registryValue: RunningRegistry | undefined;
  private tmpValue: string | undefined;
  private readonly cleanups: Cleanup[] = [];

  /**
   * @param name names this test file's logs (see PORTCULLIS_E2E_LOG_DIR)
   * @param commands command → Debian package, as for ensureCommands()
   */
  constructor(
    private readonly name: string,
    private readonly commands: Record<string, string>,
  ) {}

  get registry(): RunningRegistry {
    if (!this.registryValue) throw new Error('E2E.start() has not completed');
    return this.registryValue;
  }

  /** host:port of the registry under test, always on 127.0.0.1. */
  get host(): string {
    return this.registry.host;
  }

  /** Temp directory of this test file, removed by stop(). */
  get tmp(): string {
    if (!this.tmpValue) throw new Error('E2E.start() has not completed');
    return this.tmpValue;
  }

  /** `HOST/repository:tag` (or `@digest` when `tagOrDigest` is one) in the registry under test. */
  ref(repository: string, tagOrDigest: string): string {
    const separator = tagOrDigest.startsWith('sha256:') ? '@' : ':';
    return `${this.host}/${repository}${separator}${tagOrDigest}`;
  }

  async start(): Promise<void> {
    await ensureCommands(this.commands);
    // Lowercase hex, not mkdtemp's mixed case: podman names an image pulled from oci:DIR after
    // DIR, and rejects the path as a repository name if it has capitals.
    const tmp = join(tmpdir(), `portcullis-e2e-${randomBytes(6).toString('hex')}`);
    await mkdir(tmp, { mode: 0o700 });
    this.tmpValue = tmp;
    this.defer(() => rm(tmp, { recursive: true, force: true }));
    const registry = await startRegistryUnderTest();
    this.registryValue = registry;
    this.defer(() => registry.stop());
    this.defer(() => this.saveLog('registry', registry.output()));
    if (!registry.host.startsWith('127.0.0.1:')) throw new Error(`registry under test is not on loopback: ${registry.host}`);
    await this.login();
  }

  /**
   * `skopeo login` as the registry's administrator into an auth file of this test file's own,
   * which skopeo and podman then read through REGISTRY_AUTH_FILE (docker logs in by itself).
   */
  private async login(): Promise<void> {
    const authFile = join(this.tmp, 'auth.json');
    process.env.REGISTRY_AUTH_FILE = authFile;
    const { username, password } = this.registry.admin;
    if (registryKind() === 'reference') return; // it has no auth
    await run('skopeo', ['login', '--tls-verify=false', '--authfile', authFile, '--username', username, '--password', password, this.host]);
  }

  /** An HTTP client for the registry under test, logged in as its administrator (anonymous on the reference). */
  client(): TestRegistry {
    return registryKind() === 'reference' ? new TestRegistry(this.registry.url, false) : adminClient(this.registry);
  }

  /** Registers a clean-up; stop() runs them last-registered first. */
  defer(cleanup: Cleanup): void {
    this.cleanups.push(cleanup);
  }

  /** Runs every clean-up even if some fail (and even if start() failed half-way), then reports failures. */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    while (this.cleanups.length > 0) {
      const cleanup = this.cleanups.pop();
      try {
        await cleanup?.();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several end-to-end clean-ups failed');
  }

  /** With PORTCULLIS_E2E_LOG_DIR set, keeps a log (e.g. every request the registry saw) there. */
  async saveLog(what: string, text: string): Promise<void> {
    const dir = process.env.PORTCULLIS_E2E_LOG_DIR;
    if (!dir) return;
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, `${this.name}-${what}.log`), text);
  }

  /** A new directory under this file's temp dir. */
  async tempDir(name: string): Promise<string> {
    const dir = join(this.tmp, name);
    await mkdir(dir, { recursive: false });
    return dir;
  }

  /**
   * Wraps a test body: if it throws, the error message gets what the registry logged while the
   * body ran (one JSON line per request for Portcullis), to show what the client sent.
   */
  step(body: () => Promise<void>): () => Promise<void> {
    return async () => {
      const from = this.registryValue?.output().length ?? 0;
      try {
        await body();
      } catch (err) {
        // The registry logs a request after answering it, and the line reaches us through a pipe.
        await new Promise((resolve) => setTimeout(resolve, 200));
        const log = this.registryValue?.output().slice(from) ?? '';
        if (err instanceof Error) {
          const extra = `\n--- registry log during this step (${registryKind()}) ---\n${lastLines(log, 150)}`;
          const original = err.message;
          err.message += extra;
          // The spec reporter prints the stack, which was built with the original message.
          if (err.stack?.includes(original)) err.stack = err.stack.replace(original, err.message);
        }
        throw err;
      }
    };
  }
}

function lastLines(text: string, count: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.length <= count ? lines.join('\n') : [`[…${lines.length - count} lines cut…]`, ...lines.slice(-count)].join('\n');
}
