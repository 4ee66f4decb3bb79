// Manifest GETs by wrk (Debian's `wrk`), a C load generator: a Node client sending 64 requests
// at once needs most of a core itself, which on a 2-core machine is taken from the registry
// under test. wrk does the same work for a fraction of that.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export type LoadGenerator = 'node' | 'wrk';

/** wrk when it is on the PATH, else the benchmark's own Node client. */
export function defaultLoadGenerator(): LoadGenerator {
  return spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined ? 'wrk' : 'node';
}

export interface WrkTarget {
  url: string;
  headers: Record<string, string>;
}

export interface WrkRate {
  requests: number;
  seconds: number;
  perSecond: number;
  /** ms */
  p50: number;
  p99: number;
  /** CPUs the wrk processes used on average */
  cpus: number;
}

/**
 * GETs each target with `connections` spread evenly over them (one wrk per target, all at once:
 * a round-robin load balancer in effect), for `seconds`. Fails on any response that is not 2xx/3xx
 * or on a socket error.
 */
export async function runWrk(targets: WrkTarget[], connections: number, seconds: number): Promise<WrkRate> {
  const runs = await Promise.all(targets.map((target, i) => wrkOnce(target, Math.max(1, Math.floor(connections / targets.length) + (i < connections % targets.length ? 1 : 0)), seconds)));
  const requests = runs.reduce((sum, run) => sum + run.requests, 0);
  const perSecond = runs.reduce((sum, run) => sum + run.perSecond, 0);
  // Latency percentiles of the whole are not those of the parts; the slowest part's are an upper bound.
  return {
    requests,
    seconds,
    perSecond,
    p50: Math.max(...runs.map((run) => run.p50)),
    p99: Math.max(...runs.map((run) => run.p99)),
    cpus: runs.reduce((sum, run) => sum + run.cpus, 0),
  };
}

async function wrkOnce(target: WrkTarget, connections: number, seconds: number): Promise<WrkRate> {
  const threads = Math.min(2, connections);
  const args = ['-t', String(threads), '-c', String(connections), '-d', `${seconds}s`, '--latency'];
  for (const [name, value] of Object.entries(target.headers)) args.push('-H', `${name}: ${value}`);
  args.push(target.url);
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (data: Buffer) => (output += data.toString()));
  child.stderr.on('data', (data: Buffer) => (output += data.toString()));
  // Its CPU time, read from /proc while it runs (the last reading before it exits).
  let cpuSeconds = 0;
  const tick = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;
  const sample = setInterval(() => {
    try {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      cpuSeconds = (Number(fields[11]) + Number(fields[12])) / tick;
    } catch {
      // gone already
    }
  }, 250);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  }).finally(() => clearInterval(sample));
  if (code !== 0) throw new Error(`wrk exited with ${code}: ${output.trim()}`);
  const number = (pattern: RegExp): number | undefined => {
    const match = pattern.exec(output);
    return match ? Number(match[1]) : undefined;
  };
  const failed = number(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0;
  const socketErrors = /Socket errors: (.*)/.exec(output)?.[1];
  if (failed > 0 || socketErrors) throw new Error(`wrk against ${target.url}: ${failed} failed responses${socketErrors ? `, socket errors ${socketErrors}` : ''}`);
  const requests = number(/(\d+) requests in/);
  const perSecond = number(/Requests\/sec:\s+([\d.]+)/);
  if (requests === undefined || perSecond === undefined) throw new Error(`cannot read wrk's output:\n${output}`);
  return { requests, seconds, perSecond, p50: latency(output, 50), p99: latency(output, 99), cpus: cpuSeconds / seconds };
}

/** A latency percentile of wrk's --latency table, in ms. */
function latency(output: string, percent: number): number {
  const match = new RegExp(`^\\s+${percent}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(output);
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}
