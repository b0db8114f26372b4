// Memory and CPU time of another process (a model worker), read from Linux /proc at the moment
// of asking: Node's own process metrics only describe the process that calls them.
import { readFileSync } from "node:fs";

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
