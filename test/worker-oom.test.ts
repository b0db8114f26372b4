// A ready worker killed by its memory limit, as ModelWorker sees it: the process dies of
// SIGKILL and its group's OOM-kill count has gone up. The kill here is a real SIGKILL of the
// real worker process; the group is a WorkerConfinement whose count the test raises as the
// kernel would (the real kernel's kill is in cgroups.test.ts, at load). In-flight requests end
// with a clear error, the worker restarts with backoff, and three kills in a row fail it.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { MoltbotError } from "../src/errors.js";
import { createLogger } from "../src/observe/logger.js";
import { MAX_OOM_KILLS, ModelWorker, type WorkerConfinement } from "../src/workers/model-worker.js";
import type { CgroupUsage, LimitStatus } from "../src/workers/cgroups/manager.js";
import type { WorkerInit } from "../src/workers/protocol.js";
import type { GenerationParams } from "../src/engine/types.js";
import { TEST_ENGINE, tempDir, tinyModelPath, until } from "./helpers/fixtures.js";

const dir = await tempDir("moltbot-worker-oom-");
const logFile = path.join(dir, "moltbot.log");
const log = createLogger({ level: "DEBUG", format: "text", file: logFile, stdout: false });
const lines = () => readFileSync(logFile, "utf8").split("\n");
after(() => log.close());
const params: GenerationParams = { temperature: 0, topP: 1, seed: undefined, maxTokens: 4000, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };

/** A memory group as the kernel keeps it: the OOM-kill count, the processes placed, released or not. */
class Group implements WorkerConfinement {
  kills = 0;
  placed: number[] = [];
  released = false;
  readonly limits: LimitStatus[] = [{ limit: "memory.limit", value: "4GiB", enforced: true, reason: null, amount: 4 * 2 ** 30 }];
  readonly memoryLimit = "4GiB";
  place(pid: number): string[] {
    this.placed.push(pid);
    return [];
  }
  oomKills(): number {
    return this.kills;
  }
  usage(): CgroupUsage {
    return { cpuThrottledSeconds: 0, cpuThrottledPeriods: 0, memoryBytes: 0, memoryPeakBytes: 0, ioReadBytes: 0, ioWriteBytes: 0, oomKills: this.kills };
  }
  release(): void {
    this.released = true;
  }
}

test("killed by its memory limit: reported, its request told, restarted with backoff; three in a row fail it", async () => {
  const init: WorkerInit = { name: "chat", version: "v2.0", modelPath: await tinyModelPath(), contextSize: 4096, parallel: 1, threads: 1, embedding: false, speculative: false, promptCacheBytes: 0, engine: TEST_ENGINE };
  const group = new Group();
  const w = new ModelWorker(init, log.child("model_loader"), { initialMs: 20, maxMs: 100, stableMs: 30_000 }, undefined, undefined, group);
  const seen: string[] = [w.state];
  w.onStateChange((to) => seen.push(to));
  await w.start();
  assert.deepEqual(group.placed, [w.pid], "placed before it loaded (it waited for 'load')");

  for (let kill = 1; kill <= MAX_OOM_KILLS; kill++) {
    await w.whenReady();
    const pid = w.pid!;
    let streamed = 0;
    const running = w.generate({ kind: "text", text: "the" }, params, { onText: () => void streamed++ });
    await until("tokens to flow", () => streamed > 0);
    group.kills++; // what the kernel counts in memory.events / memory.oom_control when it kills
    process.kill(pid, "SIGKILL");
    await assert.rejects(running, (err: unknown) => {
      assert.ok(err instanceof MoltbotError && err.code === "worker_crashed");
      assert.match(err.message, new RegExp(`the worker of model chat v2\\.0 exited unexpectedly \\(killed by its memory limit 4GiB, ${kill} of 3 in a row\\); it is ${kill < 3 ? "being restarted" : "not restarted"}`));
      return true;
    });
    if (kill < MAX_OOM_KILLS) await until("the restart", () => w.pid !== undefined && w.pid !== pid);
  }
  await until("failed", () => w.state === "failed");
  assert.deepEqual(seen, ["spawning", "loading", "ready", ...Array(2).fill(["crashed", "restarting", "spawning", "loading", "ready"]).flat(), "crashed", "failed"]);
  assert.equal(group.placed.length, 3, "each new process placed");
  assert.equal(lines().filter((l) => /\[ERROR\] \[worker\] model chat v2\.0 killed: memory limit 4GiB exceeded$/.test(l)).length, 3);
  assert.ok(lines().some((l) => /\[ERROR\] \[worker\] model chat v2\.0 marked failed: killed by its memory limit 4GiB 3 times in a row/.test(l)));
  await assert.rejects(w.prepare({ kind: "text", text: "hi" }), /model chat v2\.0 is failed \(killed by its memory limit 4GiB 3 times in a row; raise resource_limits\.memory\.limit/);
  assert.equal(group.released, false, "kept while failed (status shows it)");
  await w.close(1000);
  assert.equal(group.released, true, "removed when stopped");
});

test("a kill that is not the memory limit's is an ordinary crash", async () => {
  const init: WorkerInit = { name: "chat", version: "v1", modelPath: await tinyModelPath(), contextSize: 256, parallel: 1, threads: 1, embedding: false, speculative: false, promptCacheBytes: 0, engine: TEST_ENGINE };
  const group = new Group();
  const w = new ModelWorker(init, log.child("model_loader"), { initialMs: 20, maxMs: 100, stableMs: 30_000 }, undefined, undefined, group);
  await w.start();
  const pid = w.pid!;
  process.kill(pid, "SIGKILL");
  await until("the restart", () => w.pid !== undefined && w.pid !== pid && w.state === "ready");
  assert.equal(w.oomKillsInRow, 0);
  assert.ok(lines().some((l) => /Worker of model chat v1 exited \(signal SIGKILL\); restarting/.test(l)));
  await w.close(1000);
});
