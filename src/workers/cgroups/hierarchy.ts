// Where this process's own cgroups are: /proc/self/cgroup names the group in each hierarchy
// (v1: one line per hierarchy with its controllers; v2: the "0::" line), /proc/self/mountinfo
// where each hierarchy is mounted and which part of it the mount shows (a container sees its
// own subtree as the mount's root). Pure parsing of the two texts, so a host is described by
// them and a directory tree (the v2 test lays one out in a temporary directory).
import { readFileSync } from "node:fs";
import path from "node:path";

/** The controllers resource_limits uses. */
export type Controller = "cpu" | "memory" | "io";

export interface CgroupHierarchy {
  version: 1 | 2;
  /** v1: the controllers mounted on this hierarchy (e.g. ["cpu", "cpuacct"]); v2: those the server's group offers (its cgroup.controllers). */
  controllers: string[];
  /** Absolute directory of the server's own group in this hierarchy. */
  dir: string;
  /** True when `dir` is the hierarchy's root (no group above it). */
  atRoot: boolean;
}

interface Mount {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** mountinfo: "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory". */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const left = line.slice(0, dash).split(" ");
    const right = line.slice(dash + 3).split(" ");
    if (left.length < 5 || right.length < 3) continue;
    mounts.push({ root: unescapeMount(left[3]!), mountPoint: unescapeMount(left[4]!), fsType: right[0]!, superOptions: right[2]!.split(",") });
  }
  return mounts;
}

/** mountinfo escapes space, tab, newline and backslash as octal (\040). */
const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** /proc/self/cgroup: "4:memory:/a/b", "1:cpu,cpuacct:/", "0::/user.slice/x.scope". */
export function parseProcCgroup(text: string): Array<{ controllers: string[]; path: string }> {
  const out: Array<{ controllers: string[]; path: string }> = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (m) out.push({ controllers: m[2] === "" ? [] : m[2]!.split(","), path: m[3]! });
  }
  return out;
}

/** The group `cgroupPath` seen through `mount`, or undefined when the mount does not show it. */
function dirIn(mount: Mount, cgroupPath: string): { dir: string; atRoot: boolean } | undefined {
  const rel = path.posix.relative(mount.root, cgroupPath);
  if (rel.startsWith("..") || path.posix.isAbsolute(rel)) return undefined;
  return { dir: path.join(mount.mountPoint, rel), atRoot: cgroupPath === "/" };
}

/**
 * The hierarchies this process is in, from the texts of /proc/self/cgroup and
 * /proc/self/mountinfo. A v2 hierarchy's controllers are read from `<dir>/cgroup.controllers`
 * (`read` is the file reader; a missing file means none).
 */
export function findHierarchies(procCgroup: string, mountinfo: string, read: (file: string) => string | undefined = readText): CgroupHierarchy[] {
  const mounts = parseMountinfo(mountinfo);
  const out: CgroupHierarchy[] = [];
  for (const line of parseProcCgroup(procCgroup)) {
    if (line.controllers.length === 0) {
      // v2 is the line without controllers and hierarchy id 0; a v1 "name=" line has a name.
      const mount = mounts.find((m) => m.fsType === "cgroup2" && dirIn(m, line.path) !== undefined);
      const at = mount && dirIn(mount, line.path);
      if (!at) continue;
      const controllers = (read(path.join(at.dir, "cgroup.controllers")) ?? "").trim().split(/\s+/).filter(Boolean);
      out.push({ version: 2, controllers, ...at });
      continue;
    }
    if (line.controllers.some((c) => c.startsWith("name="))) continue; // named hierarchies carry no controller
    const mount = mounts.find((m) => m.fsType === "cgroup" && line.controllers.every((c) => m.superOptions.includes(c)) && dirIn(m, line.path) !== undefined);
    const at = mount && dirIn(mount, line.path);
    if (at) out.push({ version: 1, controllers: line.controllers, ...at });
  }
  return out;
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** v1 controller names of each resource. */
const V1_NAME: Record<Controller, string> = { cpu: "cpu", memory: "memory", io: "blkio" };

/**
 * The hierarchy that carries `controller`: a v1 hierarchy with it mounted (a controller bound
 * to v1 is not available in v2), else the v2 one when the server's group offers it.
 */
export function hierarchyFor(hierarchies: readonly CgroupHierarchy[], controller: Controller): CgroupHierarchy | undefined {
  return hierarchies.find((h) => h.version === 1 && h.controllers.includes(V1_NAME[controller])) ?? hierarchies.find((h) => h.version === 2 && h.controllers.includes(controller));
}

/** This process's hierarchies, read from `procRoot` (normally /proc). */
export function ownHierarchies(procRoot = "/proc"): CgroupHierarchy[] {
  const cg = readText(path.join(procRoot, "self", "cgroup"));
  const mi = readText(path.join(procRoot, "self", "mountinfo"));
  return cg === undefined || mi === undefined ? [] : findHierarchies(cg, mi);
}
