// A throwaway Ceph cluster with a RADOS Gateway, the real S3 implementation the S3 blob store is
// tested against: one monitor, one OSD (bluestore on a sparse file: unlike memstore it gives memory
// back after deletes, so GiB-sized benchmark blobs do not pin RAM) and radosgw, all on 127.0.0.1,
// all in one temp dir, no systemd, nothing under /etc/ceph or /var/lib/ceph touched. The monitor
// and the gateway listen on free ports found at start (never 3300/6789/7480), so two test runs, or
// a developer's own Ceph, live side by side. Starting takes about 4 s (Ceph's own recipe, 14 s,
// spends most of it in waits tuned away below): still, `npm test` starts one for the whole run
// (test/run.mjs), and test files reach it through test/support/s3.ts.
//
// Missing Debian packages (ceph-mon ceph-osd radosgw ceph-common) are installed with apt-get when
// running as root. The daemons run in the foreground as children of this process; they are killed
// and the dir removed by stop(), on exit, and (through a watchdog that notices this process is gone)
// when this process dies of a signal, even SIGKILL.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, openSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureCommands } from './packages.js';
import { mergeEnv, run } from './run.js';
import { freePort } from './server.js';

export interface CephRgwOptions {
  /** Size of the OSD's sparse block file: the most the cluster can hold (default 32 GiB; only what is written uses disk). */
  blockBytes?: number;
  /**
   * osd_memory_target: bluestore's caches shrink to keep the OSD below this (default 1 GiB; Ceph's
   * floor is 896 MiB). The caches only fill with what is written and read: after a 1 GiB blob is
   * pushed and pulled, the OSD holds about 150 MiB.
   */
  osdMemoryTargetBytes?: number;
}

/** Resident memory of each daemon, in bytes. */
export interface CephRgwMemory {
  mon: number;
  osd: number;
  rgw: number;
}

export interface RunningCephRgw {
  /** http://127.0.0.1:<port>, path-style S3. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Any region signs correctly; this is the one the tests use. */
  region: 'us-east-1';
  /** Everything lives here: ceph.conf, keyring, mon and osd data, logs (log/). */
  dir: string;
  pids(): { mon: number; osd: number; rgw: number };
  memory(): Promise<CephRgwMemory>;
  /** Kills radosgw only (SIGKILL: like a crash or a cut connection); the data stays. */
  stopGateway(): Promise<void>;
  /** Starts radosgw again on the same endpoint, once it answers. */
  startGateway(): Promise<void>;
  /** Kills every daemon and removes the dir; safe to call twice. */
  stop(): Promise<void>;
}

const GiB = 1024 ** 3;
const DEFAULT_BLOCK_BYTES = 32 * GiB;
const DEFAULT_OSD_MEMORY_TARGET = 1 * GiB;
const MIN_OSD_MEMORY_TARGET = 896 * 1024 ** 2;
const START_ATTEMPTS = 3;
const OSD_READY_TIMEOUT_MS = 60_000;
const GATEWAY_READY_TIMEOUT_MS = 60_000;
const CEPH_COMMAND_TIMEOUT_MS = 60_000;
const RGW_NAME = 'client.rgw.a';
const RGW_USER = 'portcullis-test';

const CEPH_COMMANDS = {
  'ceph-mon': 'ceph-mon',
  'ceph-osd': 'ceph-osd',
  radosgw: 'radosgw',
  'radosgw-admin': 'radosgw',
  ceph: 'ceph-common',
  monmaptool: 'ceph-base',
};
type CephCommand = keyof typeof CEPH_COMMANDS;
type CephCommands = Record<CephCommand, string>;

let commands: Promise<CephCommands> | undefined;
function cephCommands(): Promise<CephCommands> {
  commands ??= ensureCommands(CEPH_COMMANDS) as Promise<CephCommands>;
  return commands;
}

// Daemons of clusters not stopped yet: killed, and their dirs removed, when this process exits.
const live = new Map<string, Set<ChildProcess>>();
process.once('exit', () => {
  for (const [dir, daemons] of live) {
    for (const daemon of daemons) daemon.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  }
});

/**
 * A detached shell that holds the daemons' pids and reads our end of a pipe: when this process
 * dies in any way (SIGINT, SIGKILL, a crash) the pipe closes, and it kills what is left and
 * removes the dir. Daemons that exit are struck off its list first, so it never kills a reused pid.
 */
class Watchdog {
  private readonly shell: ChildProcess;

  constructor(dir: string) {
    const script = [
      'dir=$1; pids=',
      'while read -r op pid; do',
      '  case $op in',
      '    add) pids="$pids $pid" ;;',
      '    del) kept=; for p in $pids; do [ "$p" = "$pid" ] || kept="$kept $p"; done; pids=$kept ;;',
      '  esac',
      'done',
      '[ -z "$pids" ] || kill -9 $pids 2>/dev/null',
      'rm -rf -- "$dir"',
    ].join('\n');
    this.shell = spawn('/bin/sh', ['-c', script, 'ceph-watchdog', dir], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    this.shell.unref();
    if (this.shell.stdin instanceof Socket) this.shell.stdin.unref();
  }

  watch(daemon: ChildProcess): void {
    if (daemon.pid === undefined) return;
    const pid = daemon.pid;
    this.shell.stdin?.write(`add ${pid}\n`);
    daemon.once('exit', () => this.shell.stdin?.write(`del ${pid}\n`));
  }

  /** Our own cleanup is done: resolves once the shell has exited (finding nothing left to kill). */
  async close(): Promise<void> {
    if (this.shell.exitCode !== null || this.shell.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => this.shell.once('exit', () => resolve()));
    this.shell.ref(); // unref'd: without this the caller's await could outlive the event loop
    this.shell.stdin?.end();
    await gone;
  }
}

/** A cephx secret as `ceph-authtool --gen-print-key` makes it: type 1 (AES), creation time, 16 random bytes. */
function cephxKey(): string {
  const header = Buffer.alloc(12);
  header.writeUInt16LE(1, 0);
  header.writeUInt32LE(Math.floor(Date.now() / 1000), 2);
  header.writeUInt32LE(0, 6);
  header.writeUInt16LE(16, 10);
  return Buffer.concat([header, randomBytes(16)]).toString('base64');
}

/** Every entity's key in one keyring: the monitor imports them all at mkfs, so no `ceph auth` calls are needed. */
function keyring(): string {
  const entity = (name: string, caps: Record<string, string>): string =>
    `[${name}]\n\tkey = ${cephxKey()}\n${Object.entries(caps)
      .map(([service, cap]) => `\tcaps ${service} = "${cap}"\n`)
      .join('')}`;
  return [
    entity('mon.', { mon: 'allow *' }),
    entity('client.admin', { mon: 'allow *', osd: 'allow *', mgr: 'allow *' }),
    entity('osd.0', { mon: 'allow profile osd', mgr: 'allow profile osd', osd: 'allow *' }),
    entity(RGW_NAME, { mon: 'allow rw', osd: 'allow rwx' }),
  ].join('');
}

interface Layout {
  dir: string;
  fsid: string;
  monPort: number;
  rgwPort: number;
  blockBytes: number;
  osdMemoryTargetBytes: number;
}

const confPath = (dir: string): string => join(dir, 'ceph.conf');

function cephConf(l: Layout): string {
  return `[global]
fsid = ${l.fsid}
# msgr2 only: one port for the monitor; the OSD picks free ones in 6800-7300 itself
mon_host = [v2:127.0.0.1:${l.monPort}]
ms_bind_msgr1 = false
public_network = 127.0.0.0/8
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
keyring = ${l.dir}/keyring
run_dir = ${l.dir}/run
admin_socket = ${l.dir}/run/$cluster-$name.asok
log_file = ${l.dir}/log/$cluster-$name.log
crash_dir = ${l.dir}/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 5
mon_max_pg_per_osd = 1000
# the monitor batches changes for paxos_propose_interval (1 s) before committing them: radosgw creates
# its pools one after another at its first start, so that wait counted seven times
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[mon]
mon_data = ${l.dir}/mon
mon_allow_pool_delete = true

[osd]
osd_data = ${l.dir}/osd
osd_objectstore = bluestore
bluestore_block_path = ${l.dir}/osd/block.file
bluestore_block_create = true
bluestore_block_size = ${l.blockBytes}
osd_memory_target = ${l.osdMemoryTargetBytes}
# closing the block device waits out one poll of its aio thread (250 ms), and the OSD opens and
# closes it once per op shard at start: a short poll saves seconds there
bdev_aio_poll_ms = 20

[${RGW_NAME}]
rgw_data = ${l.dir}/rgw
rgw_frontends = beast endpoint=127.0.0.1:${l.rgwPort}
rgw_dns_name = 127.0.0.1
rgw_enable_usage_log = false
# deleted objects' data is freed by the garbage collector: soon, so long benchmark runs give space back
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
`;
}

/** Environment for ceph commands: nothing from a developer's own Ceph setup may leak in. */
const CEPH_ENV = { CEPH_ARGS: undefined, CEPH_CONF: undefined, CEPH_KEYRING: undefined };

async function logTail(dir: string, name: string): Promise<string> {
  const text = await readFile(join(dir, 'log', name), 'utf8').catch(() => '');
  return text.slice(-3000);
}

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null;

interface DaemonSpec {
  /** ceph's name for it, e.g. mon.a: its log is log/ceph-<name>.log. */
  name: string;
  command: string;
  args: string[];
}

/**
 * One cluster's daemons: spawned in the foreground (-f), stderr to a file, unref'd so a test
 * process that never calls stop() still exits (its exit handler then kills them).
 */
class Daemons {
  private readonly running = new Set<ChildProcess>();
  private readonly names = new WeakMap<ChildProcess, string>();
  readonly watchdog: Watchdog;

  constructor(readonly dir: string) {
    this.watchdog = new Watchdog(dir);
    live.set(dir, this.running);
  }

  async spawn(spec: DaemonSpec): Promise<ChildProcess> {
    const stderr = openSync(join(this.dir, 'log', `${spec.name}.stderr`), 'a');
    try {
      const child = spawn(spec.command, [...spec.args, '-f', '-c', confPath(this.dir)], {
        stdio: ['ignore', 'ignore', stderr],
        env: mergeEnv(CEPH_ENV),
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      child.unref();
      this.names.set(child, spec.name);
      this.running.add(child);
      this.watchdog.watch(child);
      child.once('exit', () => this.running.delete(child));
      return child;
    } finally {
      closeSync(stderr);
    }
  }

  /** Throws, with the end of its logs, if any of `children` has exited. */
  async assertRunning(...children: ChildProcess[]): Promise<void> {
    const dead = children.find(exited);
    if (dead) throw await this.failure(dead);
  }

  /** Why a daemon is not running: its exit status and the end of its log. */
  private async failure(child: ChildProcess): Promise<Error> {
    const name = this.names.get(child) ?? '?';
    const stderr = await readFile(join(this.dir, 'log', `${name}.stderr`), 'utf8').catch(() => '');
    return new Error(
      `ceph ${name} exited (${child.exitCode ?? child.signalCode}); ${this.dir}/log:\n${stderr.slice(-2000)}\n${await logTail(this.dir, `ceph-${name}.log`)}`,
    );
  }

  async kill(child: ChildProcess): Promise<void> {
    if (exited(child)) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.ref(); // unref'd children do not keep the event loop alive: the caller's await would never end
    child.kill('SIGKILL');
    await gone;
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.running].map((child) => this.kill(child)));
    live.delete(this.dir);
    await this.watchdog.close();
  }
}

async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  return kib === undefined ? 0 : Number(kib) * 1024;
}

/**
 * One command on a daemon's admin socket, as `ceph daemon` sends it: the JSON command and a NUL;
 * the answer is a 32-bit big-endian length and that many bytes.
 */
function adminSocketCommand(socketPath: string, command: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    const chunks: Buffer[] = [];
    socket.setTimeout(2000, () => socket.destroy(new Error(`no answer on ${socketPath}`)));
    socket.once('connect', () => socket.write(`${JSON.stringify(command)}\0`));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const received = Buffer.concat(chunks);
      if (received.length >= 4 && received.length >= 4 + received.readUInt32BE(0)) {
        socket.end();
        resolve(received.subarray(4, 4 + received.readUInt32BE(0)).toString('utf8'));
      }
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`${socketPath} closed before answering`)));
  });
}

/**
 * Resolves once the OSD is up and active. radosgw started before that spends seconds backing off
 * on its first pool operations; started after it, it is ready about a second later.
 */
async function waitForOsd(dir: string, osd: ChildProcess, daemons: Daemons): Promise<void> {
  const socketPath = join(dir, 'run', 'ceph-osd.0.asok');
  const deadline = Date.now() + OSD_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    await daemons.assertRunning(osd);
    const status = await adminSocketCommand(socketPath, { prefix: 'status' }).catch(() => '');
    if (/"state":\s*"active"/.test(status)) return;
    await sleep(50);
  }
  throw new Error(`osd.0 was not active within ${OSD_READY_TIMEOUT_MS} ms; logs in ${dir}/log`);
}

/** Resolves once radosgw answers HTTP on `endpoint` (any status); rejects if it exits first. */
async function waitForGateway(endpoint: string, daemons: Daemons, cluster: ChildProcess[]): Promise<void> {
  const deadline = Date.now() + GATEWAY_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    await daemons.assertRunning(...cluster);
    try {
      await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`radosgw did not answer on ${endpoint} within ${GATEWAY_READY_TIMEOUT_MS} ms; logs in ${daemons.dir}/log`);
}

/** The monitor's store, then the monitor itself, with osd.0 registered in its osdmap. */
async function startMonitor(l: Layout, cmds: CephCommands, daemons: Daemons, osdUuid: string): Promise<ChildProcess> {
  const conf = confPath(l.dir);
  const opts = { env: CEPH_ENV, timeoutMs: CEPH_COMMAND_TIMEOUT_MS };
  const monmap = join(l.dir, 'monmap');
  await run(cmds.monmaptool, ['--create', '--fsid', l.fsid, '--addv', 'a', `[v2:127.0.0.1:${l.monPort}]`, monmap], opts);
  await run(cmds['ceph-mon'], ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', join(l.dir, 'keyring')], opts);
  const mon = await daemons.spawn({ name: 'mon.a', command: cmds['ceph-mon'], args: ['-i', 'a'] });
  // osd.0's key is already known (it was in the mkfs keyring): registering it is one command.
  await run(cmds.ceph, ['-c', conf, '--connect-timeout', '30', 'osd', 'new', osdUuid, '0'], opts);
  return mon;
}

/** Like Promise.all, but waits for every promise: nothing still runs (and spawns daemons) after a failure is reported. */
async function settled<T extends readonly unknown[]>(work: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(work);
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

interface Cluster {
  daemons: Daemons;
  mon: ChildProcess;
  osd: ChildProcess;
  rgw: ChildProcess;
}

async function startCluster(l: Layout, cmds: CephCommands, accessKeyId: string, secretAccessKey: string): Promise<Cluster> {
  const conf = confPath(l.dir);
  const opts = { env: CEPH_ENV, timeoutMs: CEPH_COMMAND_TIMEOUT_MS };
  await Promise.all(['mon', 'osd', 'rgw', 'run', 'log', 'crash'].map((d) => mkdir(join(l.dir, d))));
  await writeFile(conf, cephConf(l));
  await writeFile(join(l.dir, 'keyring'), keyring(), { mode: 0o600 });
  const osdUuid = randomUUID();
  const daemons = new Daemons(l.dir);
  try {
    // The OSD's bluestore (3 s, mostly syncs) is made while the monitor starts: it needs no monitor.
    const [mon] = await settled([
      startMonitor(l, cmds, daemons, osdUuid),
      run(cmds['ceph-osd'], ['-c', conf, '-i', '0', '--mkfs', '--osd-uuid', osdUuid, '--no-mon-config'], opts),
    ]);
    const osd = await daemons.spawn({ name: 'osd.0', command: cmds['ceph-osd'], args: ['-i', '0'] });
    await waitForOsd(l.dir, osd, daemons);
    // radosgw creates its pools at its first start; the user is made meanwhile.
    const rgw = await daemons.spawn({ name: RGW_NAME, command: cmds.radosgw, args: ['-n', RGW_NAME] });
    const endpoint = `http://127.0.0.1:${l.rgwPort}`;
    await settled([
      waitForGateway(endpoint, daemons, [mon, osd, rgw]),
      run(
        cmds['radosgw-admin'],
        ['-c', conf, '-n', 'client.admin', 'user', 'create', `--uid=${RGW_USER}`, '--display-name=Portcullis tests',
          `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`],
        opts,
      ),
    ]);
    return { daemons, mon, osd, rgw };
  } catch (err) {
    await daemons.killAll();
    throw err;
  }
}

/** S3-style random credentials, so a test cannot pass by accident with another gateway's keys. */
function credentials(): { accessKeyId: string; secretAccessKey: string } {
  return {
    accessKeyId: `PCT${randomBytes(10).toString('hex').toUpperCase()}`.slice(0, 20),
    secretAccessKey: randomBytes(30).toString('base64'),
  };
}

export async function startCephRgw(options: CephRgwOptions = {}): Promise<RunningCephRgw> {
  const osdMemoryTargetBytes = options.osdMemoryTargetBytes ?? DEFAULT_OSD_MEMORY_TARGET;
  if (osdMemoryTargetBytes < MIN_OSD_MEMORY_TARGET) throw new Error(`osdMemoryTargetBytes must be at least ${MIN_OSD_MEMORY_TARGET} (Ceph's minimum)`);
  const cmds = await cephCommands();
  const { accessKeyId, secretAccessKey } = credentials();
  let lastError: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-ceph-'));
    try {
      await chmod(dir, 0o700);
      // freePort() releases its probe before Ceph binds, so another process may take a port: then start afresh.
      const monPort = await freePort();
      let rgwPort = await freePort();
      while (rgwPort === monPort) rgwPort = await freePort();
      const layout: Layout = {
        dir,
        fsid: randomUUID(),
        monPort,
        rgwPort,
        blockBytes: options.blockBytes ?? DEFAULT_BLOCK_BYTES,
        osdMemoryTargetBytes,
      };
      const cluster = await startCluster(layout, cmds, accessKeyId, secretAccessKey);
      return running(layout, cluster, cmds, accessKeyId, secretAccessKey);
    } catch (err) {
      lastError = err;
      await rm(dir, { recursive: true, force: true, maxRetries: 5 });
    }
  }
  throw lastError;
}

function running(l: Layout, cluster: Cluster, cmds: CephCommands, accessKeyId: string, secretAccessKey: string): RunningCephRgw {
  const { daemons, mon, osd } = cluster;
  let rgw = cluster.rgw;
  const endpoint = `http://127.0.0.1:${l.rgwPort}`;
  let stopped = false;
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region: 'us-east-1',
    dir: l.dir,
    pids: () => ({ mon: mon.pid ?? 0, osd: osd.pid ?? 0, rgw: rgw.pid ?? 0 }),
    async memory() {
      const [monRss, osdRss, rgwRss] = await Promise.all([mon, osd, rgw].map((d) => (exited(d) ? 0 : rss(d.pid ?? 0))));
      return { mon: monRss ?? 0, osd: osdRss ?? 0, rgw: rgwRss ?? 0 };
    },
    async stopGateway() {
      await daemons.kill(rgw);
    },
    async startGateway() {
      if (!exited(rgw)) return;
      rgw = await daemons.spawn({ name: RGW_NAME, command: cmds.radosgw, args: ['-n', RGW_NAME] });
      await waitForGateway(endpoint, daemons, [mon, osd, rgw]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await daemons.killAll();
      await rm(l.dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}
