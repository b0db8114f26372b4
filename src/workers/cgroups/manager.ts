// One cgroup per model worker, beneath the server's own group in each hierarchy that carries
// a controller the worker's limits need:
//
//   <server's group>/moltbot-<pid>-<start>/          the server's parent group (this process)
//   <server's group>/moltbot-<pid>-<start>/w3-chat-v2.0   one worker's group
//
// Never at a hierarchy root: even when the server itself sits at the root (a v1 host where
// nothing placed it), its workers go two levels down, under a parent group the server owns.
// Ownership is the parent's name: `moltbot-` + the pid and start time (clock ticks since boot,
// /proc/<pid>/stat field 22) of the server that made it. cgroupfs holds no ordinary files, so
// the name is the marker; pid and start time together name one process for the life of the
// machine. At open, a `moltbot-<pid>-<start>` sibling whose process is gone (a server that
// crashed) is removed with its worker groups; a group that still has processes is left and
// reported. Nothing else is ever created, written or removed, except the controllers a v2
// parent must enable in its cgroup.subtree_control for its children to have them.
//
// Files written, by hierarchy version:
//   v2: cpu.max "<quota_us> <period_us>", memory.max, memory.swap.max, io.max "<maj:min> rbps= wbps="
//   v1: cpu.cfs_period_us + cpu.cfs_quota_us, memory.limit_in_bytes + memory.memsw.limit_in_bytes
//       (memory + swap), blkio.throttle.read_bps_device / write_bps_device "<maj:min> <bps>"
// A limit that cannot be written is reported (reason) and the worker starts without it.
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../../observe/logger.js";
import { hierarchyFor, type CgroupHierarchy, type Controller } from "./hierarchy.js";
import { limitEntries, type LimitName, type ResourceLimits } from "./limits.js";

/** One configured limit of a worker and whether the kernel enforces it. */
export interface LimitStatus {
  limit: LimitName;
  /** As configured ("150%", "4GiB", "10MB/s"). */
  value: string;
  enforced: boolean;
  /** Why not, when not enforced. */
  reason: string | null;
  /** The value as a number: cores (cpu.quota), bytes (memory), bytes per second (io). */
  amount: number;
}

/** What a worker's group has used; null where the hierarchy or the file is missing. */
export interface CgroupUsage {
  cpuThrottledSeconds: number | null;
  cpuThrottledPeriods: number | null;
  memoryBytes: number | null;
  memoryPeakBytes: number | null;
  ioReadBytes: number | null;
  ioWriteBytes: number | null;
  oomKills: number | null;
}

export interface CgroupManagerOptions {
  /** This process's hierarchies (ownHierarchies(), or a directory laid out like cgroupfs). */
  hierarchies: readonly CgroupHierarchy[];
  log: Logger;
  /** Normally /proc: the owner processes of parent groups are looked up there. */
  procRoot?: string;
  /** Normally /sys: block devices (for io limits) are looked up there. */
  sysRoot?: string;
  /** This process (default process.pid). */
  pid?: number;
}

const LIMIT_CONTROLLER: Record<LimitName, Controller> = {
  "cpu.quota": "cpu",
  "memory.limit": "memory",
  "memory.swap": "memory",
  "io.read_bps": "io",
  "io.write_bps": "io",
};

const PARENT_RE = /^moltbot-(\d+)-(\d+)$/;

/** Worker groups made by this process: servers in one process (tests) share its parent group. */
let groupSeq = 0;

const errText = (err: unknown): string => {
  const e = err as NodeJS.ErrnoException;
  return e.code === "EACCES" || e.code === "EPERM" ? `${e.code} (no permission: run as root or in a delegated cgroup)` : (e.code ?? (err instanceof Error ? err.message : String(err)));
};

function readNumberFile(file: string): number | null {
  try {
    const t = readFileSync(file, "utf8").trim();
    return t === "max" ? Infinity : Number(t);
  } catch {
    return null;
  }
}

/** "key value" lines (cpu.stat, memory.events, memory.oom_control) as a map. */
function readKeyed(file: string): Map<string, number> | null {
  try {
    const out = new Map<string, number>();
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const [k, v] = line.trim().split(/\s+/);
      if (k && v !== undefined) out.set(k, Number(v));
    }
    return out;
  } catch {
    return null;
  }
}

/** Start time of a process in clock ticks since boot (/proc/<pid>/stat field 22), or undefined when it is gone. */
function startTimeOf(procRoot: string, pid: number): string | undefined {
  try {
    const stat = readFileSync(path.join(procRoot, String(pid), "stat"), "utf8");
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/**
 * The block device that holds `file`, as "major:minor", for io limits. A partition is
 * throttled through its disk (the kernel throttles whole disks). Returns a reason when the
 * filesystem has no block device (tmpfs, overlay, NFS).
 */
export function blockDeviceOf(file: string, sysRoot = "/sys"): { device: string } | { reason: string } {
  let dev: bigint;
  try {
    dev = statSync(file, { bigint: true }).dev;
  } catch (err) {
    return { reason: `cannot stat the model file ${file}: ${errText(err)}` };
  }
  // glibc's gnu_dev_major / gnu_dev_minor.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const id = `${major}:${minor}`;
  const sys = path.join(sysRoot, "dev", "block", id);
  if (!existsSync(sys)) return { reason: `the model file ${file} is on device ${id}, which is not a block device (tmpfs, overlay or a network filesystem): there is no disk to throttle` };
  if (!existsSync(path.join(sys, "partition"))) return { device: id };
  try {
    return { device: readFileSync(path.join(path.dirname(realpathSync(sys)), "dev"), "utf8").trim() };
  } catch (err) {
    return { reason: `cannot find the disk of partition ${id}: ${errText(err)}` };
  }
}

/** The cgroups of one worker; `place` each new process of it, `release` when it stops for good. */
export class WorkerCgroup {
  /** Each configured limit, enforced or not. */
  readonly limits: LimitStatus[];
  /** Groups created, by hierarchy. */
  private readonly dirs = new Map<CgroupHierarchy, string>();
  private released = false;

  constructor(
    private readonly manager: CgroupManager,
    readonly name: string,
    readonly resourceLimits: ResourceLimits,
    modelPath: string,
  ) {
    this.limits = limitEntries(resourceLimits).map((l) => ({ limit: l.name, value: l.text, enforced: false, reason: null, amount: l.amount }));
    const byHierarchy = new Map<CgroupHierarchy, LimitStatus[]>();
    for (const l of this.limits) {
      const h = manager.hierarchyOf(LIMIT_CONTROLLER[l.limit]);
      if (typeof h === "string") {
        l.reason = h;
        continue;
      }
      byHierarchy.set(h, [...(byHierarchy.get(h) ?? []), l]);
    }
    let device: { device: string } | { reason: string } | undefined;
    for (const [h, limits] of byHierarchy) {
      let dir: string;
      try {
        dir = manager.createGroup(h, name);
      } catch (err) {
        for (const l of limits) l.reason = err instanceof Error ? err.message : String(err);
        continue;
      }
      this.dirs.set(h, dir);
      for (const l of limits) {
        if (l.limit.startsWith("io.")) device ??= blockDeviceOf(modelPath, manager.sysRoot);
        try {
          const why = this.write(h, dir, l.limit, device);
          l.enforced = why === undefined;
          l.reason = why ?? null;
        } catch (err) {
          l.reason = `cannot write ${path.join(dir, fileOf(h, l.limit))}: ${errText(err)}`;
        }
      }
    }
  }

  /** Writes one limit; returns why it does not apply, or undefined when it was written. */
  private write(h: CgroupHierarchy, dir: string, limit: LimitName, device: { device: string } | { reason: string } | undefined): string | undefined {
    const r = this.resourceLimits;
    const put = (file: string, value: string | number) => writeFileSync(path.join(dir, file), String(value));
    // Swap accounting shows in the server's own group (a v2 root has no memory.swap.max: tried there).
    const need = (file: string, why: string): string | undefined => (h.version === 2 && h.atRoot) || existsSync(path.join(h.dir, file)) ? undefined : why;
    switch (limit) {
      case "cpu.quota": {
        const quotaUs = Math.max(1000, Math.round(r.cpu!.quota * r.cpu!.periodUs));
        if (h.version === 2) put("cpu.max", `${quotaUs} ${r.cpu!.periodUs}`);
        else {
          put("cpu.cfs_period_us", r.cpu!.periodUs);
          put("cpu.cfs_quota_us", quotaUs);
        }
        return undefined;
      }
      case "memory.limit":
        put(h.version === 2 ? "memory.max" : "memory.limit_in_bytes", r.memory!.limitBytes);
        return undefined;
      case "memory.swap": {
        if (h.version === 2) {
          const missing = need("memory.swap.max", "the kernel has no swap accounting (memory.swap.max is missing)");
          if (missing) return missing;
          put("memory.swap.max", r.swap!.bytes);
        } else {
          const missing = need("memory.memsw.limit_in_bytes", "the kernel has no swap accounting (memory.memsw.* is missing; boot with swapaccount=1)");
          if (missing) return missing;
          put("memory.memsw.limit_in_bytes", r.memory!.limitBytes + r.swap!.bytes);
        }
        return undefined;
      }
      case "io.read_bps":
      case "io.write_bps": {
        if (device === undefined || "reason" in device) return device?.reason ?? "no device";
        const read = limit === "io.read_bps";
        const bps = read ? r.ioRead!.bps : r.ioWrite!.bps;
        // v2: one line with both keys (the kernel keeps a key a write leaves out; a copy of the layout would not).
        if (h.version === 2) put("io.max", [device.device, r.ioRead ? `rbps=${r.ioRead.bps}` : "", r.ioWrite ? `wbps=${r.ioWrite.bps}` : ""].filter(Boolean).join(" "));
        else put(read ? "blkio.throttle.read_bps_device" : "blkio.throttle.write_bps_device", `${device.device} ${bps}`);
        return undefined;
      }
    }
  }

  /** The memory limit as configured, when enforced (the report of an OOM kill names it). */
  get memoryLimit(): string | undefined {
    return this.limits.find((l) => l.limit === "memory.limit" && l.enforced)?.value;
  }

  /** Groups this worker has (one per hierarchy used), for status. */
  get paths(): string[] {
    return [...this.dirs.values()];
  }

  /**
   * Moves process `pid` into the worker's groups. A group it cannot enter leaves the limits
   * of that hierarchy unenforced (reported, and returned as warnings).
   */
  place(pid: number): string[] {
    const warnings: string[] = [];
    for (const [h, dir] of this.dirs) {
      try {
        writeFileSync(path.join(dir, "cgroup.procs"), String(pid));
      } catch (err) {
        const why = `cannot move pid ${pid} into ${dir}: ${errText(err)}`;
        for (const l of this.limits) {
          if (!l.enforced || this.manager.hierarchyOf(LIMIT_CONTROLLER[l.limit]) !== h) continue;
          l.enforced = false;
          l.reason = why;
          warnings.push(`resource_limits.${l.limit} ${l.value} is not enforced for ${this.name}: ${why}`);
        }
      }
    }
    return warnings;
  }

  /** Processes killed by the memory limit so far (v2 memory.events, v1 memory.oom_control oom_kill); null when unknown. */
  oomKills(): number | null {
    const h = this.manager.hierarchyOf("memory");
    const dir = typeof h === "string" ? undefined : this.dirs.get(h);
    if (dir === undefined || typeof h === "string") return null;
    const kills = readKeyed(path.join(dir, h.version === 2 ? "memory.events" : "memory.oom_control"))?.get("oom_kill");
    return kills ?? null;
  }

  usage(): CgroupUsage {
    const at = (c: Controller): { h: CgroupHierarchy; dir: string } | undefined => {
      const h = this.manager.hierarchyOf(c);
      const dir = typeof h === "string" ? undefined : this.dirs.get(h);
      return dir === undefined || typeof h === "string" ? undefined : { h, dir };
    };
    const cpu = at("cpu");
    const mem = at("memory");
    const io = at("io");
    const cpuStat = cpu ? readKeyed(path.join(cpu.dir, "cpu.stat")) : null;
    const throttled = cpuStat === null ? null : cpu!.h.version === 2 ? (cpuStat.get("throttled_usec") ?? 0) / 1e6 : (cpuStat.get("throttled_time") ?? 0) / 1e9;
    let ioRead: number | null = null;
    let ioWrite: number | null = null;
    if (io) {
      try {
        const text = readFileSync(path.join(io.dir, io.h.version === 2 ? "io.stat" : "blkio.throttle.io_service_bytes"), "utf8");
        ioRead = ioWrite = 0;
        for (const line of text.split("\n")) {
          if (io.h.version === 2) {
            ioRead += Number(/\brbytes=(\d+)/.exec(line)?.[1] ?? 0);
            ioWrite += Number(/\bwbytes=(\d+)/.exec(line)?.[1] ?? 0);
          } else {
            const m = /^\S+ (Read|Write) (\d+)$/.exec(line.trim());
            if (m?.[1] === "Read") ioRead += Number(m[2]);
            if (m?.[1] === "Write") ioWrite += Number(m[2]);
          }
        }
      } catch {
        // no stats file: left null
      }
    }
    return {
      cpuThrottledSeconds: throttled,
      cpuThrottledPeriods: cpuStat?.get("nr_throttled") ?? null,
      memoryBytes: mem ? readNumberFile(path.join(mem.dir, mem.h.version === 2 ? "memory.current" : "memory.usage_in_bytes")) : null,
      memoryPeakBytes: mem ? readNumberFile(path.join(mem.dir, mem.h.version === 2 ? "memory.peak" : "memory.max_usage_in_bytes")) : null,
      ioReadBytes: ioRead,
      ioWriteBytes: ioWrite,
      oomKills: this.oomKills(),
    };
  }

  /** Removes the worker's groups (its processes have exited). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const dir of this.dirs.values()) this.manager.removeGroup(dir);
    this.dirs.clear();
  }
}

function fileOf(h: CgroupHierarchy, limit: LimitName): string {
  const v2: Record<LimitName, string> = { "cpu.quota": "cpu.max", "memory.limit": "memory.max", "memory.swap": "memory.swap.max", "io.read_bps": "io.max", "io.write_bps": "io.max" };
  const v1: Record<LimitName, string> = {
    "cpu.quota": "cpu.cfs_quota_us",
    "memory.limit": "memory.limit_in_bytes",
    "memory.swap": "memory.memsw.limit_in_bytes",
    "io.read_bps": "blkio.throttle.read_bps_device",
    "io.write_bps": "blkio.throttle.write_bps_device",
  };
  return (h.version === 2 ? v2 : v1)[limit];
}

/** The server's cgroups: its parent group in each hierarchy and the workers' groups beneath. */
export class CgroupManager {
  readonly sysRoot: string;
  private readonly procRoot: string;
  private readonly log: Logger;
  private readonly hierarchies: readonly CgroupHierarchy[];
  /** This server's parent group, by hierarchy, once created. */
  private readonly parents = new Map<CgroupHierarchy, string>();
  private readonly parentName: string;

  constructor(opts: CgroupManagerOptions) {
    this.hierarchies = opts.hierarchies;
    this.log = opts.log;
    this.procRoot = opts.procRoot ?? "/proc";
    this.sysRoot = opts.sysRoot ?? "/sys";
    const pid = opts.pid ?? process.pid;
    this.parentName = `moltbot-${pid}-${startTimeOf(this.procRoot, pid) ?? "0"}`;
  }

  /** The hierarchy carrying `controller`, or why there is none. */
  hierarchyOf(controller: Controller): CgroupHierarchy | string {
    if (process.platform !== "linux") return "cgroups exist only on Linux";
    const h = hierarchyFor(this.hierarchies, controller);
    if (h) return h;
    const v1 = controller === "io" ? "blkio" : controller;
    return `no cgroup hierarchy offers the ${controller} controller here (neither a v1 ${v1} mount nor cgroup v2 with ${controller} in the server's cgroup.controllers)`;
  }

  /** A cgroup for a new worker named `label`, its limits written; see WorkerCgroup.limits for what applied. */
  group(label: string, limits: ResourceLimits, modelPath: string): WorkerCgroup {
    const name = `w${++groupSeq}-${label.replace(/[^A-Za-z0-9._-]/g, "_")}`;
    const g = new WorkerCgroup(this, name, limits, modelPath);
    for (const l of g.limits) {
      if (!l.enforced) this.log.warning(`resource_limits.${l.limit} ${l.value} is not enforced for ${label}: ${l.reason}`);
    }
    return g;
  }

  /** Creates `<parent>/<name>` in `h` (and the parent first); throws an Error naming why not. */
  createGroup(h: CgroupHierarchy, name: string): string {
    const parent = this.parentIn(h);
    const dir = path.join(parent, name);
    try {
      mkdirSync(dir);
    } catch (err) {
      throw new Error(`cannot create cgroup ${dir}: ${errText(err)}`);
    }
    return dir;
  }

  private parentIn(h: CgroupHierarchy): string {
    const known = this.parents.get(h);
    if (known !== undefined) return known;
    const parent = path.join(h.dir, this.parentName);
    try {
      mkdirSync(parent, { recursive: true });
    } catch (err) {
      throw new Error(`cannot create cgroup ${parent}: ${errText(err)}`);
    }
    if (h.version === 2) this.enableV2(h, parent);
    this.parents.set(h, parent);
    return parent;
  }

  /**
   * In v2 a group's children get a controller only when the group lists it in
   * cgroup.subtree_control: the server's group for the parent, the parent for the workers. v2
   * refuses that (EBUSY) for a non-root group that holds processes itself; when the server is
   * alone in its group (a systemd service with Delegate=yes), it moves itself into a leaf
   * `<parent>/server` first, as systemd's delegation rules ask.
   */
  private enableV2(h: CgroupHierarchy, parent: string): void {
    const wanted = (["cpu", "memory", "io"] as const).filter((c) => h.controllers.includes(c));
    if (wanted.length === 0) return;
    const enable = (dir: string): void => {
      let have: string[] = [];
      try {
        have = readFileSync(path.join(dir, "cgroup.subtree_control"), "utf8").trim().split(/\s+/);
      } catch {
        // not there yet (a directory laid out like cgroupfs): nothing enabled
      }
      const missing = wanted.filter((c) => !have.includes(c));
      if (missing.length > 0) writeFileSync(path.join(dir, "cgroup.subtree_control"), missing.map((c) => `+${c}`).join(" "));
    };
    try {
      enable(h.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EBUSY") throw new Error(`cannot enable ${wanted.join(", ")} in ${h.dir}/cgroup.subtree_control: ${errText(err)}`);
      const others = readFileSync(path.join(h.dir, "cgroup.procs"), "utf8").split("\n").filter((p) => p !== "" && p !== String(process.pid));
      if (others.length > 0) {
        throw new Error(`cgroup v2 enables controllers only for a group without processes of its own, and the server's group ${h.dir} holds other processes (${others.slice(0, 5).join(", ")}): run the server in a group of its own (e.g. a systemd service with Delegate=yes)`);
      }
      const leaf = path.join(parent, "server");
      mkdirSync(leaf, { recursive: true });
      writeFileSync(path.join(leaf, "cgroup.procs"), String(process.pid));
      this.log.info(`Moved the server into ${leaf}: cgroup v2 gives controllers to a group's children only when it holds no process itself`);
      enable(h.dir);
    }
    enable(parent);
  }

  /** Removes a worker's group; one that still holds processes is left and reported. */
  removeGroup(dir: string): void {
    try {
      rmdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.log.warning(`Could not remove cgroup ${dir}: ${errText(err)}`);
    }
  }

  /**
   * Removes the parent groups of servers that are gone (crashed before their close), in every
   * hierarchy this one uses. Returns the groups removed.
   */
  cleanStale(): string[] {
    const removed: string[] = [];
    const seen = new Set<string>();
    for (const c of ["cpu", "memory", "io"] as const) {
      const h = this.hierarchyOf(c);
      if (typeof h === "string" || seen.has(h.dir)) continue;
      seen.add(h.dir);
      let names: string[];
      try {
        names = readdirSync(h.dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const m = PARENT_RE.exec(name);
        if (!m || name === this.parentName) continue;
        if (startTimeOf(this.procRoot, Number(m[1])) === m[2]) continue; // its server is alive
        const parent = path.join(h.dir, name);
        let left = 0;
        for (const child of safeReaddir(parent)) {
          const dir = path.join(parent, child);
          if (!isDir(dir)) continue;
          try {
            rmdirSync(dir);
          } catch (err) {
            left++;
            this.log.warning(`Stale cgroup ${dir} of a server that is gone cannot be removed: ${errText(err)}; left as it is`);
          }
        }
        if (left > 0) continue;
        try {
          rmdirSync(parent);
          removed.push(parent);
        } catch (err) {
          this.log.warning(`Stale cgroup ${parent} of a server that is gone cannot be removed: ${errText(err)}; left as it is`);
        }
      }
    }
    if (removed.length > 0) this.log.info(`Removed ${removed.length} cgroup(s) left by a server that stopped without cleaning up: ${removed.join(", ")}`);
    return removed;
  }

  /** Removes this server's parent groups (the workers' groups are gone by now). */
  close(): void {
    for (const parent of this.parents.values()) {
      // A server that moved itself into <parent>/server (v2) stays there until it exits; the next start cleans up.
      if (existsSync(path.join(parent, "server"))) continue;
      try {
        rmdirSync(parent);
      } catch (err) {
        // EBUSY / ENOTEMPTY: another server of this process still has workers in it.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "EBUSY" && code !== "ENOTEMPTY") this.log.warning(`Could not remove cgroup ${parent}: ${errText(err)}`);
      }
    }
    this.parents.clear();
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
