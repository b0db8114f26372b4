// Request deadlines end to end: server.request_timeout_ms and the body's `timeout` end a
// request with 504 request_timeout whether it is queued or generating, free its slot at once
// (one slot here, so the next request shows it), and charge the tokens it made.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI, { APIError } from "openai";
import { makeRepository, startServer, type RunningServer, until } from "./helpers/fixtures.js";
import { ledgerPath, openSqliteLedger } from "../src/ledger/sqlite-ledger.js";
import type { PoolEntry } from "../src/pool/model-pool.js";

const CONFIG_TIMEOUT_MS = 1500;
// Far more tokens than the tiny model makes in any deadline below (about 1000 tokens/s here).
const LONG = { max_tokens: 6000, ignore_eos: true, temperature: 0 };

let srv: RunningServer;
let client: OpenAI;
let entry: PoolEntry;
/** Completion tokens of the requests that succeeded: everything else the ledger holds was charged for timed-out ones. */
let servedTokens = 0;

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 1, contextSize: 8192 }]);
  srv = await startServer(repo, {
    config: {
      server: { request_timeout_ms: CONFIG_TIMEOUT_MS },
      batching: { max_batch_size: 1 },
      // A cost limit takes the reserve-then-settle path; only completion tokens cost anything.
      model_pool: [{ name: "tiny", budget: { cost_limit: 1000 }, pricing: { input_per_1k: 0, output_per_1k: 1 } }],
    },
  });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  entry = srv.server.models.entries[0]!;
});
let closed = false;
after(async () => {
  if (!closed) await srv?.close();
});


function idle(): void {
  assert.equal(entry.served.scheduler.inflight, 0, "scheduler slot released");
  assert.equal(entry.served.scheduler.queued, 0, "nobody left in the queue");
  assert.equal(entry.served.worker.inflight, 0, "the worker's sequence is gone");
}

async function timesOut(p: Promise<unknown>): Promise<APIError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof APIError, String(err));
    return err;
  }
  assert.fail("the request finished before its deadline");
}

function completion(extra: Record<string, unknown>) {
  return client.completions.create({ model: "tiny", prompt: "Once upon a time", ...LONG, ...extra } as unknown as OpenAI.CompletionCreateParamsNonStreaming);
}

describe("deadline of a generating request", () => {
  test("a body timeout ends it with 504 request_timeout, frees its slot, and the queued request runs at once", async () => {
    const t0 = performance.now();
    const first = timesOut(completion({ timeout: 0.5 }));
    await until("the first request to hold the slot", () => entry.served.scheduler.inflight === 1);
    const second = completion({ prompt: "Hello", max_tokens: 5 });
    await until("the second request to queue behind it", () => entry.served.scheduler.queued === 1);

    const err = await first;
    const elapsed = performance.now() - t0;
    assert.equal(err.status, 504);
    assert.equal(err.code, "request_timeout");
    assert.equal(err.type, "server_error");
    assert.match(err.message, /deadline of 500 ms/);
    assert.ok(elapsed >= 450 && elapsed < CONFIG_TIMEOUT_MS, `ended after ${elapsed.toFixed(0)} ms`);

    const r = await second;
    const waited = performance.now() - t0;
    assert.equal(r.usage?.completion_tokens, 5);
    servedTokens += 5;
    assert.ok(waited < 500 + 3000, `the queued request finished ${waited.toFixed(0)} ms after the first started`);
    idle();
  });

  test("the configured deadline caps a longer body timeout", async () => {
    const t0 = performance.now();
    const err = await timesOut(completion({ timeout: 600 }));
    const elapsed = performance.now() - t0;
    assert.equal(err.status, 504);
    assert.match(err.message, new RegExp(`deadline of ${CONFIG_TIMEOUT_MS} ms`));
    assert.ok(elapsed >= CONFIG_TIMEOUT_MS - 50 && elapsed < CONFIG_TIMEOUT_MS + 1500, `ended after ${elapsed.toFixed(0)} ms`);
    idle();
  });

  test("a non-positive timeout is a 400 naming the field", async () => {
    const err = await timesOut(completion({ timeout: 0 }));
    assert.equal(err.status, 400);
    assert.equal(err.param, "timeout");
  });

  test("a stream past its deadline ends with an error event in OpenAI's shape", async () => {
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Tell me a long story" }],
      stream: true,
      ...LONG,
      timeout: 0.5,
    } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
    let chunks = 0;
    let failure: unknown;
    try {
      for await (const chunk of stream) if (chunk.choices[0]?.delta.content !== undefined) chunks++;
    } catch (err) {
      failure = err;
    }
    assert.ok(chunks > 1, `tokens streamed before the deadline (${chunks} chunks)`);
    assert.ok(failure instanceof APIError, `the stream failed with the error event (${String(failure)})`);
    assert.equal(failure.code, "request_timeout");
    assert.equal(failure.type, "server_error");
    idle();
  });
});

describe("deadline of a queued request", () => {
  test("a request that waits past its deadline leaves the queue with 504; the running one goes on", async () => {
    const running = completion({ prompt: "Hello", max_tokens: 1200 });
    await until("the running request to hold the slot", () => entry.served.scheduler.inflight === 1);
    const t0 = performance.now();
    const queued = timesOut(
      client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], stream: true, timeout: 0.2 } as unknown as OpenAI.ChatCompletionCreateParamsStreaming),
    );
    await until("the request to queue", () => entry.served.scheduler.queued === 1);
    const err = await queued;
    // A stream that never started gets a plain 504 response, not an event.
    assert.equal(err.status, 504);
    assert.equal(err.code, "request_timeout");
    assert.ok(performance.now() - t0 < 200 + 1300, "it left the queue at its deadline");
    assert.equal(entry.served.scheduler.queued, 0);
    assert.equal(entry.served.scheduler.inflight, 1, "the running request still holds its slot");

    // The same on /infer, the seed's route, in OpenAI's error shape.
    const res = await fetch(`${srv.url}/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: "Once upon a time", timeout: 0.2 }),
    });
    assert.equal(res.status, 504);
    const body = (await res.json()) as { error: Record<string, unknown> };
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(body.error.code, "request_timeout");
    assert.equal(entry.served.scheduler.inflight, 1, "the running request still holds its slot");

    // Whether it finishes or meets the configured deadline itself depends on the machine's speed.
    const r = await running.catch((e: unknown) => (e instanceof APIError && e.code === "request_timeout" ? undefined : Promise.reject(e)));
    servedTokens += r?.usage?.completion_tokens ?? 0;
    idle();
  });
});

describe("charges", () => {
  test("the ledger settles what the timed-out requests made and holds no reservation", async () => {
    await srv.close();
    closed = true;
    const ledger = openSqliteLedger(ledgerPath(srv.server.dataDir));
    try {
      const spend = ledger.status().find((s) => s.entry === "tiny");
      assert.ok(spend, "spend recorded");
      assert.equal(spend.reserved, 0);
      assert.equal(spend.reservations, 0);
      const chargedForTimeouts = spend.spent * 1000 - servedTokens;
      // Three generating requests ran for 0.5 s to 1.5 s each at hundreds of tokens a second.
      assert.ok(chargedForTimeouts > 100, `completion tokens charged for timed-out requests: ${chargedForTimeouts.toFixed(0)}`);
    } finally {
      ledger.close();
    }
  });
});
