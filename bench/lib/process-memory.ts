// A process's resident memory, from Linux's /proc/<pid>/status.
import { readFileSync, writeFileSync } from 'node:fs';

const KiB = 1024;
const MiB = 1024 * 1024;

export interface ResidentMemory {
  /** VmRSS: resident now, MiB. */
  residentMib: number;
  /** VmHWM: the most it has been resident since it started or since resetPeak, MiB. */
  peakMib: number;
}

/** The process's resident memory, or undefined when it is gone (or this is not Linux). */
export function readMemory(pid: number): ResidentMemory | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1]);
  const resident = kib('VmRSS');
  const peak = kib('VmHWM');
  if (!Number.isFinite(resident) || !Number.isFinite(peak)) return undefined;
  return { residentMib: (resident * KiB) / MiB, peakMib: (peak * KiB) / MiB };
}

/** Sets the process's VmHWM back to its VmRSS (Linux ≥ 4.0, own processes); false when it cannot. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Peak resident memory of a process per phase (VmHWM, reset at the start of each phase) and over
 * the watch (the highest of the phases' peaks and, with `sinceStart`, of the peak before the
 * first phase: the process's whole life; without, the peak is reset when the watch starts).
 * Where the peak cannot be reset, phases have no peak of their own and the whole is the process's.
 */
export class MemoryWatch {
  private wholePeak = 0;
  private resettable: boolean;
  readonly phases: Record<string, { peakMib?: number; residentMib: number }> = {};

  constructor(
    private readonly pid: number,
    sinceStart: boolean,
  ) {
    this.resettable = sinceStart || resetPeak(pid);
  }

  begin(): void {
    const now = readMemory(this.pid);
    if (now) this.wholePeak = Math.max(this.wholePeak, now.peakMib);
    this.resettable &&= resetPeak(this.pid);
  }

  end(phase: string): void {
    const now = readMemory(this.pid);
    if (!now) return;
    this.wholePeak = Math.max(this.wholePeak, now.peakMib);
    this.phases[phase] = { residentMib: now.residentMib, ...(this.resettable ? { peakMib: now.peakMib } : {}) };
  }

  /** Peak over the whole life so far, and resident now. */
  total(): ResidentMemory | undefined {
    const now = readMemory(this.pid);
    return now && { residentMib: now.residentMib, peakMib: Math.max(this.wholePeak, now.peakMib) };
  }
}
