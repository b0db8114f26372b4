// Faults a real deployment sees: clients that disconnect mid-stream and workers that die.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { makeRepository, startServer, until, type RunningServer } from "./helpers/fixtures.js";
import type { GenerationParams } from "../src/engine/types.js";

let srv: RunningServer;
let client: OpenAI;

before(async () => {
  // One slot and a long context: a generation that kept running would block the next request for seconds.
  const repo = await makeRepository([{ name: "slow", version: "v1", parallel: 1, contextSize: 8192 }]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

// `cache: false`: these requests are meant to run in the worker every time (the response cache would answer a repeat).
const long = { model: "slow", messages: [{ role: "user" as const, content: "go on" }], max_tokens: 8000, ignore_eos: true, temperature: 0, cache: false };

async function firstTokenMs(): Promise<number> {
  const t0 = performance.now();
  const r = await client.chat.completions.create({ model: "slow", messages: [{ role: "user", content: "quick" }], max_tokens: 1 });
  assert.equal(r.choices.length, 1);
  return performance.now() - t0;
}

test("a client that disconnects mid-stream frees its slot at once", async () => {
  // How long the whole long generation takes, so the assertion below is meaningful on any machine.
  const t0 = performance.now();
  const full = await client.chat.completions.create({ ...long, max_tokens: 2000 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const fullMs = performance.now() - t0;
  assert.equal(full.usage!.completion_tokens, 2000);

  const ac = new AbortController();
  const stream = await client.chat.completions.create({ ...long, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming, { signal: ac.signal });
  let seen = 0;
  try {
    for await (const _ of stream) {
      if (++seen === 5) {
        ac.abort();
        break;
      }
    }
  } catch {
    // aborting may surface as an error from the iterator; either way the connection is gone
  }
  assert.equal(seen, 5);
  // With the only slot still busy, this would wait for ~8000 tokens (4x the full run above).
  const ms = await firstTokenMs();
  assert.ok(ms < fullMs, `next request served in ${ms.toFixed(0)} ms, the 2000-token run took ${fullMs.toFixed(0)} ms`);
  assert.equal(srv.server.models.entries[0]!.served.worker.inflight, 0);
});

// A callback from the worker channel (a sink writing its response) that throws would be an
// uncaught exception in the IPC listener, which ends the process; it must fail its request alone.
test("a request whose response handling throws fails alone; the server keeps serving", async () => {
  const pool = srv.server.models;
  const worker = pool.entries[0]!.served.worker;
  const pid = worker.pid;
  const params: GenerationParams = { temperature: 0, topP: 1, seed: undefined, maxTokens: 8000, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };
  // The path an HTTP request takes (admission, the entry's one slot, the worker), with a sink
  // that throws on the first token as a response write can.
  const ac = new AbortController();
  const admission = await pool.admit("slow", { kind: "text", text: "go on" }, params, ac.signal, "req-throws");
  const boom = new Error("cannot write this response");
  let texts = 0;
  const sink = {
    onText() {
      texts++;
      throw boom;
    },
  };
  await assert.rejects(admission.run(sink, ac.signal), (err) => err === boom);
  assert.equal(texts, 1, "no text after the failure");
  assert.equal(worker.inflight, 0);
  assert.equal(worker.pid, pid, "the worker kept running");
  assert.ok(
    srv.lines().some((l) => /\[ERROR\].*request req-throws; that request fails: cannot write this response/.test(l)),
    "logged at ERROR with the request id",
  );
  // The one slot is free again and the server answers the next request.
  const r = await client.chat.completions.create({ model: "slow", messages: [{ role: "user", content: "still there?" }], max_tokens: 2 });
  assert.equal(r.choices.length, 1);
  assert.equal(worker.inflight, 0);
});

test("a worker killed mid-request: a whole request is retried once on the restarted worker and succeeds", async () => {
  const worker = srv.server.models.entries[0]!.served.worker;
  const pid = worker.pid!;
  const pending = client.chat.completions.create({ ...long, max_tokens: 2000 } as OpenAI.ChatCompletionCreateParamsNonStreaming).withResponse();
  // Kill it once the request is in the worker (mid-request), not after a guessed delay.
  await until("the request in the worker", () => worker.inflight === 1, 15_000);
  process.kill(pid, "SIGKILL");
  // Nothing was sent to the client yet: it is retried once the worker is back, transparently.
  const { data, response } = await pending;
  assert.equal(data.usage!.completion_tokens, 2000);
  assert.equal(response.headers.get("x-moltbot-model-version"), "v1");
  assert.ok(worker.isReady(), "worker came back");
  assert.notEqual(worker.pid, pid);
  assert.equal(worker.restarts, 1);
  assert.ok(srv.lines().some((l) => /\[ERROR\] \[model_loader\] Worker of model slow v1 exited \(signal SIGKILL\)/.test(l)), "crash logged");
  assert.ok(srv.lines().some((l) => /\[WARNING\] \[inference\] Worker lost before the response began, retrying once/.test(l)), "retry logged");
});

test("a worker killed mid-stream: the stream ends with an error event, the request queued behind it is retried and succeeds", async () => {
  const entry = srv.server.models.entries[0]!;
  const worker = entry.served.worker;
  const pid = worker.pid!;
  const stream = await client.chat.completions.create({ ...long, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
  const chunks = stream[Symbol.asyncIterator]();
  assert.equal((await chunks.next()).done, false, "the stream is under way");
  // The entry's one slot is busy: this one waits in the queue.
  const queued = client.chat.completions.create({ model: "slow", messages: [{ role: "user", content: "queued" }], max_tokens: 5, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  await until("a request in the queue", () => entry.served.scheduler.queued === 1, 15_000);
  process.kill(pid, "SIGKILL");
  await assert.rejects(
    async () => {
      for (let r = await chunks.next(); !r.done; r = await chunks.next());
    },
    (err: Error) => err instanceof OpenAI.APIError && /exited unexpectedly/.test(err.message),
  );
  const r = await queued;
  assert.equal(r.usage!.completion_tokens, 5);
  assert.notEqual(worker.pid, pid);
});
