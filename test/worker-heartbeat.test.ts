// A worker that is alive but answers nothing (SIGSTOP here; a native deadlock in production)
// is found by the heartbeat, killed and restarted; a stream under way ends with an error event.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { makeRepository, sleep, startServer, type RunningServer } from "./helpers/fixtures.js";

const TIMEOUT_MS = 1500;
let srv: RunningServer;
let client: OpenAI;
let stopped: number | undefined;

before(async () => {
  // One slot and a long context: the request below would run for many seconds if left alone.
  const repo = await makeRepository([{ name: "slow", version: "v1", parallel: 1, contextSize: 8192 }]);
  srv = await startServer(repo, { config: { worker: { heartbeat_timeout_ms: TIMEOUT_MS, restart_backoff_ms: { initial: 100, max: 1000 } } } });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => {
  if (stopped !== undefined) {
    try {
      process.kill(stopped, "SIGKILL"); // only if the test failed before the server did it
    } catch {
      // already gone
    }
  }
  await srv?.close();
});

const long = { model: "slow", messages: [{ role: "user" as const, content: "go on" }], ignore_eos: true, temperature: 0 };

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

test("a busy worker that keeps answering is not killed by a short heartbeat timeout", async () => {
  const worker = srv.server.models.entries[0]!.served.worker;
  const pid = worker.pid;
  const t0 = performance.now();
  const r = await client.chat.completions.create({ ...long, max_tokens: 1500 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const ms = performance.now() - t0;
  assert.equal(r.usage!.completion_tokens, 1500);
  assert.equal(worker.pid, pid);
  assert.equal(worker.restarts, 0, `no restart during a ${ms.toFixed(0)} ms generation`);
});

test("a worker that stops answering is marked unhealthy, killed, restarted; its stream ends with an error event", async () => {
  const worker = srv.server.models.entries[0]!.served.worker;
  const pid = worker.pid!;
  // A stream under way cannot be replayed elsewhere (a whole request would be retried: faults.test.ts).
  const stream = await client.chat.completions.create({ ...long, max_tokens: 8000, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
  const chunks = stream[Symbol.asyncIterator]();
  assert.equal((await chunks.next()).done, false, "the stream is under way");
  assert.equal(worker.inflight, 1, "the request reached the worker");

  process.kill(pid, "SIGSTOP");
  stopped = pid;
  const t0 = performance.now();
  await assert.rejects(
    async () => {
      for (let r = await chunks.next(); !r.done; r = await chunks.next());
    },
    (err: Error) => err instanceof OpenAI.APIError && /exited unexpectedly/.test(err.message),
  );
  const failedMs = performance.now() - t0;
  // The timeout, plus up to one ping interval to notice, plus slack for a loaded machine.
  assert.ok(failedMs < TIMEOUT_MS + 3000, `request failed ${failedMs.toFixed(0)} ms after the stall`);
  assert.ok(failedMs >= TIMEOUT_MS - 100, `not before the timeout (${failedMs.toFixed(0)} ms)`);

  // Not ready until the new worker has loaded.
  const readyz = await fetch(`${srv.url}/readyz`);
  const body = (await readyz.json()) as { status: string; models: Record<string, string> };
  if (!worker.isReady()) {
    assert.equal(readyz.status, 503);
    assert.notEqual(body.models.slow, "ready");
  }
  assert.ok(srv.lines().some((l) => /\[ERROR\] \[model_loader\] Worker of model slow v1 \(pid \d+\) stopped answering for \d+\.\d s: killing it/.test(l)), "logged at ERROR");
  assert.ok(srv.lines().some((l) => /Worker of model slow v1 exited \(signal SIGKILL\)/.test(l)), "took the crash path");

  const deadline = Date.now() + 15_000;
  while ((!worker.isReady() || !gone(pid)) && Date.now() < deadline) await sleep(20);
  assert.ok(gone(pid), "the stopped process is gone");
  stopped = undefined;
  assert.ok(worker.isReady(), "worker came back");
  assert.notEqual(worker.pid, pid);
  assert.equal(worker.restarts, 1);
  assert.equal((await fetch(`${srv.url}/readyz`)).status, 200);
  const r = await client.chat.completions.create({ model: "slow", messages: [{ role: "user", content: "back?" }], max_tokens: 2 });
  assert.equal(r.choices.length, 1);
});
