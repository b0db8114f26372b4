// Prompt-evaluation benchmark: time to the first token of cold prompts (no cache, distinct
// tokens every time), in-process on Moltbot's FFI engine, against llama.cpp's own llama-bench
// on the same GGUF and kernels. The tail is the point: with the thread tuner a prompt chunk can
// land on a 1-thread probe and take twice as long, which a median hides.
//
//   node --import tsx bench/prefill.ts [--model m100|demo|FILE] [--tokens 1077] [--reps 60]
//        [--warmup 2] [--configs tuned,fixed,t1,lb|e2:fixed,...] [--threads 2]
//        [--batch 512[,256,1077]] [--poll 1[,50]] [--ctx 2048[,1280]] [--ubatch 512[,256,1024]] [--hog N]
//        [--engine MODULE[,MODULE]] [--llama-bench auto|PATH] [--llama-bench-sweep]
//        [--lb-reps 10] [--json FILE]
//
// Configurations, interleaved prompt by prompt so machine noise hits all alike; each engine is
// loaded once and its tuner learns across the run, as in a server:
//   tuned  `threads` threads, defaults (threadpool, StepThreadTuner)
//   fixed  `threads` threads, adaptiveThreads: false (always all threads; the threadpool stays)
//   t1     1 thread
//   lb     llama-bench at `threads` threads, one process per prompt (per --ubatch), its own timing
// --batch is FfiEngineOptions.batchSize: the tokens per llama_decode, so the prompt's chunking
// (n_ubatch, derived inside the engine, is min(batch, 512)); --poll is threadpoolPoll (default:
// the engine's; llama-bench's --poll for lb); --ctx is contextSize (default max(2048, tokens + 16)). --engine loads loadFfiEngine from other modules (local variants of
// src/engine/ffi-engine.ts: another tuner, another n_ubatch), each configuration then once per
// module (e1, e2, ...; "e2:fixed" only with the second). --hog N runs N busy-looping processes
// beside the measurement. --llama-bench-sweep adds llama-bench's own figures at 1 and `threads`
// threads, prompts of 512 and --tokens, each --ubatch (not interleaved).
// llama-bench comes from ../shared/peer/build-llama-server.sh (~/.cache/moltbot-peer/*/bin).
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { FfiEngineOptions, loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, EngineLoadOptions } from "../src/engine/types.js";
import { benchModel, commandLine, findPeerTool, machine, median, percentile } from "./lib.js";

const { values: args } = parseArgs({
  options: {
    model: { type: "string", default: "m100" },
    tokens: { type: "string", default: "1077" },
    reps: { type: "string", default: "60" },
    warmup: { type: "string", default: "2" },
    configs: { type: "string", default: "tuned,fixed,t1" },
    threads: { type: "string", default: "2" },
    batch: { type: "string", default: "512" },
    ubatch: { type: "string", default: "512" },
    hog: { type: "string", default: "0" },
    "llama-bench": { type: "string", default: "auto" },
    "llama-bench-sweep": { type: "boolean", default: false },
    "lb-reps": { type: "string", default: "10" },
    poll: { type: "string" },
    ctx: { type: "string" },
    engine: { type: "string" },
    json: { type: "string" },
  },
});
const TOKENS = Number(args.tokens);
const REPS = Number(args.reps);
const WARMUP = Number(args.warmup);
const THREADS = Number(args.threads);
const CONFIGS = args.configs.split(",").filter(Boolean);
const BATCHES = args.batch.split(",").map(Number);
const UBATCHES = args.ubatch.split(",").map(Number);
const CTXS: number[] = args.ctx === undefined ? [Math.max(2048, Number(args.tokens) + 16)] : args.ctx.split(",").map(Number);
const POLLS: (number | null)[] = args.poll === undefined ? [null] : args.poll.split(",").map(Number);
const HOGS = Number(args.hog);

// One token, greedy; cachePrompt false: every prompt is evaluated in full, whatever a prefix
// cache holds. maxTokens both here and on the request, and the request built apart (no
// excess-property check): the same script drives engine builds from before and after the
// request carried its own maxTokens (see --engine).
const params = { temperature: 0, topP: 1, seed: undefined, maxTokens: 1, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: false };

/** A prompt nobody has seen: random ids, skipping the first few (special tokens). */
function coldPrompt(vocab: number, rand: () => number): number[] {
  return Array.from({ length: TOKENS }, () => 8 + Math.floor(rand() * (vocab - 8)));
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

interface Stats { n: number; p50: number; p90: number; p99: number; max: number; mean: number; tps: number; slow: number }

function stats(ms: number[]): Stats {
  const p50 = median(ms);
  return {
    n: ms.length,
    p50: +p50.toFixed(1),
    p90: +percentile(ms, 90).toFixed(1),
    p99: +percentile(ms, 99).toFixed(1),
    max: +Math.max(...ms).toFixed(1),
    mean: +(ms.reduce((a, b) => a + b, 0) / ms.length).toFixed(1),
    tps: +((TOKENS * 1000) / p50).toFixed(1),
    // prompts 1.4x slower than the median: a 1-thread probe on a 2-thread machine looks like this
    slow: ms.filter((x) => x > 1.4 * p50).length,
  };
}

const line = (name: string, s: Stats) =>
  `${name.padEnd(34)} n=${String(s.n).padStart(3)}  p50 ${s.p50.toFixed(1).padStart(7)}  p90 ${s.p90.toFixed(1).padStart(7)}  p99 ${s.p99.toFixed(1).padStart(7)}  max ${s.max.toFixed(1).padStart(7)} ms  ${s.tps.toFixed(0).padStart(5)} tok/s  slow(>1.4x p50) ${s.slow}`;

function findLlamaBench(): string | null {
  if (args["llama-bench"] !== "auto") return args["llama-bench"]!;
  return findPeerTool("llama-bench");
}

interface LlamaBenchRow { n_prompt: number; n_threads: number; n_ubatch: number; n_batch: number; avg_ns: number; samples_ns: number[] }

async function main(): Promise<void> {
  const model = await benchModel(args.model);
  const modules = args.engine ? args.engine.split(",").map((m) => path.resolve(m)) : ["../src/engine/ffi-engine.js"];
  const loaders: ((o: EngineLoadOptions, f: FfiEngineOptions) => Promise<Engine>)[] = [];
  for (const m of modules) loaders.push(((await import(m)) as { loadFfiEngine: typeof loadFfiEngine }).loadFfiEngine);

  const hogs = Array.from({ length: HOGS }, () => spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
  process.on("exit", () => { for (const h of hogs) h.kill("SIGKILL"); });
  console.log(`# ${commandLine()}`);
  console.log(`# ${machine()}; model ${model.file}; load avg ${os.loadavg()[0]!.toFixed(2)}`);
  console.log(`# cold ${TOKENS}-token prompts, time to the first token (maxTokens 1), ${WARMUP} warm-up + ${REPS} measured per configuration, interleaved${HOGS ? `; ${HOGS} busy process(es) beside it` : ""}`);
  if (args.engine) modules.forEach((m, k) => console.log(`# e${k + 1}: ${m}`));

  const lb = findLlamaBench();
  let vocab = 256; // every GGUF has that many; the engines tell the real size
  /** One configuration: `once` evaluates one cold prompt and returns its milliseconds. */
  const runs: { name: string; once(prompt: number[]): Promise<number>; close(): Promise<void>; ms: number[] }[] = [];
  for (const [k, load] of loaders.entries()) for (const batch of BATCHES) for (const poll of POLLS) for (const ctx of CTXS) {
    for (const spec of CONFIGS) {
      // "e2:fixed" runs that configuration with the second --engine module only
      const [only, c] = spec.includes(":") ? (spec.split(":") as [string, string]) : [null, spec];
      if (only !== null && only !== `e${k + 1}`) continue;
      if (c === "lb") continue;
      if (c !== "tuned" && c !== "fixed" && c !== "t1") throw new Error(`unknown configuration ${c} (tuned, fixed, t1, lb)`);
      const threads = c === "t1" ? 1 : THREADS;
      const ffi: FfiEngineOptions = { batchSize: batch, ...(poll === null ? {} : { threadpoolPoll: poll }), ...(c === "fixed" ? { adaptiveThreads: false } : {}) };
      const engine = await load({ modelPath: model.file, contextSize: ctx, parallel: 1, threads, embedding: false }, ffi);
      vocab = engine.info.vocabSize;
      runs.push({
        name: `${args.engine ? `e${k + 1} ` : ""}${c} t=${threads} batch=${batch}${poll === null ? "" : ` poll=${poll}`}${args.ctx === undefined ? "" : ` ctx=${ctx}`}`,
        ms: [],
        async once(prompt) {
          const t0 = performance.now();
          let first = 0;
          const request = { promptTokens: prompt, params, maxTokens: 1, onToken: () => ((first = performance.now()), true) };
          await engine.generate(request);
          if (first === 0) throw new Error("no token came back");
          return first - t0;
        },
        close: () => engine.close(),
      });
    }
  }
  // llama-bench in the same rotation: one process per prompt, its own figure for the second of
  // two runs (the first pages the weights in); random tokens of its own, also cold.
  if (CONFIGS.includes("lb")) {
    if (lb === null) throw new Error("configuration lb: no llama-bench (../shared/peer/build-llama-server.sh)");
    for (const ub of UBATCHES) for (const poll of POLLS) {
      const a = ["-m", model.file, "-t", String(THREADS), "-p", String(TOKENS), "-n", "0", "-ub", String(ub), "-r", "2", "--no-warmup", "-o", "json"];
      if (poll !== null) a.push("--poll", String(poll));
      runs.push({
        name: `llama-bench t=${THREADS} ub=${ub}${poll === null ? "" : ` poll=${poll}`}`,
        ms: [],
        async once() {
          const r = spawnSync(lb, a, { encoding: "utf8", timeout: 120_000 });
          if (r.status !== 0) throw new Error(`llama-bench failed: ${r.stderr.slice(-500)}`);
          return (JSON.parse(r.stdout) as LlamaBenchRow[])[0]!.samples_ns[1]! / 1e6;
        },
        async close() {},
      });
    }
  }
  const rand = lcg(12345);
  for (let rep = 0; rep < WARMUP + REPS; rep++) {
    for (const r of runs) {
      const ms = await r.once(coldPrompt(vocab, rand));
      if (rep >= WARMUP) r.ms.push(ms);
    }
  }
  const results: Record<string, Stats & { samples: number[] }> = {};
  console.log("");
  for (const r of runs) {
    const s = stats(r.ms);
    results[r.name] = { ...s, samples: r.ms.map((x) => +x.toFixed(1)) };
    console.log(line(r.name, s));
    await r.close();
  }
  // Where the slow prompts fell (measured rep index): periodic probes show as a regular pattern.
  for (const r of runs) {
    const p50 = median(r.ms);
    const slow = r.ms.flatMap((x, i) => (x > 1.4 * p50 ? [`#${i}:${x.toFixed(0)}`] : []));
    if (slow.length) console.log(`# slow prompts of ${r.name}: ${slow.join(" ")}`);
  }

  let llamaBench: Record<string, Stats> | undefined;
  if (lb === null || !args["llama-bench-sweep"]) {
    if (lb === null) console.log("\n# llama-bench: not built (../shared/peer/build-llama-server.sh), skipped");
  } else {
    llamaBench = {};
    const threadList = [...new Set([1, THREADS])].join(",");
    const a = ["-m", model.file, "-t", threadList, "-p", `512,${TOKENS}`, "-n", "0", "-ub", UBATCHES.join(","), "-r", args["lb-reps"]!, "-o", "json"];
    console.log(`\n# ${lb} ${a.join(" ")}`);
    const r = spawnSync(lb, a, { encoding: "utf8", timeout: 600_000 });
    if (r.status !== 0) throw new Error(`llama-bench failed: ${r.stderr.slice(-500)}`);
    for (const row of JSON.parse(r.stdout) as LlamaBenchRow[]) {
      const name = `llama-bench t=${row.n_threads} p=${row.n_prompt} ub=${row.n_ubatch}`;
      const ms = row.samples_ns.map((ns) => ns / 1e6);
      const s = { ...stats(ms), tps: +((row.n_prompt * 1e9) / median(row.samples_ns)).toFixed(1) };
      llamaBench[name] = s;
      console.log(line(name, s));
    }
  }
  console.log(`# load avg at the end ${os.loadavg()[0]!.toFixed(2)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify({ command: commandLine(), machine: machine(), model: model.file, tokens: TOKENS, results, llamaBench }, null, 2));
  for (const h of hogs) h.kill("SIGKILL");
}

main().catch((err: unknown) => {
  console.error(`prefill: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
