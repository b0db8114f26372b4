// resource_limits under load, on a real server (`moltbot deploy`) with its worker in cgroups:
//
//   1. quota: one stream's decode speed on 1 thread, unlimited vs `cpu.quota` (default 50%),
//      and the throttling the worker's cgroup recorded (cpu.stat through /admin/status).
//   2. seed: the seed's limits (cpu.quota 150%, period 100ms, memory 4GiB, swap 1GiB, io read
//      10MB/s, write 5MB/s) and `--clients` concurrent streaming clients (default 50) for
//      `--seconds`: requests, errors, latency p50/p99, time to first token, tokens/s, and the
//      worker's throttled time and memory peak against its limits.
//
//   node --import tsx bench/limits.ts [--model demo|m100|PATH] [--quota 50%] [--clients 50] [--seconds 60]
//        [--tokens 32] [--only quota|seed]
//
// Needs root and writable cgroups (v1 cpu/memory/blkio or v2). Run under the CPU lock on a
// shared machine: flock /tmp/moltbot-cpu.lock node --import tsx bench/limits.ts
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { benchModel, commandLine, freePort, machine, median, percentile, sseData, startServed } from "./lib.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    quota: { type: "string", default: "50%" },
    clients: { type: "string", default: "50" },
    seconds: { type: "string", default: "60" },
    tokens: { type: "string", default: "32" },
    only: { type: "string" },
  },
});
const BIN = path.join(path.resolve(import.meta.dirname, ".."), "bin", "moltbot");

interface Resources {
  limits: Array<{ limit: string; value: string; enforced: boolean; reason: string | null }>;
  usage: { cpu_throttled_s: number | null; cpu_throttled_periods: number | null; memory_bytes: number | null; memory_peak_bytes: number | null; oom_kills: number | null };
}
interface Status {
  models: Array<{ pid: number | null; state: string; cpu_seconds: number | null; resources: Resources | null }>;
}

async function serve(modelPath: string, yaml: string, threads: number) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-limits-"));
  const config = path.join(dir, "moltbot.yaml");
  await writeFile(config, yaml);
  const port = freePort();
  const args = [BIN, "deploy", "--model-path", modelPath, "--port", String(port), "--config", config, "--log-level", "WARNING", "--threads", String(threads)];
  const s = await startServed(process.execPath, args, port, "/readyz");
  const model = ((await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string }> }).data[0]!.id;
  const status = async () => ((await (await fetch(`${s.url}/admin/status`)).json()) as Status).models[0]!;
  return { ...s, model, status };
}

interface Run {
  ok: boolean;
  cause?: string;
  latencyMs: number;
  ttftMs: number | undefined;
  tokens: number;
}

/** One streamed chat completion; ok when it ended with finish_reason and [DONE] and no error event. */
async function streamed(url: string, model: string, content: string, maxTokens: number, extra: Record<string, unknown> = {}): Promise<Run> {
  const t0 = performance.now();
  let ttftMs: number | undefined;
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content }], max_tokens: maxTokens, temperature: 0.7, stream: true, ...extra }),
      signal: AbortSignal.timeout(120_000),
    });
    if (res.status !== 200 || !res.body) return { ok: false, cause: `${res.status} ${(await res.text()).slice(0, 200)}`, latencyMs: performance.now() - t0, ttftMs, tokens: 0 };
    let tokens = 0;
    let finish = false;
    let done = false;
    let error: string | undefined;
    for await (const event of sseData(res.body)) {
      if (event === "[DONE]") {
        done = true;
        continue;
      }
      const data = JSON.parse(event) as { error?: { code?: string }; choices?: Array<{ delta?: { content?: string }; finish_reason?: string | null }> };
      if (data.error) error = data.error.code ?? "error";
      if (data.choices?.[0]?.delta?.content) {
        ttftMs ??= performance.now() - t0;
        tokens++;
      }
      if (data.choices?.[0]?.finish_reason) finish = true;
    }
    const ok = error === undefined && finish && done;
    return { ok, ...(ok ? {} : { cause: error ?? "stream ended early" }), latencyMs: performance.now() - t0, ttftMs, tokens };
  } catch (err) {
    return { ok: false, cause: (err as Error).name, latencyMs: performance.now() - t0, ttftMs, tokens: 0 };
  }
}

/**
 * Decode tok/s of one stream of `tokens` tokens (median of 3, after one warm-up), and the
 * worker's CPU over the three streams in % of one core (from /proc through /admin/status).
 */
async function oneStream(s: { url: string; model: string; status(): Promise<Status["models"][number]> }, tokens: number): Promise<{ rate: number; cpuPercent: number }> {
  await streamed(s.url, s.model, "warm up", 16);
  const rates: number[] = [];
  const cpu0 = (await s.status()).cpu_seconds ?? 0;
  const t0 = performance.now();
  for (let i = 0; i < 3; i++) {
    const r = await streamed(s.url, s.model, `Tell me a long story, number ${i}.`, tokens, { ignore_eos: true });
    if (!r.ok || r.ttftMs === undefined) throw new Error(`stream failed: ${r.cause}`);
    rates.push((r.tokens - 1) / ((r.latencyMs - r.ttftMs) / 1000));
  }
  const cpuPercent = (((await s.status()).cpu_seconds ?? 0) - cpu0) / ((performance.now() - t0) / 1000) * 100;
  return { rate: median(rates), cpuPercent };
}

const limitsText = (r: Resources | null) => (r === null ? "none" : r.limits.map((l) => `${l.limit} ${l.value}${l.enforced ? "" : ` NOT ENFORCED (${l.reason})`}`).join(", "));

async function quotaRun(modelPath: string): Promise<void> {
  const tokens = 400;
  console.log(`\n## 1. One stream, 1 thread: unlimited vs cpu.quota ${values.quota} (${tokens} tokens, median of 3)`);
  const free = await serve(modelPath, "", 1);
  let unlimited: { rate: number; cpuPercent: number };
  try {
    unlimited = await oneStream(free, tokens);
  } finally {
    await free.stop();
  }
  const limited = await serve(modelPath, `resource_limits:\n  cpu: { quota: "${values.quota}", period: 100ms }\n`, 1);
  try {
    const before = (await limited.status()).resources!.usage;
    const capped = await oneStream(limited, tokens);
    const after = await limited.status();
    console.log(`limits: ${limitsText(after.resources)}`);
    console.log(`unlimited: ${unlimited.rate.toFixed(1)} tok/s, worker CPU ${unlimited.cpuPercent.toFixed(0)}% of a core`);
    console.log(`cpu.quota ${values.quota}: ${capped.rate.toFixed(1)} tok/s (${((capped.rate / unlimited.rate) * 100).toFixed(0)}% of unlimited), worker CPU ${capped.cpuPercent.toFixed(0)}% of a core`);
    const u = after.resources!.usage;
    console.log(`throttled: ${(u.cpu_throttled_periods ?? 0) - (before.cpu_throttled_periods ?? 0)} periods, ${((u.cpu_throttled_s ?? 0) - (before.cpu_throttled_s ?? 0)).toFixed(2)} s during the streams`);
  } finally {
    await limited.stop();
  }
}

async function seedRun(modelPath: string): Promise<void> {
  const clients = Number(values.clients);
  const seconds = Number(values.seconds);
  const maxTokens = Number(values.tokens);
  const yaml = [
    "resource_limits:",
    "  cpu:    { quota: 150%, period: 100ms }",
    "  memory: { limit: 4GiB, swap: 1GiB }",
    "  io:     { read_bps: 10MB/s, write_bps: 5MB/s }",
    "queue: { max_wait_ms: 120000 }",
    "",
  ].join("\n");
  console.log(`\n## 2. The seed's limits, ${clients} concurrent streaming clients, ${seconds} s, max_tokens ${maxTokens}`);
  const s = await serve(modelPath, yaml, os.availableParallelism());
  try {
    const st = await s.status();
    console.log(`limits: ${limitsText(st.resources)}`);
    const before = st.resources!.usage;
    const runs: Array<Run & { endMs: number }> = [];
    const t0 = performance.now();
    const endAt = t0 + seconds * 1000;
    let n = 0;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < endAt) {
          const r = await streamed(s.url, s.model, `Question number ${n++}: what is the weather like?`, maxTokens);
          runs.push({ ...r, endMs: performance.now() - t0 });
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    const after = await s.status();
    const ok = runs.filter((r) => r.ok);
    const failed = runs.filter((r) => !r.ok);
    const lat = ok.map((r) => r.latencyMs);
    const ttft = ok.flatMap((r) => (r.ttftMs === undefined ? [] : [r.ttftMs]));
    const tokens = ok.reduce((a, r) => a + r.tokens, 0);
    console.log(`requests: ${runs.length} (${(runs.length / wallS).toFixed(1)}/s), errors: ${failed.length}${failed.length ? ` (${[...new Set(failed.map((f) => f.cause))].join("; ")})` : ""}`);
    console.log(`latency ms: p50 ${percentile(lat, 50).toFixed(0)}, p95 ${percentile(lat, 95).toFixed(0)}, p99 ${percentile(lat, 99).toFixed(0)}; ttft ms: p50 ${percentile(ttft, 50).toFixed(0)}, p99 ${percentile(ttft, 99).toFixed(0)}`);
    console.log(`tokens: ${tokens} (${(tokens / wallS).toFixed(0)} tok/s aggregate)`);
    // Steadiness: requests finished in each tenth of the run.
    const tenth = (seconds * 1000) / 10;
    const perTenth = Array.from({ length: 10 }, (_, i) => runs.filter((r) => r.endMs >= i * tenth && r.endMs < (i + 1) * tenth).length);
    console.log(`finished per ${(tenth / 1000).toFixed(0)} s: ${perTenth.join(" ")}`);
    const u = after.resources!.usage;
    console.log(
      `worker: state ${after.state}, throttled ${((u.cpu_throttled_s ?? 0) - (before.cpu_throttled_s ?? 0)).toFixed(1)} s in ${(u.cpu_throttled_periods ?? 0) - (before.cpu_throttled_periods ?? 0)} periods, memory ${((u.memory_bytes ?? 0) / 2 ** 20).toFixed(0)} MiB (peak ${((u.memory_peak_bytes ?? 0) / 2 ** 20).toFixed(0)} MiB of 4096), OOM kills ${u.oom_kills}`,
    );
  } finally {
    await s.stop();
  }
}

async function main(): Promise<void> {
  console.log(`# bench/limits.ts — ${new Date().toISOString()}`);
  console.log(`machine: ${machine()}`);
  console.log(`command: ${commandLine()}`);
  const { modelPath } = await benchModel(values.model!);
  if (values.only !== "seed") await quotaRun(modelPath);
  if (values.only !== "quota") await seedRun(modelPath);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
