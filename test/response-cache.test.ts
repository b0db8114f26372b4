// The response cache on a real server (real port, the openai client, real worker processes):
// hits replayed whole and as SSE with their own ids, bypass rules, single-flight of 50 identical
// requests (the model's run counted from /metrics: one slot granted), a leader that disconnects
// without failing its follower, isolation across a version switch, the store across a restart
// with TTLs on an injected clock, and what hits cost in the ledger.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import OpenAI from "openai";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { ledgerPath, openSqliteLedger } from "../src/ledger/sqlite-ledger.js";
import { parseSamples, total } from "./helpers/prometheus.js";
import { runCli } from "./helpers/cli.js";
import { removeDir, startServer, tempDir, until, type RunningServer } from "./helpers/fixtures.js";

let root: string;
let dataDir: string;
let srv: RunningServer;
let client: OpenAI;
const PRICING = { input_per_1k: 1, output_per_1k: 2 };

async function writeVersion(version: string, seed: number): Promise<void> {
  const dir = path.join(root, "demo", version);
  await mkdir(dir, { recursive: true });
  // Decisive logits: greedy output does not depend on batching, and two seeds answer differently.
  await writeRandomLlamaModel(path.join(dir, "weights.bin"), randomModelOptions("tiny", { seed, weightStd: 0.5 }));
  // One slot, so the disconnect test can hold a request in the queue behind others.
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "demo", parallel: 1, context_size: 256 }));
}

const config = (chargeHits: boolean) => ({ model_pool: [{ name: "demo", pricing: PRICING }], cache: { charge_hits: chargeHits } });

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  return total(parseSamples(await (await fetch(`${srv.url}/metrics`)).text()), name, labels);
}
/** Slots granted to the model: one per run of the model. */
const runs = () => metric("moltbot_queue_wait_seconds_count", { model: "demo" });
const spent = () => metric("moltbot_budget_spent", { entry: "demo" });

const ask = (content: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) =>
  client.chat.completions
    .create({ model: "demo", messages: [{ role: "user", content }], max_tokens: 8, temperature: 0, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming, { headers })
    .withResponse();

/**
 * Runs `fn` with the demo worker frozen (SIGSTOP, well inside its heartbeat timeout), so requests
 * that reach it stay in flight and the ones behind them stay queued for as long as the test needs,
 * however busy the machine is.
 */
async function withWorkerFrozen<T>(fn: () => Promise<T>): Promise<T> {
  const pid = srv.server.models.entries[0]!.served.worker.pid!;
  process.kill(pid, "SIGSTOP");
  try {
    return await fn();
  } finally {
    process.kill(pid, "SIGCONT");
    assert.equal(srv.server.models.entries[0]!.served.worker.pid, pid, "the frozen worker was not restarted");
  }
}

before(async () => {
  root = await tempDir("moltbot-rcache-");
  dataDir = path.join(root, "data");
  await writeVersion("v1.0", 1);
  srv = await startServer(path.join(root, "demo"), { dataDir, config: config(false) });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await srv?.close();
  await removeDir(root);
});

test("a hit is the stored answer with its own id, free, and marked; the ledger keeps the saving", async () => {
  const r0 = await runs();
  const first = await ask("What is the capital of France?");
  assert.equal(first.response.headers.get("x-moltbot-cache"), "miss");
  const cost = await spent();
  assert.ok(cost > 0, "the run was charged");
  const second = await ask("What is the capital of France?");
  assert.equal(second.response.headers.get("x-moltbot-cache"), "hit-l1");
  assert.equal(second.response.headers.get("x-moltbot-model-version"), "v1.0");
  assert.equal(second.data.choices[0]!.message.content, first.data.choices[0]!.message.content);
  assert.deepEqual(second.data.usage, first.data.usage);
  assert.notEqual(second.data.id, first.data.id, "each response has its own id");
  assert.equal(await runs(), r0 + 1, "the model ran once");
  assert.equal(await spent(), cost, "a hit costs nothing (cache.charge_hits: false)");
  assert.equal(await metric("moltbot_cache_hits_total", { level: "l1" }), 1);
});

test("a streamed hit is replayed as SSE: role chunk, content, finish_reason, usage last", async () => {
  const body = { model: "demo", prompt: "Once upon a time", max_tokens: 12, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as const;
  const read = async () => {
    const { data, response } = await client.completions.create(body).withResponse();
    const chunks: OpenAI.Completion[] = [];
    for await (const c of data) chunks.push(c);
    return { header: response.headers.get("x-moltbot-cache"), chunks, text: chunks.map((c) => c.choices[0]?.text ?? "").join("") };
  };
  const miss = await read();
  const hit = await read();
  assert.equal(miss.header, "miss");
  assert.equal(hit.header, "hit-l1");
  assert.equal(hit.text, miss.text);
  assert.equal(hit.chunks.length, miss.chunks.length, "replayed in the pieces the run streamed");
  assert.ok(hit.text.length > 0);
  const last = hit.chunks.at(-1)!;
  assert.deepEqual(last.choices, [], "the usage chunk comes last");
  assert.deepEqual(last.usage, miss.chunks.at(-1)!.usage);
  assert.equal(hit.chunks.at(-2)!.choices[0]!.finish_reason, "length");
  assert.ok(hit.chunks.every((c) => c.object === "text_completion" && c.id === hit.chunks[0]!.id));
  assert.notEqual(hit.chunks[0]!.id, miss.chunks[0]!.id);
});

test("the Responses API replays a hit in its own shape, whole and streamed", async () => {
  const body = { model: "demo", input: "Summarize the minutes", max_output_tokens: 10, temperature: 0 } as const;
  const first = await client.responses.create(body).withResponse();
  const second = await client.responses.create(body).withResponse();
  assert.equal(first.response.headers.get("x-moltbot-cache"), "miss");
  assert.equal(second.response.headers.get("x-moltbot-cache"), "hit-l1");
  assert.equal(second.data.output_text, first.data.output_text);
  assert.notEqual(second.data.id, first.data.id);
  const { data: stream, response } = await client.responses.create({ ...body, stream: true }).withResponse();
  assert.equal(response.headers.get("x-moltbot-cache"), "hit-l1");
  const types: string[] = [];
  let text = "";
  for await (const e of stream) {
    types.push(e.type);
    if (e.type === "response.output_text.delta") text += e.delta;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), `response.${first.data.status}`, "ends as the run ended (10 tokens: incomplete)");
  assert.equal(text, first.data.output_text);
});

test("sampled requests, Cache-Control no-store / no-cache and \"cache\": false bypass the cache", async () => {
  const sampled = await ask("Tell me a story", { temperature: 1 });
  assert.equal(sampled.response.headers.get("x-moltbot-cache"), "bypass", "temperature 1 without a seed is not reproducible");
  const seeded = await ask("Tell me a story", { temperature: 1, seed: 7 });
  assert.equal(seeded.response.headers.get("x-moltbot-cache"), "miss");
  assert.equal((await ask("Tell me a story", { temperature: 1, seed: 7 })).response.headers.get("x-moltbot-cache"), "hit-l1", "an explicit seed is reproducible");
  assert.equal((await ask("Tell me a story", { temperature: 1, seed: 7 }, { "cache-control": "no-store" })).response.headers.get("x-moltbot-cache"), "bypass");
  assert.equal((await ask("Tell me a story", { temperature: 1, seed: 7, cache: false })).response.headers.get("x-moltbot-cache"), "bypass");
  const r0 = await runs();
  const fresh = await ask("A fresh question", {}, { "cache-control": "no-cache" });
  assert.equal(fresh.response.headers.get("x-moltbot-cache"), "bypass");
  assert.equal(await runs(), r0 + 1);
  assert.equal((await ask("A fresh question")).response.headers.get("x-moltbot-cache"), "hit-l1", "no-cache stored the fresh answer");
});

test("single-flight: 50 identical concurrent requests run the model once, each with its own id", async () => {
  const cache = srv.server.models.cache!;
  const r0 = await runs();
  const joined0 = await metric("moltbot_cache_hits_total", { level: "flight" });
  const stats0 = cache.stats();
  // Frozen while the 50 arrive, the leader's run is still in flight when every follower comes.
  const pending = await withWorkerFrozen(async () => {
    const pending = Array.from({ length: 50 }, () => ask("Fifty at once", { max_tokens: 48, ignore_eos: true }));
    await until("a leader and 49 followers", () => cache.stats().misses === stats0.misses + 1 && cache.stats().joined === stats0.joined + 49);
    return pending;
  });
  const all = await Promise.all(pending);
  assert.equal(await runs(), r0 + 1, "one run of the model for the 50");
  assert.equal(new Set(all.map((r) => r.data.id)).size, 50);
  assert.equal(new Set(all.map((r) => r.data.choices[0]!.message.content)).size, 1);
  assert.ok(all.every((r) => r.data.usage!.completion_tokens === 48));
  const headers = all.map((r) => r.response.headers.get("x-moltbot-cache"));
  assert.equal(headers.filter((h) => h === "miss").length, 1);
  assert.equal(headers.filter((h) => h === "hit-l1").length, 49);
  assert.equal((await metric("moltbot_cache_hits_total", { level: "flight" })) - joined0, 49, "every follower joined the run in flight");
});

test("a leader whose client disconnects does not fail its follower: the run goes on", async () => {
  const scheduler = srv.server.versions.get("demo")!.scheduler;
  const cache = srv.server.models.cache!;
  const queued = () => Object.values(scheduler.queuedByPriority()).reduce((a, b) => a + b, 0);
  const r0 = await runs();
  const { blocker, follower } = await withWorkerFrozen(async () => {
    // A blocker (sampled: not cached) holds the one slot, so the leader waits in the queue.
    const blocker = ask("the blocker", { temperature: 1, max_tokens: 200, ignore_eos: true });
    await until("the blocker running", () => scheduler.inflight >= 1);
    const leaderAbort = new AbortController();
    const body = JSON.stringify({ model: "demo", messages: [{ role: "user", content: "Who leads?" }], max_tokens: 64, temperature: 0, ignore_eos: true, stream: true });
    const leader = fetch(`${srv.baseURL}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body, signal: leaderAbort.signal }).catch((err: Error) => err);
    await until("the leader queued", () => queued() >= 1);
    const joinedBefore = cache.stats().joined;
    const follower = ask("Who leads?", { max_tokens: 64, ignore_eos: true });
    await until("the follower joined", () => cache.stats().joined > joinedBefore);
    leaderAbort.abort();
    const gone = await leader;
    assert.ok(gone instanceof Error || gone.status === 200, "the leader's client left");
    return { blocker, follower };
  });
  const f = await follower;
  assert.equal(f.response.headers.get("x-moltbot-cache"), "hit-l1");
  assert.equal(f.data.usage!.completion_tokens, 64, "the whole completion");
  assert.equal(f.data.choices[0]!.finish_reason, "length");
  await blocker;
  assert.equal(await runs(), r0 + 2, "the blocker and one run for leader and follower");
  const again = await ask("Who leads?", { max_tokens: 64, ignore_eos: true });
  assert.equal(again.response.headers.get("x-moltbot-cache"), "hit-l1", "the run was stored");
  assert.equal(again.data.choices[0]!.message.content, f.data.choices[0]!.message.content);
});

test("a version switch never serves the old version's answers; rolling back finds them again", async () => {
  const q = "Which version answers?";
  const v1 = await ask(q);
  assert.equal(v1.response.headers.get("x-moltbot-model-version"), "v1.0");
  await writeVersion("v2.0", 2);
  const activated = await fetch(`${srv.url}/admin/models/demo/activate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ version: "v2.0" }) });
  assert.equal(activated.status, 200, await activated.text());
  const v2 = await ask(q);
  assert.equal(v2.response.headers.get("x-moltbot-model-version"), "v2.0");
  assert.equal(v2.response.headers.get("x-moltbot-cache"), "miss", "v1.0's answer is not v2.0's");
  assert.notEqual(v2.data.choices[0]!.message.content, v1.data.choices[0]!.message.content, "the two versions answer differently");
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "hit-l1");
  const back = await fetch(`${srv.url}/admin/models/demo/rollback`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(back.status, 200, await back.text());
  const again = await ask(q);
  assert.equal(again.response.headers.get("x-moltbot-model-version"), "v1.0");
  assert.equal(again.response.headers.get("x-moltbot-cache"), "hit-l1");
  assert.equal(again.data.choices[0]!.message.content, v1.data.choices[0]!.message.content);
});

test("the store survives a restart; TTLs run on the injected clock; charge_hits charges a hit", async () => {
  const q = "What is the capital of France?";
  const before = await ask(q);
  await srv.close();
  const ledger = openSqliteLedger(ledgerPath(dataDir));
  const saved = ledger.status().find((s) => s.entry === "demo");
  ledger.close();
  assert.ok((saved?.cacheHits ?? 0) >= 5, `free hits recorded apart: ${JSON.stringify(saved)}`);
  assert.ok((saved?.saved ?? 0) > 0);

  let now = Date.now();
  srv = await startServer(path.join(root, "demo"), { dataDir, config: config(true), cacheNow: () => now });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  const s0 = await spent();
  const fromStore = await ask(q);
  assert.equal(fromStore.response.headers.get("x-moltbot-cache"), "hit-l2");
  assert.equal(fromStore.data.choices[0]!.message.content, before.data.choices[0]!.message.content);
  const charged = (await spent()) - s0;
  const usage = before.data.usage!;
  assert.ok(Math.abs(charged - (usage.prompt_tokens * PRICING.input_per_1k + usage.completion_tokens * PRICING.output_per_1k) / 1000) < 1e-9, `charged ${charged}`);
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "hit-l1", "the L2 hit filled L1");
  now += 2 * 3_600_000; // past l1.ttl (1h), within l2.ttl (7d)
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "hit-l2");
  now += 8 * 86_400_000; // past l2.ttl
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "miss");
});

test("moltbot cache stats and clear [--model] drive the admin API", async () => {
  const q = "What is the capital of France?";
  await ask(q);
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "hit-l1");
  const stats = await runCli(["cache", "stats", "--url", srv.url, "--json"]);
  assert.equal(stats.code, 0, stats.stderr);
  const doc = JSON.parse(stats.stdout) as { mode: string; l1: { entries: number; hits: number }; l2: { enabled: boolean; entries: number; hits: number } };
  assert.equal(doc.mode, "deterministic");
  assert.ok(doc.l1.hits >= 1 && doc.l2.hits >= 1 && doc.l2.enabled && doc.l2.entries >= 1, stats.stdout);
  const table = await runCli(["cache", "stats", "--url", srv.url]);
  assert.match(table.stdout, /^mode: deterministic {4}hit rate: \d+\.\d% /);
  assert.match(table.stdout, /\nmemory +\d+ +\d+ +\d+ +\d+\n/);
  const unknown = await runCli(["cache", "clear", "--model", "nope", "--url", srv.url]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no pool entry 'nope'/);
  const cleared = await runCli(["cache", "clear", "--model", "demo", "--url", srv.url]);
  assert.equal(cleared.code, 0, cleared.stderr);
  assert.match(cleared.stdout, /^Cleared [1-9]\d* response\(s\) from memory and [1-9]\d* from the store for demo\n$/);
  assert.equal((await ask(q)).response.headers.get("x-moltbot-cache"), "miss");
});

test("a server finding a damaged store sets it aside with a WARNING, starts a new one and serves", async () => {
  await srv.close();
  const fresh = path.join(root, "data-damaged");
  await mkdir(fresh, { recursive: true });
  await writeFile(path.join(fresh, "response-cache.sqlite"), "this is not a database ".repeat(400));
  srv = await startServer(path.join(root, "demo"), { dataDir: fresh, config: config(false) });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  assert.ok(srv.lines().some((l) => /\[WARNING\] \[cache\] Response cache store .*response-cache\.sqlite is damaged .*set aside as .*response-cache\.sqlite\.corrupt-/.test(l)), srv.lines().join("\n"));
  assert.ok((await readdir(fresh)).some((f) => f.startsWith("response-cache.sqlite.corrupt-")));
  assert.equal((await ask("After the damage")).response.headers.get("x-moltbot-cache"), "miss");
  assert.equal((await ask("After the damage")).response.headers.get("x-moltbot-cache"), "hit-l1");
  assert.ok(srv.server.models.cache!.stats().l2.entries >= 1, "the new store takes entries");
});
