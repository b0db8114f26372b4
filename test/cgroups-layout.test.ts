// The cgroup module against texts and directory trees of other hosts: a cgroup v2 host (a
// temporary directory laid out like its cgroupfs, the server in a systemd service), a
// container whose mount shows only its subtree; and resource_limits resolved and checked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { tempDir } from "./helpers/fixtures.js";
import { findHierarchies, hierarchyFor } from "../src/workers/cgroups/hierarchy.js";
import { blockDeviceOf, CgroupManager } from "../src/workers/cgroups/manager.js";
import { resolveLimits, threadsWithinQuota } from "../src/workers/cgroups/limits.js";
import { createLogger } from "../src/observe/logger.js";
import { loadConfig } from "../src/config/load.js";
import { planPool } from "../src/pool/plan.js";
import { MoltbotError } from "../src/errors.js";

const quietLog = () => {
  const lines: string[] = [];
  const log = createLogger({ level: "DEBUG", format: "text", stdout: false });
  const wrap = (l: typeof log): typeof log => ({ ...l, child: () => wrap(l), warning: (m: string) => void lines.push(`WARNING ${m}`), info: (m: string) => void lines.push(`INFO ${m}`) });
  return { log: wrap(log), lines };
};

test("cgroup v2: the worker's group beneath the server's, controllers enabled, limits written, usage and OOM kills read", async () => {
  const root = await tempDir("moltbot-cgroup2-");
  const service = path.join(root, "system.slice", "moltbot.service");
  mkdirSync(service, { recursive: true });
  writeFileSync(path.join(service, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  writeFileSync(path.join(service, "cgroup.subtree_control"), "\n");
  writeFileSync(path.join(service, "memory.swap.max"), "max\n");
  const hierarchies = findHierarchies("0::/system.slice/moltbot.service\n", `40 30 0:37 / ${root} rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n`);
  assert.deepEqual(hierarchies, [{ version: 2, controllers: ["cpuset", "cpu", "io", "memory", "pids"], dir: service, atRoot: false }]);

  const model = path.join(root, "weights.bin"); // on the disk of the temporary directory
  writeFileSync(model, "x");
  const { log, lines } = quietLog();
  const mgr = new CgroupManager({ hierarchies, log, pid: 4242, procRoot: path.join(root, "no-proc") });
  const limits = resolveLimits({ cpu: { quota: "150%", period: "100ms" }, memory: { limit: "4GiB", swap: "1GiB" }, io: { read_bps: "10MB/s", write_bps: "5MB/s" } }, undefined, "f", "x");
  const g = mgr.group("model chat v2.0", limits, model);
  assert.equal(g.paths.length, 1);
  const dir = g.paths[0]!;
  assert.match(dir, new RegExp(`^${service}/moltbot-4242-0/w\\d+-model_chat_v2\\.0$`));
  const dev = blockDeviceOf(model);
  const io = "device" in dev;
  assert.deepEqual(
    g.limits.map((l) => [l.limit, l.enforced]),
    [["cpu.quota", true], ["memory.limit", true], ["memory.swap", true], ["io.read_bps", io], ["io.write_bps", io]],
    JSON.stringify(g.limits),
  );
  const file = (f: string) => readFileSync(path.join(dir, f), "utf8");
  assert.equal(file("cpu.max"), "150000 100000");
  assert.equal(file("memory.max"), String(4 * 2 ** 30));
  assert.equal(file("memory.swap.max"), String(2 ** 30), "v2 swap is the swap alone");
  if ("device" in dev) assert.equal(file("io.max"), `${dev.device} rbps=10000000 wbps=5000000`);
  else assert.equal(lines.filter((l) => l.startsWith("WARNING resource_limits.io.")).length, 2, "one warning per limit not applied");
  assert.equal(readFileSync(path.join(service, "cgroup.subtree_control"), "utf8"), "+cpu +memory +io");
  assert.equal(readFileSync(path.join(service, "moltbot-4242-0", "cgroup.subtree_control"), "utf8"), "+cpu +memory +io");

  assert.deepEqual(g.place(777), []);
  assert.equal(file("cgroup.procs"), "777");
  writeFileSync(path.join(dir, "cpu.stat"), "usage_usec 900000\nuser_usec 800000\nsystem_usec 100000\nnr_periods 20\nnr_throttled 7\nthrottled_usec 1500000\n");
  writeFileSync(path.join(dir, "memory.current"), "1048576\n");
  writeFileSync(path.join(dir, "memory.peak"), "2097152\n");
  writeFileSync(path.join(dir, "memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
  writeFileSync(path.join(dir, "io.stat"), "254:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n8:0 rbytes=100 wbytes=0 rios=1 wios=0\n");
  assert.deepEqual(g.usage(), { cpuThrottledSeconds: 1.5, cpuThrottledPeriods: 7, memoryBytes: 1048576, memoryPeakBytes: 2097152, ioReadBytes: 4196, ioWriteBytes: 512, oomKills: 1 });
  assert.equal(g.memoryLimit, "4GiB");

  // A real cgroupfs removes its own files with the directory; this copy needs them gone first.
  for (const f of ["cgroup.procs", "cpu.max", "memory.max", "memory.swap.max", "io.max", "cpu.stat", "memory.current", "memory.peak", "memory.events", "io.stat"]) rmSync(path.join(dir, f), { force: true });
  g.release();
  assert.ok(!existsSync(dir));
  rmSync(path.join(service, "moltbot-4242-0", "cgroup.subtree_control"));
  mgr.close();
  assert.ok(!existsSync(path.join(service, "moltbot-4242-0")));
  rmSync(root, { recursive: true, force: true });
});

test("a limit without its controller is reported, not applied; the others are", async () => {
  const root = await tempDir("moltbot-cgroup2-");
  writeFileSync(path.join(root, "cgroup.controllers"), "cpu pids\n");
  const hierarchies = findHierarchies("0::/\n", `40 30 0:37 / ${root} rw - cgroup2 cgroup2 rw\n`);
  assert.equal(hierarchies[0]!.atRoot, true);
  const { log, lines } = quietLog();
  const mgr = new CgroupManager({ hierarchies, log, pid: 1 });
  const g = mgr.group("model a v1", resolveLimits({ cpu: { quota: "50%" }, memory: { limit: "1GiB" } }, undefined, "f", "x"), path.join(root, "cgroup.controllers"));
  assert.deepEqual(g.limits.map((l) => [l.limit, l.enforced]), [["cpu.quota", true], ["memory.limit", false]]);
  assert.match(g.limits[1]!.reason!, /no cgroup hierarchy offers the memory controller/);
  assert.equal(lines.filter((l) => l.startsWith("WARNING")).length, 1);
  assert.match(lines.find((l) => l.startsWith("WARNING"))!, /^WARNING resource_limits\.memory\.limit 1GiB is not enforced for model a v1: no cgroup hierarchy/);
  assert.match(g.paths[0]!, /\/moltbot-1-\d+\/w\d+-model_a_v1$/, "never at the root: beneath the server's parent group");
  assert.equal(g.memoryLimit, undefined);
  rmSync(root, { recursive: true, force: true });
});

test("hierarchies: v1 beside an empty v2 (hybrid), and a container that sees only its own subtree", () => {
  const mountinfo = [
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "37 30 0:34 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio",
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
  ].join("\n");
  const hs = findHierarchies("9:name=systemd:/\n7:blkio:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n", mountinfo, () => "");
  assert.deepEqual(hierarchyFor(hs, "cpu"), { version: 1, controllers: ["cpu", "cpuacct"], dir: "/sys/fs/cgroup/cpu,cpuacct", atRoot: true });
  assert.equal(hierarchyFor(hs, "memory")!.dir, "/sys/fs/cgroup/memory/process_api/abc");
  assert.equal(hierarchyFor(hs, "io")!.dir, "/sys/fs/cgroup/blkio");
  // A container: the mount's root is the container's group; /proc/self/cgroup says where in it the server is.
  const inContainer = findHierarchies("0::/docker/c0ffee/app\n", "50 40 0:40 /docker/c0ffee /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", () => "cpu memory io\n");
  assert.deepEqual(inContainer, [{ version: 2, controllers: ["cpu", "memory", "io"], dir: "/sys/fs/cgroup/app", atRoot: false }]);
  // A group the mount does not show is not guessed at.
  assert.deepEqual(findHierarchies("0::/elsewhere\n", "50 40 0:40 /docker/c0ffee /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", () => ""), []);
});

test("resource_limits: pool entries override key by key; strict values; threads follow the quota", async () => {
  const global = { cpu: { quota: "150%", period: "100ms" }, memory: { limit: "4GiB", swap: "1GiB" }, io: { read_bps: "10MB/s", write_bps: "5MB/s" } };
  const own = resolveLimits(global, { memory: { limit: "8GiB" } }, "f", "model_pool[1].resource_limits");
  assert.deepEqual(own.memory, { limitBytes: 8 * 2 ** 30, text: "8GiB" });
  assert.deepEqual(own.swap, { bytes: 2 ** 30, text: "1GiB" });
  assert.deepEqual(own.cpu, { quota: 1.5, periodUs: 100_000, text: "150%" });
  assert.equal(threadsWithinQuota(8, own), 2, "150%: at most 2 threads");
  assert.equal(threadsWithinQuota(8, resolveLimits({ cpu: { quota: "50%" } }, undefined, "f", "x")), 1);
  assert.equal(threadsWithinQuota(1, own), 1);
  assert.equal(threadsWithinQuota(4, {}), 4);

  const bad = (g: object, o: object | undefined, re: RegExp) =>
    assert.throws(() => resolveLimits(g, o, "moltbot.yaml", "model_pool[0].resource_limits"), (e: unknown) => e instanceof MoltbotError && e.code === "config_invalid" && re.test(e.message));
  bad({ memory: { swap: "1GiB" } }, undefined, /^moltbot\.yaml: resource_limits\.memory\.swap: set without memory\.limit/);
  bad({}, { cpu: { quota: "50%", period: "2s" } }, /^moltbot\.yaml: model_pool\[0\]\.resource_limits\.cpu\.period: 2s is outside 1ms\.\.1s/);
  bad({ cpu: { period: "100ms" } }, undefined, /cpu\.period: set without cpu\.quota/);
  bad({ cpu: { quota: "0.5%", period: "100ms" } }, undefined, /cpu\.quota: 0\.5% of a 100 ms period is under 1 ms/);
  bad({ memory: { limit: "1MiB" } }, undefined, /memory\.limit: 1MiB is below 16MiB/);
  bad({ io: { read_bps: "0MB/s" } }, undefined, /io\.read_bps: must be above 0/);

  // Through the config loader and the pool plan: the per-entry key exists and is strict.
  const dir = await tempDir("moltbot-limits-");
  const file = path.join(dir, "moltbot.yaml");
  writeFileSync(file, ["resource_limits:", "  cpu: { quota: 150%, period: 100ms }", "model_pool:", "  - name: chat", "    resource_limits:", "      memory: { limit: 2GiB }"].join("\n"));
  const { config, notEnforced } = loadConfig({ file, env: {} });
  assert.deepEqual(notEnforced, []);
  const model = { name: "chat", active: { version: "v1", config: { type: "llm" } } } as unknown as Parameters<typeof planPool>[1][number];
  const plan = planPool(config, [model], file);
  assert.equal(plan.models[0]!.limits.cpu!.quota, 1.5);
  assert.equal(plan.models[0]!.limits.memory!.limitBytes, 2 * 2 ** 30);
  writeFileSync(file, ["model_pool:", "  - name: chat", "    resource_limits:", "      memory: { limt: 2GiB }"].join("\n"));
  assert.throws(() => loadConfig({ file, env: {} }), /model_pool\[0\]\.resource_limits\.memory/);
  rmSync(dir, { recursive: true, force: true });
});
