// resource_limits for real: the workers' cgroups on this host (v1 cpu, memory and blkio
// mounted and writable as root on the CI machines; a v2 host works the same way). A worker
// runs under its CPU quota (throttled), one over its memory limit is killed, reported,
// restarted and failed while another model keeps answering, and every group is removed.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";
import { hierarchyFor, ownHierarchies } from "../src/workers/cgroups/hierarchy.js";
import { blockDeviceOf, CgroupManager } from "../src/workers/cgroups/manager.js";
import { createLogger } from "../src/observe/logger.js";
import type { AdminStatus } from "../src/server/routes/admin.js";

const hierarchies = ownHierarchies();
const cpu = hierarchyFor(hierarchies, "cpu");
const memory = hierarchyFor(hierarchies, "memory");

// Not skipped: CI runs these as root on machines with the controllers; say plainly what is missing.
test("this host offers writable cpu and memory cgroups", () => {
  assert.equal(process.getuid?.(), 0, "these tests need root to create cgroups");
  assert.ok(cpu && memory, `no cpu or memory controller in ${JSON.stringify(hierarchies)}`);
});

const servers: RunningServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

const ourParents = () =>
  [cpu, memory].flatMap((h) => (h ? readdirSync(h.dir).filter((n) => n === `moltbot-${process.pid}-${ownStart()}`).map((n) => path.join(h.dir, n)) : []));
const ownStart = () => {
  const stat = readFileSync("/proc/self/stat", "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
};

test("a worker runs in its own cgroups under its limits, with threads for its quota; they are removed at stop", async () => {
  const repo = await makeRepository([{ name: "chat", version: "v1", parallel: 1, contextSize: 4096 }]);
  const srv = await startServer(repo, {
    threads: 2,
    config: { resource_limits: { cpu: { quota: "50%", period: "100ms" }, memory: { limit: "512MiB", swap: "0" }, io: { read_bps: "10MB/s", write_bps: "5MB/s" } } },
  });
  servers.push(srv);
  const worker = srv.server.models.entries[0]!.served.worker;
  assert.equal(worker.init.threads, 1, "50% of a core: one thread");
  const c = worker.confinement!;
  assert.deepEqual(
    c.limits.map((l) => [l.limit, l.enforced, l.reason]),
    [
      ["cpu.quota", true, null],
      ["memory.limit", true, null],
      ["memory.swap", true, null],
      ["io.read_bps", true, null],
      ["io.write_bps", true, null],
    ],
  );
  const groups = (c as unknown as { paths: string[] }).paths;
  for (const dir of groups) {
    assert.ok(!hierarchies.some((h) => path.dirname(dir) === h.dir), `${dir} is two levels below the server's group`);
    assert.ok(readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").includes(String(worker.pid)), `pid ${worker.pid} is in ${dir}`);
  }
  const read = (h: typeof cpu, file: string) => readFileSync(path.join(groups.find((d) => d.startsWith(h!.dir + "/"))!, file), "utf8").trim();
  if (cpu!.version === 1) {
    assert.equal(read(cpu, "cpu.cfs_quota_us"), "50000");
    assert.equal(read(cpu, "cpu.cfs_period_us"), "100000");
    assert.equal(read(memory, "memory.limit_in_bytes"), String(512 * 2 ** 20));
    assert.equal(read(memory, "memory.memsw.limit_in_bytes"), String(512 * 2 ** 20));
    const dev = blockDeviceOf(worker.init.modelPath);
    if ("device" in dev) assert.equal(read(hierarchyFor(hierarchies, "io"), "blkio.throttle.read_bps_device"), `${dev.device} 10000000`);
  } else {
    assert.equal(read(cpu, "cpu.max"), "50000 100000");
  }

  // Half a core for a compute-bound generation: the kernel throttles it.
  const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  const r = await client.completions.create({ model: "chat", prompt: "the", max_tokens: 1500, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal(r.usage!.completion_tokens, 1500);
  const usage = c.usage();
  assert.ok(usage.cpuThrottledPeriods! > 0, `throttled periods: ${usage.cpuThrottledPeriods}`);
  assert.ok(usage.memoryBytes! > 0 && usage.memoryPeakBytes! >= usage.memoryBytes!, JSON.stringify(usage));

  const status = (await (await fetch(`${srv.url}/admin/status`)).json()) as AdminStatus;
  const res = status.models[0]!.resources!;
  assert.equal(res.limits.length, 5);
  assert.ok(res.limits.every((l) => l.enforced));
  assert.ok(res.usage.cpu_throttled_s! > 0);
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert.match(metrics, /moltbot_worker_limit\{model="chat",version="v1",limit="cpu.quota"\} 0.5/);
  assert.match(metrics, /moltbot_worker_limit_enforced\{model="chat",version="v1",limit="memory.limit"\} 1/);
  assert.match(metrics, /moltbot_worker_cpu_throttled_seconds_total\{model="chat",version="v1"\} [0-9.]+/);
  assert.match(metrics, /moltbot_worker_memory_peak_bytes\{model="chat",version="v1"\} [1-9]/);

  await srv.close();
  servers.pop();
  for (const dir of groups) assert.ok(!existsSync(dir), `${dir} removed`);
  assert.deepEqual(ourParents(), [], "the server's parent groups are removed at close");
});

test("a worker over its memory limit is killed, reported, restarted, then failed; the other model keeps answering", async () => {
  // Its KV buffer alone (32768 x 4 cells of the tiny model, ~32 MiB, written at load) is over 16MiB.
  const repo = await makeRepository([
    { name: "ok", version: "v1", parallel: 1 },
    { name: "hog", version: "v2.0", parallel: 4, contextSize: 32768 },
  ]);
  const srv = await startServer(repo, {
    config: {
      model_pool: [{ name: "ok" }, { name: "hog", resource_limits: { memory: { limit: "16MiB", swap: "0" } } }],
      worker: { restart_backoff_ms: { initial: 20, max: 100 } },
    },
  });
  servers.push(srv);
  const hog = srv.server.versions.get("hog")!.worker;
  assert.equal(hog.state, "failed");
  const killed = srv.lines().filter((l) => /\[ERROR\] \[worker\] model hog v2\.0 killed: memory limit 16MiB exceeded$/.test(l));
  assert.equal(killed.length, 3, srv.lines().join("\n"));
  assert.ok(srv.lines().some((l) => /\[ERROR\] \[worker\] model hog v2\.0 marked failed: killed by its memory limit 16MiB 3 times in a row/.test(l)));
  assert.equal(hog.restarts, 2);
  assert.equal(hog.confinement!.oomKills(), 3);

  const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  const ok = await client.chat.completions.create({ model: "ok", messages: [{ role: "user", content: "hi" }], max_tokens: 5 });
  assert.equal(ok.choices.length, 1);
  await assert.rejects(client.chat.completions.create({ model: "hog", messages: [{ role: "user", content: "hi" }], max_tokens: 5 }), (err: InstanceType<typeof OpenAI.APIError>) => {
    assert.equal(err.status, 503);
    assert.match(err.message, /model hog v2\.0 is failed \(killed by its memory limit 16MiB 3 times in a row/);
    return true;
  });
  const status = (await (await fetch(`${srv.url}/admin/status`)).json()) as AdminStatus;
  const hogStatus = status.models.find((m) => m.name === "hog")!;
  assert.equal(hogStatus.state, "failed");
  assert.equal(hogStatus.resources!.usage.oom_kills, 3);
  assert.equal(status.models.find((m) => m.name === "ok")!.resources, null, "no limits: no cgroup");
});

test("groups a crashed server left are removed at the next start; live servers' and foreign groups are not", () => {
  const h = cpu!;
  const stale = path.join(h.dir, "moltbot-999999999-12345");
  const live = path.join(h.dir, `moltbot-1-${readFileSync("/proc/1/stat", "utf8").split(") ")[1]!.split(" ")[19]}`);
  const foreign = path.join(h.dir, "moltbot-test-foreign");
  mkdirSync(path.join(stale, "w1-chat-v1"), { recursive: true });
  mkdirSync(live, { recursive: true });
  mkdirSync(foreign, { recursive: true });
  try {
    const log = createLogger({ level: "ERROR", format: "text", stdout: false });
    const removed = new CgroupManager({ hierarchies, log }).cleanStale();
    assert.ok(removed.includes(stale), JSON.stringify(removed));
    assert.ok(!existsSync(stale));
    assert.ok(existsSync(live), "pid 1 is alive with that start time");
    assert.ok(existsSync(foreign), "not ours");
  } finally {
    for (const d of [path.join(stale, "w1-chat-v1"), stale, live, foreign]) if (existsSync(d)) rmdirSync(d);
  }
});
