// The model pool end to end: batching, priorities and shedding, budgets with the SQLite
// ledger, and fallback, through the real server, real workers and the official client.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { makeRepository, sleep, startServer, tempDir, type RunningServer, until } from "./helpers/fixtures.js";
import type { DeepPartial } from "../src/config/load.js";
import type { MoltbotConfig } from "../src/config/schema.js";


const running: RunningServer[] = [];
after(async () => {
  await Promise.all(running.map((s) => s.close()));
});

async function serve(config: DeepPartial<MoltbotConfig>, opts: { repo?: string; dataDir?: string; clock?: () => Date; parallel?: number; contextSize?: number } = {}) {
  const repo = opts.repo ?? (await makeRepository([{ name: "tiny", version: "v1", parallel: opts.parallel ?? 2, contextSize: opts.contextSize ?? 4096 }]));
  const srv = await startServer(repo, { config, dataDir: opts.dataDir, clock: opts.clock });
  running.push(srv);
  return { srv, repo, client: new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 }) };
}

const entry = (name: string, extra: Record<string, unknown> = {}) => ({ name, model: "tiny", type: "llm" as const, ...extra });

async function post(url: string, body: unknown) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

describe("batching", () => {
  /** First and last token arrival of two concurrent streams, and how much of the shorter one overlaps the other. */
  async function twoStreams(client: OpenAI): Promise<number> {
    const spans: Array<[number, number]> = [];
    const run = async (k: number) => {
      const s = await client.completions.create({ model: "tiny", prompt: `stream ${k}`, max_tokens: 300, ignore_eos: true, temperature: 0, stream: true } as OpenAI.CompletionCreateParamsStreaming);
      let first = 0;
      let last = 0;
      for await (const c of s) {
        if (!c.choices[0]?.text) continue;
        last = performance.now();
        first ||= last;
      }
      spans.push([first, last]);
    };
    await Promise.all([run(0), run(1)]);
    const [a, b] = spans as [[number, number], [number, number]];
    const overlap = Math.max(0, Math.min(a[1], b[1]) - Math.max(a[0], b[0]));
    return overlap / Math.min(a[1] - a[0], b[1] - b[0]);
  }

  test("two concurrent streams on one model are generated together", async () => {
    const { client } = await serve({ model_pool: [entry("tiny", { batching: { enabled: true, max_batch_size: 2 } })] });
    const overlap = await twoStreams(client);
    assert.ok(overlap > 0.5, `the streams overlapped for ${(overlap * 100).toFixed(0)}% of the shorter one`);
  });

  test("batching disabled runs one generation at a time", async () => {
    const { srv, client } = await serve({ model_pool: [entry("tiny", { batching: { enabled: false, max_batch_size: 8 } })] });
    const overlap = await twoStreams(client);
    assert.ok(overlap < 0.1, `the streams overlapped for ${(overlap * 100).toFixed(0)}% of the shorter one`);
    assert.ok(srv.lines().some((l) => /1 slot\(s\)/.test(l)), "worker started with one slot");
  });
});

describe("embedding grouping", () => {
  test("concurrent embedding requests share evaluations and get their own vectors and usage", async () => {
    // Long inputs make one evaluation last long enough for the next requests to arrive meanwhile.
    const repo = await makeRepository([{ name: "emb", version: "v1", type: "embedding", parallel: 8, contextSize: 2048 }]);
    const { srv, client } = await serve({}, { repo });
    const texts = Array.from({ length: 12 }, (_, i) => `sentence number ${i} ${"many words ".repeat(150 + i)}`);
    const alone = await Promise.all(texts.slice(0, 2).map((t) => client.embeddings.create({ model: "emb", input: t, encoding_format: "float" })));
    const worker = srv.server.models.entries[0]!.served.worker;
    const before = worker.embedBatches;
    const together = await Promise.all(texts.map((t) => client.embeddings.create({ model: "emb", input: t, encoding_format: "float" })));
    assert.ok(worker.embedBatches - before < texts.length, `${worker.embedBatches - before} evaluations for ${texts.length} requests`);
    for (let i = 0; i < 2; i++) {
      const a = alone[i]!.data[0]!.embedding;
      const b = together[i]!.data[0]!.embedding;
      assert.ok(a.every((x, k) => Math.abs(x - b[k]!) < 1e-4), "grouping does not change a vector");
      assert.equal(together[i]!.usage.prompt_tokens, alone[i]!.usage.prompt_tokens);
    }
    assert.ok(together[11]!.usage.prompt_tokens > together[0]!.usage.prompt_tokens);
  });
});

describe("priorities and overload", () => {
  test("under a full slot, high priority is served before normal and low", async () => {
    const { srv, client } = await serve(
      { model_pool: [entry("lo", { strategy: { priority: "low" } }), entry("mid", { strategy: { priority: "normal" } }), entry("hi", { strategy: { priority: "high" } })] },
      { parallel: 1 },
    );
    const scheduler = srv.server.models.entries[0]!.served.scheduler;
    const blocker = client.completions.create({ model: "mid", prompt: "block", max_tokens: 1500, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    await until("the blocker to hold the slot", () => scheduler.inflight === 1);
    const order: string[] = [];
    const req = (model: string) =>
      client.completions.create({ model, prompt: "q", max_tokens: 2 }).then(() => {
        order.push(model);
      });
    const lo = req("lo");
    await until("lo to queue", () => scheduler.queued === 1);
    const mid = req("mid");
    await until("mid to queue", () => scheduler.queued === 2);
    const hi = req("hi");
    await until("hi to queue", () => scheduler.queued === 3);
    assert.deepEqual(scheduler.queuedByPriority(), { high: 1, normal: 1, low: 1 });
    await Promise.all([blocker, lo, mid, hi]);
    assert.deepEqual(order, ["hi", "mid", "lo"]);
  });

  test("a full queue sheds the lowest priority first, with 429 and Retry-After", async () => {
    const { srv } = await serve(
      { model_pool: [entry("lo", { strategy: { priority: "low" } }), entry("hi", { strategy: { priority: "high" } })], queue: { max_size: 2, max_wait_ms: 30000 } },
      { parallel: 1 },
    );
    const url = `${srv.url}/v1/completions`;
    const scheduler = srv.server.models.entries[0]!.served.scheduler;
    const blocker = post(url, { model: "hi", prompt: "block", max_tokens: 1500, ignore_eos: true });
    await until("the blocker to hold the slot", () => scheduler.inflight === 1);
    const lo1 = post(url, { model: "lo", prompt: "a", max_tokens: 1 });
    await until("lo1 to queue", () => scheduler.queued === 1);
    const lo2 = post(url, { model: "lo", prompt: "b", max_tokens: 1 });
    await until("lo2 to queue", () => scheduler.queued === 2);
    // Queue full of low priority: a high one takes the place of the newest low one.
    const hi = post(url, { model: "hi", prompt: "c", max_tokens: 1 });
    const shed = await lo2;
    assert.equal(shed.status, 429);
    assert.equal(shed.body.error.code, "queue_full");
    assert.ok(Number(shed.headers.get("retry-after")) >= 1);
    // A low one arriving now is the lowest itself: refused at once.
    const refused = await post(url, { model: "lo", prompt: "d", max_tokens: 1 });
    assert.equal(refused.status, 429);
    assert.equal((await blocker).status, 200);
    assert.equal((await lo1).status, 200);
    assert.equal((await hi).status, 200);
  });

  test("a request that waited longer than max_wait_ms is shed with 429", async () => {
    const { srv } = await serve({ model_pool: [entry("tiny")], queue: { max_size: 10, max_wait_ms: 200 } }, { parallel: 1 });
    const url = `${srv.url}/v1/completions`;
    const blocker = post(url, { model: "tiny", prompt: "block", max_tokens: 3000, ignore_eos: true });
    await until("the blocker to hold the slot", () => srv.server.models.entries[0]!.served.scheduler.inflight === 1);
    const waited = await post(url, { model: "tiny", prompt: "late", max_tokens: 1 });
    assert.equal(waited.status, 429);
    assert.equal(waited.body.error.code, "queue_timeout");
    await blocker;
  });
});

describe("budgets", () => {
  test("max_tokens caps the completion, logs the seed's warning, and refuses an oversize prompt", async () => {
    const { srv, client } = await serve({ model_pool: [entry("tiny", { budget: { max_tokens: 40 } })] });
    const r = await client.completions.create({ model: "tiny", prompt: "Hello there", max_tokens: 100, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(r.usage!.prompt_tokens + r.usage!.completion_tokens, 40);
    assert.equal(r.choices[0]!.finish_reason, "length");
    const total = r.usage!.prompt_tokens + 100;
    assert.ok(srv.lines().some((l) => l.includes(`[WARNING] [inference] Token limit exceeded (${total}/40)`)), "warning logged");
    const big = await post(`${srv.url}/v1/completions`, { model: "tiny", prompt: "word ".repeat(60), max_tokens: 1 });
    assert.equal(big.status, 400);
    assert.equal(big.body.error.code, "token_limit_exceeded");
  });

  test("spend is accounted to the token from the usage returned", async () => {
    const pricing = { input_per_1k: 2, output_per_1k: 5 };
    // "tiny" has a cost limit (reserve, then settle); "open" has none (recorded after the fact).
    const { srv, client } = await serve({ model_pool: [entry("tiny", { pricing, budget: { cost_limit: 100 } }), entry("open", { pricing })] });
    const expected: Record<string, number> = { tiny: 0, open: 0 };
    for (const model of ["tiny", "open"]) {
      for (let i = 0; i < 5; i++) {
        const r = await client.completions.create({ model, prompt: `count ${i} `.repeat(i + 1), max_tokens: 3 + i, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
        expected[model] = expected[model]! + (r.usage!.prompt_tokens * 2 + r.usage!.completion_tokens * 5) / 1000;
      }
    }
    const { openSqliteLedger, ledgerPath } = await import("../src/ledger/sqlite-ledger.js");
    const ledger = openSqliteLedger(ledgerPath(srv.server.dataDir));
    const rows = ledger.status();
    ledger.close();
    for (const model of ["tiny", "open"]) {
      const row = rows.find((e) => e.entry === model)!;
      assert.ok(Math.abs(row.spent - expected[model]!) < 1e-9, `${model}: spent ${row.spent}, expected ${expected[model]}`);
      assert.equal(row.reserved, 0);
    }
  });

  test("cached prompt tokens are charged at pricing.cached_input_per_1k", async () => {
    const pricing = { input_per_1k: 4, output_per_1k: 0, cached_input_per_1k: 1 };
    const { srv, client } = await serve({ model_pool: [entry("tiny", { pricing, budget: { cost_limit: 100 } })] });
    const context = "The river runs through the old town and past the mill. ".repeat(3);
    let expected = 0;
    for (const q of ["first", "second", "third"]) {
      const r = await client.completions.create({ model: "tiny", prompt: `${context}${q}`, max_tokens: 2 });
      const cached = r.usage!.prompt_tokens_details?.cached_tokens ?? 0;
      if (q !== "first") assert.ok(cached > 20, `the shared context is cached (${cached})`);
      expected += ((r.usage!.prompt_tokens - cached) * 4 + cached * 1) / 1000;
    }
    const { openSqliteLedger, ledgerPath } = await import("../src/ledger/sqlite-ledger.js");
    const ledger = openSqliteLedger(ledgerPath(srv.server.dataDir));
    const row = ledger.status().find((e) => e.entry === "tiny")!;
    ledger.close();
    assert.ok(Math.abs(row.spent - expected) < 1e-9, `spent ${row.spent}, expected ${expected}`);
  });

  test("50 concurrent requests against a budget that fits 10 never overspend", async () => {
    // Each request: prompt + 10 completion tokens at 1 per 1K output; the cap fits exactly 10 worst cases.
    const pricing = { input_per_1k: 0, output_per_1k: 1 };
    const { srv } = await serve({ model_pool: [entry("tiny", { pricing, budget: { cost_limit: 0.1 } })] }, { parallel: 4 });
    const results = await Promise.all(
      Array.from({ length: 50 }, () => post(`${srv.url}/v1/completions`, { model: "tiny", prompt: "same prompt", max_tokens: 10, ignore_eos: true })),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    assert.equal(ok.length, 10);
    assert.equal(refused.length, 40);
    for (const r of refused) assert.equal(r.body.error.code, "budget_exceeded");
    assert.ok(Number(refused[0]!.headers.get("retry-after")) >= 1);
    const spent = ok.reduce((n, r) => n + r.body.usage.completion_tokens / 1000, 0);
    assert.ok(spent <= 0.1 + 1e-12, `spent ${spent}`);
  });

  test("the ledger survives a restart and a new UTC month starts from zero", async () => {
    const dataDir = await tempDir();
    const repo = await makeRepository([{ name: "tiny", version: "v1", parallel: 2, contextSize: 1024 }]);
    let now = new Date("2026-11-30T23:59:00Z");
    const config = { model_pool: [entry("tiny", { pricing: { input_per_1k: 0, output_per_1k: 1 }, budget: { cost_limit: 0.02 } })] };
    const a = await serve(config, { repo, dataDir, clock: () => now });
    const first = await post(`${a.srv.url}/v1/completions`, { model: "tiny", prompt: "p", max_tokens: 20, ignore_eos: true });
    assert.equal(first.status, 200);
    await a.srv.close();

    const b = await serve(config, { repo, dataDir, clock: () => now });
    const over = await post(`${b.srv.url}/v1/completions`, { model: "tiny", prompt: "p", max_tokens: 5, ignore_eos: true });
    assert.equal(over.status, 429, "November's spend survived the restart");
    assert.equal(over.body.error.code, "budget_exceeded");
    now = new Date("2026-12-01T00:00:01Z");
    const december = await post(`${b.srv.url}/v1/completions`, { model: "tiny", prompt: "p", max_tokens: 5, ignore_eos: true });
    assert.equal(december.status, 200, "a new month, a new budget");
  });
});

describe("fallback", () => {
  test("over budget, the next entry serves and says why", async () => {
    const repo = await makeRepository([
      { name: "big", version: "v1", contextSize: 1024 },
      { name: "small", version: "v1", contextSize: 1024 },
    ]);
    const { srv, client } = await serve(
      {
        model_pool: [
          { name: "big", type: "llm", pricing: { input_per_1k: 0, output_per_1k: 1 }, budget: { cost_limit: 0.0001 }, strategy: { priority: "normal", fallback: true } },
          { name: "small", type: "llm" },
          { name: "strict", model: "big", type: "llm", budget: { cost_limit: 0 }, pricing: { input_per_1k: 1, output_per_1k: 1 }, strategy: { priority: "normal", fallback: false } },
        ],
      },
      { repo },
    );
    const { data, response } = await client.completions.create({ model: "big", prompt: "p", max_tokens: 5 }).withResponse();
    assert.equal(data.model, "small");
    assert.match(response.headers.get("x-moltbot-fallback") ?? "", /budget_exceeded \(big\)/);
    const strict = await post(`${srv.url}/v1/completions`, { model: "strict", prompt: "p", max_tokens: 5 });
    assert.equal(strict.status, 429);
    assert.equal(strict.body.error.code, "budget_exceeded");
  });

  test("a full queue and a worker that is down fall back too; a request its dying worker was running is retried there", async () => {
    const repo = await makeRepository([
      { name: "main", version: "v1", parallel: 1, contextSize: 8192 },
      { name: "spare", version: "v1", contextSize: 8192 },
    ]);
    const { srv } = await serve(
      { model_pool: [{ name: "main", type: "llm", strategy: { priority: "normal", fallback: "spare" }, queue: { max_size: 1, max_wait_ms: 30000 } }, { name: "spare", type: "llm" }] },
      { repo },
    );
    const url = `${srv.url}/v1/completions`;
    const mainScheduler = srv.server.models.entries.find((e) => e.name === "main")!.served.scheduler;
    const blocker = post(url, { model: "main", prompt: "block", max_tokens: 4000, ignore_eos: true });
    await until("the blocker to hold the slot", () => mainScheduler.inflight === 1);
    const queued = post(url, { model: "main", prompt: "queued", max_tokens: 1 });
    await until("the second request to queue", () => mainScheduler.queued === 1);
    const overflow = await post(url, { model: "main", prompt: "overflow", max_tokens: 1 });
    assert.equal(overflow.status, 200);
    assert.equal(overflow.body.model, "spare");
    assert.match(overflow.headers.get("x-moltbot-fallback") ?? "", /queue_full \(main\)/);
    await Promise.all([blocker, queued]);

    const worker = srv.server.models.entries.find((e) => e.name === "main")!.served.worker;
    process.kill(worker.pid!, "SIGKILL");
    while (worker.state === "ready") await sleep(5);
    const down = await post(url, { model: "main", prompt: "anyone?", max_tokens: 1 });
    assert.equal(down.status, 200);
    assert.equal(down.body.model, "spare");
    assert.match(down.headers.get("x-moltbot-fallback") ?? "", /worker_(unavailable|crashed) \(main\)/);

    // Killed while it runs a whole request: that request had sent nothing yet, so it is retried
    // once, on the fallback (main's worker is restarting).
    await until("main's worker back", () => worker.isReady());
    // Long enough to be still running when the kill lands (the last token can be on its way).
    const running = post(url, { model: "main", prompt: "running", max_tokens: 4000, ignore_eos: true });
    await until("the request in main's worker", () => worker.inflight === 1);
    process.kill(worker.pid!, "SIGKILL");
    const retried = await running;
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body.model, "spare");
    assert.equal(retried.body.usage.completion_tokens, 4000);
    assert.match(retried.headers.get("x-moltbot-fallback") ?? "", /worker_(unavailable|crashed) \(main\)/);
  });
});

describe("pool configuration", () => {
  test("a pool entry naming a missing model or a fallback cycle fails at start with the key path", async () => {
    const repo = await makeRepository([{ name: "tiny", version: "v1" }]);
    await assert.rejects(startServer(repo, { config: { model_pool: [{ name: "x", model: "nope", type: "llm" }] } }), /model_pool\[0\]\.model: no model "nope" in the repository \(found: tiny\)/);
    await assert.rejects(
      startServer(repo, {
        config: {
          model_pool: [
            { name: "a", model: "tiny", type: "llm", strategy: { priority: "normal", fallback: "b" } },
            { name: "b", model: "tiny", type: "llm", strategy: { priority: "normal", fallback: "a" } },
          ],
        },
      }),
      /model_pool\[0\]\.strategy\.fallback: fallback cycle a -> b -> a/,
    );
    await assert.rejects(startServer(repo, { config: { model_pool: [{ name: "a", model: "tiny", type: "llm", strategy: { priority: "urgent" as never, fallback: false } }] } }), /model_pool\[0\]\.strategy\.priority/);
    await assert.rejects(startServer(repo, { config: { model_pool: [{ name: "a", model: "tiny", type: "llm", budget: { cost_limit: -5 } }] } }), /model_pool\[0\]\.budget\.cost_limit/);
  });
});
