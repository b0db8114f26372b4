// Memory and CPU time of another process (a model worker), read from Linux /proc at the moment
// of asking: Node's own process metrics only describe the process that calls them.
import { readFileSync } from "node:fs";
import os from "node:os";

export interface ProcStats {
  /** Resident set size (VmRSS). */
  rssBytes: number;
  /** User + system CPU time since the process started. */
  cpuSeconds: number;
}

// utime and stime in /proc/<pid>/stat count USER_HZ ticks, which the kernel fixes at 100 for
// user space on every Linux architecture (sysconf(_SC_CLK_TCK), which Node does not expose).
const USER_HZ = 100;

/** The process's RSS and CPU seconds, or null when it is gone or /proc is not there. */
export function readProcStats(pid: number): ProcStats | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // fields 14 (utime) and 15 (stime)
    // VmRSS is in kB whatever the page size; stat's rss field counts pages.
    const rssKb = /\nVmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    if (rssKb === undefined || !Number.isFinite(ticks)) return null;
    return { rssBytes: Number(rssKb) * 1024, cpuSeconds: ticks / USER_HZ };
  } catch {
    return null;
  }
}

/**
 * Memory that can be given to a new process without swapping: MemAvailable (free memory plus
 * reclaimable page cache, the kernel's own estimate), else Node's free memory.
 */
export function availableMemoryBytes(): number {
  try {
    const kb = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1];
    if (kb !== undefined) return Number(kb) * 1024;
  } catch {
    // not Linux: below
  }
  return os.freemem();
}
