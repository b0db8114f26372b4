// The worker lifecycle: the table of legal transitions, and real worker processes going
// through load, crash and restart, drain and stop, observed through onStateChange.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { MoltbotError } from "../src/errors.js";
import { createLogger } from "../src/observe/logger.js";
import { ModelWorker } from "../src/workers/model-worker.js";
import { canTransition, WORKER_TRANSITIONS, type WorkerState } from "../src/workers/worker-state.js";
import type { WorkerInit } from "../src/workers/protocol.js";
import { TEST_ENGINE, tempDir, tinyModelPath, until } from "./helpers/fixtures.js";

const dir = await tempDir("moltbot-worker-state-");
const logFile = path.join(dir, "moltbot.log");
const log = createLogger({ level: "DEBUG", format: "text", file: logFile, stdout: false });
const lines = () => readFileSync(logFile, "utf8").split("\n");
const workers: ModelWorker[] = [];
after(async () => {
  await Promise.all(workers.map((w) => w.close(0)));
  log.close();
});

function worker(modelPath: string): { w: ModelWorker; seen: string[] } {
  const init: WorkerInit = { name: "tiny", version: "v1", modelPath, contextSize: 256, parallel: 1, threads: 1, embedding: false, speculative: false, promptCacheBytes: 0, engine: TEST_ENGINE };
  const w = new ModelWorker(init, log.child("model_loader"), { initialMs: 50, maxMs: 200, stableMs: 30_000 });
  workers.push(w);
  const seen: string[] = [w.state];
  w.onStateChange((to, from) => {
    assert.equal(from, seen.at(-1), "listeners see every transition, in order");
    seen.push(to);
  });
  return { w, seen };
}

const isCode = (code: string) => (err: unknown) => err instanceof MoltbotError && err.code === code;
const listenerCount = (w: ModelWorker) => (w as unknown as { listeners: Set<unknown> }).listeners.size;

test("the table: a stopped worker never moves, only close() leaves failed, every state is listed", () => {
  const all = Object.keys(WORKER_TRANSITIONS) as WorkerState[];
  assert.equal(all.length, 9);
  for (const to of all) assert.equal(canTransition("stopped", to), false);
  assert.deepEqual(WORKER_TRANSITIONS.failed, ["stopped"]);
  assert.equal(canTransition("ready", "loading"), false);
  assert.equal(canTransition("crashed", "ready"), false);
  assert.equal(canTransition("draining", "ready"), false);
});

test("an illegal transition is refused, logged, and changes nothing", () => {
  const { w, seen } = worker("/nonexistent.gguf");
  const setState = (w as unknown as { setState(to: WorkerState, why: string): void }).setState.bind(w);
  assert.throws(() => setState("ready", "test"), (err: unknown) => isCode("internal_error")(err) && /spawning → ready/.test((err as Error).message));
  assert.equal(w.state, "spawning");
  assert.deepEqual(seen, ["spawning"]);
  assert.ok(lines().some((l) => /\[ERROR\].*illegal state transition spawning → ready/.test(l)));
});

test("a first start that cannot load fails; close() then stops it", async () => {
  const bad = path.join(dir, "bad.gguf");
  await writeFile(bad, "not a gguf file at all");
  const { w, seen } = worker(bad);
  await assert.rejects(w.start(), isCode("repository_invalid"));
  assert.deepEqual(seen, ["spawning", "loading", "failed"]);
  await assert.rejects(w.whenReady(), isCode("worker_unavailable"));
  await w.close(1000);
  assert.deepEqual(seen, ["spawning", "loading", "failed", "stopped"]);
});

test("load, crash and restart, drain and stop; whenReady follows", async () => {
  const { w, seen } = worker(await tinyModelPath());
  w.onStateChange(() => {
    throw new Error("a broken listener");
  });
  await w.start();
  assert.deepEqual(seen, ["spawning", "loading", "ready"]);
  await w.whenReady(); // at once
  assert.ok(lines().some((l) => /Model v1 loaded successfully \(tiny, \d+ ms, pid \d+\)/.test(l)));
  assert.ok(lines().some((l) => /\[ERROR\].*A state listener of model tiny v1 threw on loading → ready: a broken listener/.test(l)));

  process.kill(w.pid!, "SIGKILL");
  await until("the crash to be seen", () => w.state !== "ready");
  const back = w.whenReady();
  await assert.rejects(w.whenReady(undefined, 1), isCode("worker_unavailable"), "a timeout");
  const ac = new AbortController();
  const aborted = w.whenReady(ac.signal);
  ac.abort(new Error("caller gave up"));
  await assert.rejects(aborted, /caller gave up/);
  await back;
  assert.deepEqual(seen.slice(2), ["ready", "crashed", "restarting", "spawning", "loading", "ready"]);
  assert.equal(w.restarts, 1);
  assert.equal(listenerCount(w), 2, "whenReady left no listener behind");
  assert.equal((await w.prepare({ kind: "text", text: "hello" })).incarnation, 2);

  const closing = w.close();
  assert.equal(w.state, "draining");
  await assert.rejects(w.prepare({ kind: "text", text: "late" }), isCode("server_shutting_down"));
  await assert.rejects(w.whenReady(), isCode("worker_unavailable"));
  await closing;
  assert.deepEqual(seen.slice(-3), ["ready", "draining", "stopped"]);
  await w.close(); // idempotent
  await assert.rejects(w.prepare({ kind: "text", text: "later" }), isCode("worker_unavailable"));
  await assert.rejects(w.start(), isCode("internal_error"));
});

test("a version switch's close refuses with worker_unavailable; a pending whenReady rejects", async () => {
  const { w, seen } = worker(await tinyModelPath());
  await w.start();
  process.kill(w.pid!, "SIGKILL");
  await until("the crash to be seen", () => w.state !== "ready");
  const waiting = w.whenReady();
  const closing = w.close(1000, "worker_unavailable");
  await assert.rejects(waiting, isCode("worker_unavailable"));
  await closing;
  assert.equal(w.state, "stopped");
  assert.ok(["restarting", "draining"].includes(seen.at(-2)!), seen.join(" → "));
  assert.equal(listenerCount(w), 1);

  const { w: v } = worker(await tinyModelPath());
  await v.start();
  const switching = v.close(1000, "worker_unavailable");
  await assert.rejects(v.prepare({ kind: "text", text: "retry elsewhere" }), isCode("worker_unavailable"));
  await switching;
});
