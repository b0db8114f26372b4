// The load of the GPU check: N concurrent clients, each streaming /v1/completions back to back
// (a prompt of --prompt tokens, --gen tokens generated, greedy, ignore_eos), against a running
// Moltbot. Decoding speed is counted over the steady window only: from the moment every client
// has its first token to the moment the first client ends its last request, so neither the
// ramp-up (prompts queueing) nor the tail (a thinning batch) dilutes it. nvidia-smi is sampled
// every 100 ms over that same window, never while loading. Prints and appends one JSON line per
// client count to --out.
//   node dist/bench/gpu/load.js --url http://127.0.0.1:18080 --clients 1,32 --prompt 128 --gen 384 --out results.jsonl
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:18080" },
    model: { type: "string", default: "gpu-bench" },
    clients: { type: "string", default: "1,32" },
    prompt: { type: "string", default: "128" },
    gen: { type: "string", default: "384" },
    // Requests per client: the steady window must hold several seconds of nvidia-smi samples.
    requests: { type: "string", default: "1:10,32:4" },
    out: { type: "string" },
  },
});
const URL_ = values.url!;
const PROMPT_TOKENS = Number(values.prompt);
const GEN = Number(values.gen);
const perClient = new Map(values.requests!.split(",").map((kv) => kv.split(":").map(Number) as [number, number]));

const WORDS = "time people year way day thing man world life hand part child eye woman place work week case point government company number group problem fact".split(" ");
let serial = 0;

/** A prompt of `words` words that starts differently each time (no KV prefix reuse between requests). */
function promptText(words: number): string {
  const n = ++serial;
  const out = [`Request ${n}:`];
  for (let i = 0; i < words; i++) out.push(WORDS[(i * 7 + n * 13) % WORDS.length]!);
  return out.join(" ");
}

async function complete(body: Record<string, unknown>): Promise<{ prompt_tokens: number; completion_tokens: number }> {
  const r = await fetch(`${URL_}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: values.model, ...body }) });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  return ((await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
}

/** Words giving PROMPT_TOKENS prompt tokens (the tokenizer decides; a few rounds of proportion). */
async function calibrate(): Promise<{ words: number; tokens: number }> {
  let words = PROMPT_TOKENS;
  let tokens = 0;
  for (let i = 0; i < 6; i++) {
    tokens = (await complete({ prompt: promptText(words), max_tokens: 1 })).prompt_tokens;
    if (tokens === PROMPT_TOKENS) break;
    words = Math.max(1, words + Math.round(((PROMPT_TOKENS - tokens) * words) / tokens) || (tokens < PROMPT_TOKENS ? 1 : -1));
  }
  return { words, tokens };
}

interface RequestTiming {
  start: number;
  firstToken: number;
  end: number;
  /** performance.now() of every streamed delta, and the tokens it carried. */
  ticks: number[];
  completionTokens: number;
}

/** One streamed completion: the times of its token deltas; `onTick` at each. */
async function streamed(words: number, onTick?: () => void): Promise<RequestTiming> {
  const start = performance.now();
  const r = await fetch(`${URL_}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: values.model, prompt: promptText(words), max_tokens: GEN, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
  });
  if (r.status !== 200 || r.body === null) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const ticks: number[] = [];
  let completionTokens = 0;
  let buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of r.body) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      const data = event.startsWith("data: ") ? event.slice(6) : "";
      if (data === "" || data === "[DONE]") continue;
      const j = JSON.parse(data) as { choices?: { text?: string }[]; usage?: { completion_tokens: number } | null };
      if (j.usage) completionTokens = j.usage.completion_tokens;
      if (j.choices?.[0]?.text) {
        ticks.push(performance.now());
        onTick?.();
      }
    }
  }
  return { start, firstToken: ticks[0] ?? performance.now(), end: performance.now(), ticks, completionTokens };
}

/** nvidia-smi sampled every 100 ms until stop(); null when there is no nvidia-smi. */
function gpuSampler(): { stop(): Promise<{ util: number[]; memMiB: number[] } | null> } {
  let proc: ChildProcess;
  try {
    proc = spawn("nvidia-smi", ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "100"], { stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return { stop: async () => null };
  }
  let text = "";
  let failed = false;
  proc.on("error", () => (failed = true));
  proc.stdout!.on("data", (d: Buffer) => (text += d.toString()));
  return {
    stop: async () => {
      if (failed) return null;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
      const rows = text.trim().split("\n").filter(Boolean).map((l) => l.split(",").map((x) => Number(x.trim())));
      // One GPU: the first column pair. Several: the device the server uses is GPU 0 by default.
      return failed || rows.length === 0 ? null : { util: rows.map((r) => r[0]!), memMiB: rows.map((r) => r[1]!) };
    },
  };
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const mean = (xs: number[]) => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);
const round = (x: number | null, d = 1) => (x === null ? null : Number(x.toFixed(d)));

async function run(clients: number, words: number): Promise<Record<string, unknown>> {
  const requests = perClient.get(clients) ?? 4;
  const all: RequestTiming[] = [];
  /** Each client's first request: they all arrive at once, so their TTFT includes queueing behind the others' prompts. */
  const firstRound: RequestTiming[] = [];
  let started = 0;
  let steadyStart = Infinity;
  let steadyEnd = Infinity;
  let sampler: ReturnType<typeof gpuSampler> | undefined;
  let samples: Promise<{ util: number[]; memMiB: number[] } | null> | undefined;
  const firstTokenSeen = () => {
    if (++started === clients) {
      steadyStart = performance.now();
      sampler = gpuSampler();
    }
  };
  const client = async () => {
    for (let i = 0; i < requests; i++) {
      let seen = i > 0;
      const t = await streamed(words, () => seen || ((seen = true), firstTokenSeen()));
      all.push(t);
      if (i === 0) firstRound.push(t);
    }
    const end = performance.now();
    if (end < steadyEnd) {
      steadyEnd = end;
      if (sampler !== undefined) samples = sampler.stop();
    }
  };
  await Promise.all(Array.from({ length: clients }, client));
  const gpu = samples === undefined ? null : await samples;
  const window = Math.max(0, steadyEnd - steadyStart);
  let tokens = 0;
  for (const r of all) for (const t of r.ticks) if (t >= steadyStart && t <= steadyEnd) tokens++;
  const ttft = all.map((r) => r.firstToken - r.start);
  const firstTtft = firstRound.map((r) => r.firstToken - r.start);
  const completion = all.reduce((a, r) => a + r.completionTokens, 0);
  const total = Math.max(...all.map((r) => r.end)) - Math.min(...all.map((r) => r.start));
  return {
    clients,
    requests: all.length,
    completion_tokens: completion,
    steady_window_s: round(window / 1000, 2),
    steady_tokens_per_s: round(window > 0 ? (tokens * 1000) / window : null),
    overall_tokens_per_s: round((completion * 1000) / total),
    ttft_ms: { p50: round(pct(ttft, 50)), p95: round(pct(ttft, 95)), first_round_p50: round(pct(firstTtft, 50)) },
    gpu_util_percent: gpu === null ? null : { mean: round(mean(gpu.util)), p50: pct(gpu.util, 50), samples: gpu.util.length },
    gpu_memory_used_mib: gpu === null ? null : pct(gpu.memMiB, 50),
  };
}

const cal = await calibrate();
console.log(JSON.stringify({ calibration: { words: cal.words, prompt_tokens: cal.tokens } }));
for (const clients of values.clients!.split(",").map(Number)) {
  const r = { prompt_tokens: cal.tokens, gen_tokens: GEN, ...(await run(clients, cal.words)) };
  const line = JSON.stringify(r);
  console.log(line);
  if (values.out) appendFileSync(values.out, line + "\n");
}
