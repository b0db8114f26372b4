// Prometheus metrics end to end: the real server on a real port, real workers, the official
// client; the text is checked by promtool and the counters against the traffic sent.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { makeRepository, startServer, type RunningServer, until } from "./helpers/fixtures.js";
import { hasPromtool, parseSamples, promtoolCheck, total, type Sample } from "./helpers/prometheus.js";
import type { AdminStatus } from "../src/server/routes/admin.js";

const METRICS_PATH = "/ops/metrics";
let srv: RunningServer;
let client: OpenAI;

before(async () => {
  const repo = await makeRepository([
    { name: "main", version: "v1.0", parallel: 1, contextSize: 8192 },
    { name: "spare", version: "v2.0", contextSize: 512 },
  ]);
  srv = await startServer(repo, {
    config: {
      metrics: { path: METRICS_PATH },
      model_pool: [
        // One slot and one queue place: a third request overflows.
        { name: "main", type: "llm", strategy: { priority: "normal", fallback: "spare" }, queue: { max_size: 1, max_wait_ms: 30000 } },
        { name: "direct", model: "main", type: "llm", strategy: { priority: "normal", fallback: false } },
        { name: "spare", type: "llm" },
      ],
    },
  });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

async function scrape(server = srv, path = METRICS_PATH): Promise<Sample[]> {
  const res = await fetch(`${server.url}${path}`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseSamples(await res.text());
}

async function status(): Promise<AdminStatus> {
  return (await (await fetch(`${srv.url}/admin/status`)).json()) as AdminStatus;
}


async function post(path: string, body: unknown, signal?: AbortSignal) {
  const res = await fetch(`${srv.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

describe("metrics", () => {
  test("requests, tokens, latency, TTFT and inter-token gap move by exactly the requests made", async () => {
    const before = await scrape();
    const a = await client.chat.completions.create({ model: "main", messages: [{ role: "user", content: "Hello" }], max_tokens: 5, temperature: 0, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const b = await client.chat.completions.create({ model: "main", messages: [{ role: "user", content: "Hello" }], max_tokens: 7, temperature: 0, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const stream = await client.completions.create({ model: "spare", prompt: "Once upon a time", max_tokens: 6, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
    let c: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) c = chunk.usage ?? c;
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);

    const main = { model: "main", version: "v1.0", entry: "main" };
    const spare = { model: "spare", version: "v2.0", entry: "spare" };
    assert.equal(delta("moltbot_requests_total", { ...main, route: "/v1/chat/completions", status: "2xx" }), 2);
    assert.equal(delta("moltbot_requests_total", { ...spare, route: "/v1/completions", status: "2xx" }), 1);
    assert.equal(delta("moltbot_requests_total"), 3, "nothing else counted");
    assert.equal(delta("moltbot_tokens_total", { ...main, kind: "completion" }), 12);
    assert.equal(delta("moltbot_tokens_total", { ...main, kind: "prompt" }), a.usage!.prompt_tokens + b.usage!.prompt_tokens);
    assert.equal(delta("moltbot_tokens_total", { ...main, kind: "cached" }), (a.usage!.prompt_tokens_details?.cached_tokens ?? 0) + (b.usage!.prompt_tokens_details?.cached_tokens ?? 0));
    assert.ok((b.usage!.prompt_tokens_details?.cached_tokens ?? 0) > 0, "the repeated prompt was served from the prefix cache");
    assert.equal(delta("moltbot_tokens_total", { ...spare, kind: "completion" }), c!.completion_tokens);
    assert.equal(delta("moltbot_tokens_total", { ...spare, kind: "prompt" }), c!.prompt_tokens);
    assert.equal(delta("moltbot_inference_latency_count", { model: "main", route: "/v1/chat/completions", status: "2xx" }), 2);
    assert.equal(delta("moltbot_inference_latency_count", { model: "spare", route: "/v1/completions", status: "2xx" }), 1);
    assert.equal(delta("moltbot_time_to_first_token_seconds_count"), 3);
    assert.equal(delta("moltbot_inter_token_latency_seconds_count"), 3);
    assert.equal(delta("moltbot_queue_wait_seconds_count", { model: "main", priority: "normal" }), 2);
    // Milliseconds, as the seed names it: the buckets include 100 and 200.
    const les = new Set(after.filter((s) => s.name === "moltbot_inference_latency_bucket").map((s) => s.labels.le));
    assert.ok(les.has("100") && les.has("200"), `buckets ${[...les].join(",")}`);
    // A latency in ms is far above the same request's TTFT in seconds.
    const latencySum = delta("moltbot_inference_latency_sum", { model: "spare" });
    const ttftSum = delta("moltbot_time_to_first_token_seconds_sum", { model: "spare" });
    assert.ok(latencySum > ttftSum * 1000 * 0.999 && ttftSum > 0, `latency ${latencySum} ms, TTFT ${ttftSum} s`);
  });

  test("a fallback and a shed (429 queue_full) are counted once each, by reason", async () => {
    const before = await scrape();
    const stop = new AbortController();
    // Holds main's one slot until aborted, then one request waits in its one queue place.
    const blocker = post("/v1/completions", { model: "main", prompt: "block", max_tokens: 7000, ignore_eos: true }, stop.signal).catch((e: Error) => e);
    await until("the blocker to hold the slot", async () => (await status()).models.find((m) => m.name === "main")!.slots.busy === 1);
    const queued = post("/v1/completions", { model: "main", prompt: "queued", max_tokens: 1 });
    await until("a request to wait in the queue", async () => (await status()).models.find((m) => m.name === "main")!.queue.normal === 1);

    const overflow = await post("/v1/completions", { model: "main", prompt: "overflow", max_tokens: 2 });
    assert.equal(overflow.status, 200);
    assert.equal(overflow.body.model, "spare");
    assert.equal(overflow.headers.get("x-moltbot-model-version"), "v2.0", "the version of the entry that served, not of the one named");
    const shed = await post("/v1/completions", { model: "direct", prompt: "no fallback", max_tokens: 2 });
    assert.equal(shed.status, 429);
    assert.equal(shed.body.error.code, "queue_full");
    stop.abort();
    assert.ok((await blocker) instanceof Error, "the blocker was cut off by its client");
    assert.equal((await queued).status, 200);

    // The server records the disconnected blocker when it notices the closed connection.
    let after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    await until("the blocker to be recorded", async () => {
      after = await scrape();
      return delta("moltbot_requests_total") === 4;
    });
    assert.equal(delta("moltbot_fallbacks_total", { entry: "main", reason: "queue_full" }), 1);
    assert.equal(delta("moltbot_fallbacks_total"), 1);
    assert.equal(delta("moltbot_requests_shed_total", { entry: "direct", reason: "queue_full" }), 1);
    assert.equal(delta("moltbot_requests_shed_total"), 1);
    assert.equal(delta("moltbot_requests_total", { entry: "main", status: "2xx" }), 1, "the queued one");
    assert.equal(delta("moltbot_requests_total", { entry: "main", status: "4xx" }), 1, "the blocker, closed by its client (499)");
    assert.equal(delta("moltbot_requests_total", { entry: "spare", model: "spare", status: "2xx" }), 1, "the overflow, served by the fallback");
    assert.equal(delta("moltbot_requests_total", { entry: "direct", model: "main", status: "4xx" }), 1, "the shed one");
    assert.equal(delta("moltbot_inference_latency_count", { model: "main", status: "4xx" }), 2);
    assert.equal(delta("moltbot_queue_wait_seconds_count", { model: "main" }), 2, "blocker and queued were admitted");
    assert.ok(delta("moltbot_queue_wait_seconds_sum", { model: "main" }) > 0, "the queued one waited");
    // Levels are read at scrape time: everything is idle again.
    assert.equal(total(after, "moltbot_queue_depth"), 0);
    assert.equal(total(after, "moltbot_batch_slots_busy"), 0);
    assert.equal(total(after, "moltbot_batch_slots", { model: "main" }), 1);
  });

  test("worker memory and CPU are the worker process's, read from /proc of its pid", async () => {
    // In this order: CPU time only grows, so the status read after the scrape has at least as much.
    const samples = await scrape();
    const st = await status();
    for (const m of st.models) {
      assert.ok(m.pid !== null && m.pid !== process.pid, `${m.name} runs in its own process`);
      const ppid = Number(readFileSync(`/proc/${m.pid}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
      assert.equal(ppid, process.pid, "the worker is this server's child");
      const vmRss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${m.pid}/status`, "utf8"))![1]) * 1024;
      const rss = total(samples, "moltbot_worker_resident_memory_bytes", { model: m.name });
      // Both read the same process a moment apart: equal within the page churn of an idle worker.
      assert.ok(Math.abs(rss - vmRss) < 0.05 * vmRss, `${m.name}: metric ${rss}, /proc ${vmRss}`);
      assert.ok(Math.abs(m.rss_bytes! - vmRss) < 0.05 * vmRss, `${m.name}: status ${m.rss_bytes}, /proc ${vmRss}`);
      const cpu = total(samples, "moltbot_worker_cpu_seconds_total", { model: m.name });
      assert.ok(cpu > 0 && cpu <= m.cpu_seconds! + 0.005, `${m.name}: ${cpu} s then ${m.cpu_seconds} s`);
      assert.equal(total(samples, "moltbot_worker_up", { model: m.name }), 1);
      assert.equal(total(samples, "moltbot_worker_restarts_total", { model: m.name }), 0);
    }
    // The main process's own figures are Node's defaults, and differ from the workers'.
    assert.ok(total(samples, "process_resident_memory_bytes") > 0);
    assert.ok(total(samples, "nodejs_eventloop_lag_seconds") >= 0);
  });

  test("budgets: spent for every entry, remaining for those with a limit", async () => {
    const samples = await scrape();
    for (const e of ["main", "direct", "spare"]) assert.equal(total(samples, "moltbot_budget_spent", { entry: e }), 0, e);
    assert.equal(samples.filter((s) => s.name === "moltbot_budget_remaining").length, 0, "no entry has a cost limit");
  });

  test("labels stay bounded: configuration names and fixed sets only, never request ids, prompts or users", async () => {
    const samples = (await scrape()).filter((s) => s.name.startsWith("moltbot_"));
    // backend, device, description: what a worker loaded on, bounded by the machine.
    const allowed = new Set(["model", "version", "entry", "route", "status", "kind", "priority", "reason", "le", "level", "backend", "device", "description"]);
    for (const s of samples) {
      for (const [k, v] of Object.entries(s.labels)) {
        assert.ok(allowed.has(k), `${s.name} has label ${k}`);
        assert.ok(!/block|queued|overflow|Hello/.test(v), `${s.name} carries ${v}`);
      }
    }
    const statuses = new Set(samples.map((s) => s.labels.status).filter((v) => v !== undefined));
    assert.deepEqual([...statuses].sort(), ["2xx", "4xx"]);
  });

  test("the text passes promtool check metrics", { skip: hasPromtool ? false : "promtool is not installed (Debian: apt-get install prometheus)" }, async () => {
    const text = await (await fetch(`${srv.url}${METRICS_PATH}`)).text();
    assert.ok(text.includes("moltbot_inference_latency_bucket"), "after traffic, the histograms have series");
    const r = await promtoolCheck(text);
    assert.equal(r.code, 0, r.output);
  });

  test("metrics.path moves the route; a second server has its own registry; metrics.enabled false is a 404", async () => {
    assert.equal((await fetch(`${srv.url}/metrics`)).status, 404);
    const repo = await makeRepository([{ name: "other", version: "v1.0" }]);
    const second = await startServer(repo);
    const third = await startServer(repo, { config: { metrics: { enabled: false } } });
    try {
      const samples = await scrape(second, "/metrics");
      assert.equal(total(samples, "moltbot_requests_total"), 0, "the first server's requests are not in the second's registry");
      assert.equal(total(samples, "moltbot_batch_slots", { model: "other" }), 2);
      assert.equal(total(samples, "moltbot_batch_slots", { model: "main" }), 0);
      const off = await fetch(`${third.url}/metrics`);
      assert.equal(off.status, 404);
      assert.equal(((await off.json()) as { error: { code: string } }).error.code, "route_not_found");
      assert.ok(!third.lines().some((l) => /metrics.*not yet enforced/.test(l)), "metrics settings are enforced now");
      // /admin/status does not depend on the metrics switch.
      assert.equal((await fetch(`${third.url}/admin/status`)).status, 200);
    } finally {
      await Promise.all([second.close(), third.close()]);
    }
  });
});
