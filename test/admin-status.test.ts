// GET /admin/status end to end (the contract `moltbot status` reads), and the rolling window
// behind its `window` figures.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { makeRepository, sleep, startServer, type RunningServer } from "./helpers/fixtures.js";
import { parseSamples, total } from "./helpers/prometheus.js";
import { percentile, RecentRequests } from "../src/observe/recent-requests.js";
import type { AdminStatus } from "../src/server/routes/admin.js";

const PRICING = { input_per_1k: 1, output_per_1k: 2 };
let srv: RunningServer;
let client: OpenAI;

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.2", parallel: 3, contextSize: 512 }]);
  srv = await startServer(repo, {
    config: {
      model_pool: [
        { name: "chat", model: "tiny", type: "llm", pricing: PRICING, budget: { cost_limit: 50, max_tokens: 64 }, strategy: { priority: "high", fallback: false } },
        { name: "cheap", model: "tiny", type: "llm", strategy: { priority: "low", fallback: false } },
      ],
    },
  });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

async function status(query = ""): Promise<{ code: number; body: AdminStatus & { error?: { code: string; param: string } } }> {
  const res = await fetch(`${srv.url}/admin/status${query}`);
  return { code: res.status, body: (await res.json()) as AdminStatus & { error?: { code: string; param: string } } };
}

describe("GET /admin/status", () => {
  test("before any request: the server, the model's worker and the entries", async () => {
    const { code, body } = await status();
    assert.equal(code, 200);
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
    assert.equal(body.server.version, pkg.version);
    assert.equal(body.server.pid, process.pid, "the server runs in this test process");
    assert.equal(body.server.listen, srv.url);
    assert.ok(Date.parse(body.server.started_at) <= Date.now() && body.server.uptime_s > 0);
    assert.equal(body.window_s, 5, "default window");
    assert.equal(body.models.length, 1, "two entries share one model: one worker");
    const m = body.models[0]!;
    assert.equal(m.name, "tiny");
    assert.equal(m.version, "v1.2");
    assert.equal(m.state, "ready");
    assert.equal(m.pid, srv.server.models.entries[0]!.served.worker.pid);
    assert.ok(m.rss_bytes! > 1e6 && m.cpu_seconds! > 0);
    assert.equal(m.restarts, 0);
    assert.deepEqual(m.slots, { busy: 0, total: 3 });
    assert.deepEqual(m.queue, { high: 0, normal: 0, low: 0 });
    assert.deepEqual(m.totals, { requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0 });
    assert.deepEqual(m.window, { requests: 0, errors: 0, completion_tokens: 0, latency_ms: { p50: null, p95: null } });
    const month = new Date().toISOString().slice(0, 7);
    assert.deepEqual(body.entries, [
      { name: "chat", model: "tiny", priority: "high", budget: { spent: 0, limit: 50, month } },
      { name: "cheap", model: "tiny", priority: "low", budget: { spent: 0, limit: null, month } },
    ]);
  });

  test("totals, window and budget match the traffic sent", async () => {
    const latencies: number[] = [];
    const usages: OpenAI.CompletionUsage[] = [];
    const timed = async <T>(run: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      const r = await run();
      latencies.push(performance.now() - t0);
      return r;
    };
    for (const [model, n] of [["chat", 3], ["cheap", 5], ["chat", 4]] as const) {
      const r = await timed(() => client.completions.create({ model, prompt: `count to ${n}`, max_tokens: n, ignore_eos: true, temperature: 0 } as OpenAI.CompletionCreateParamsNonStreaming));
      usages.push(r.usage!);
    }
    // A prompt longer than chat's max_tokens (64, prompt + completion) is refused: an error.
    const refused = await timed(() => fetch(`${srv.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "chat", prompt: "word ".repeat(100), max_tokens: 1 }) }));
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "token_limit_exceeded");

    const { body } = await status("?window=3600");
    assert.equal(body.window_s, 3600);
    const m = body.models[0]!;
    const sum = (k: "prompt_tokens" | "completion_tokens") => usages.reduce((a, u) => a + u[k], 0);
    const cached = usages.reduce((a, u) => a + (u.prompt_tokens_details?.cached_tokens ?? 0), 0);
    assert.deepEqual(m.totals, { requests: 4, errors: 1, prompt_tokens: sum("prompt_tokens"), completion_tokens: 12, cached_tokens: cached });
    assert.equal(sum("completion_tokens"), 12);
    assert.equal(m.window.requests, 4);
    assert.equal(m.window.errors, 1);
    assert.equal(m.window.completion_tokens, 12);
    const { p50, p95 } = m.window.latency_ms;
    assert.ok(p50 !== null && p95 !== null && p50 > 0 && p50 <= p95, `p50 ${p50}, p95 ${p95}`);
    // The server's latency of a request is within what its client saw.
    assert.ok(p95 <= Math.max(...latencies) + 1, `p95 ${p95} ms, slowest client-side ${Math.max(...latencies).toFixed(1)} ms`);
    assert.deepEqual(m.slots, { busy: 0, total: 3 });

    // chat is priced: its spend is what its two requests cost; cheap has no price.
    const chat = body.entries.find((e) => e.name === "chat")!;
    const cost = [usages[0]!, usages[2]!].reduce((a, u) => a + (u.prompt_tokens * PRICING.input_per_1k + u.completion_tokens * PRICING.output_per_1k) / 1000, 0);
    assert.ok(Math.abs(chat.budget.spent - cost) < 1e-6, `spent ${chat.budget.spent}, expected ${cost}`);
    assert.equal(body.entries.find((e) => e.name === "cheap")!.budget.spent, 0);

    // The same figures on /metrics.
    const samples = parseSamples(await (await fetch(`${srv.url}/metrics`)).text());
    assert.ok(Math.abs(total(samples, "moltbot_budget_spent", { entry: "chat" }) - cost) < 1e-6);
    assert.ok(Math.abs(total(samples, "moltbot_budget_remaining", { entry: "chat" }) - (50 - cost)) < 1e-6);
    assert.equal(total(samples, "moltbot_requests_total", { model: "tiny" }), 4);
    assert.equal(total(samples, "moltbot_requests_shed_total"), 0, "a token limit is a 400, not shedding");
  });

  test("a short window lets old requests go; the totals stay", async () => {
    const deadline = Date.now() + 10_000;
    let body = (await status("?window=1")).body;
    while (body.models[0]!.window.requests > 0) {
      assert.ok(Date.now() < deadline, "requests left the 1 s window");
      await sleep(50);
      body = (await status("?window=1")).body;
    }
    assert.deepEqual(body.models[0]!.window, { requests: 0, errors: 0, completion_tokens: 0, latency_ms: { p50: null, p95: null } });
    assert.equal(body.models[0]!.totals.requests, 4);
  });

  test("window outside 1..3600 or not a number is a 400 naming the parameter", async () => {
    for (const q of ["?window=0", "?window=3601", "?window=abc", "?window=-1", "?window=1.5"]) {
      const { code, body } = await status(q);
      assert.equal(code, 400, q);
      assert.equal(body.error!.param, "window", q);
    }
    assert.equal((await status("?window=3600")).code, 200);
  });
});

describe("rolling window", () => {
  test("counts the requests inside the window per model, newest first, with interpolated percentiles", () => {
    let now = 0;
    const w = new RecentRequests(8, () => now);
    for (let i = 1; i <= 5; i++) {
      now = i * 1000;
      w.add(i % 2, i * 10, i, i === 5);
    }
    // At t=5 s: the last 2.5 s hold requests 3, 4, 5 (t=3, 4, 5 s).
    const [even, odd] = w.window(2.5, 2);
    assert.deepEqual(odd, { requests: 2, errors: 1, completion_tokens: 8, latency_ms: { p50: 40, p95: 49 } });
    assert.deepEqual(even, { requests: 1, errors: 0, completion_tokens: 4, latency_ms: { p50: 40, p95: 40 } });
    assert.equal(w.window(3600, 2)[1]!.requests, 3);
    now = 10_000;
    assert.equal(w.window(2.5, 2)[1]!.requests, 0);
  });

  test("past its capacity the ring keeps the newest records", () => {
    let now = 0;
    const w = new RecentRequests(4, () => now);
    for (let i = 0; i < 10; i++) w.add(0, i, 1, false);
    const [all] = w.window(60, 1);
    assert.equal(all!.requests, 4);
    assert.equal(all!.latency_ms.p50, 7.5, "latencies 6..9");
  });

  test("percentile interpolates between ranks, to 0.1", () => {
    assert.equal(percentile([], 0.5), null);
    assert.equal(percentile([7], 0.95), 7);
    assert.equal(percentile([1, 2, 3, 4], 0.5), 2.5);
    assert.equal(percentile([0, 100], 0.95), 95);
    assert.equal(percentile([1, 1.04], 0.5), 1);
  });
});
