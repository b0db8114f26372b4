// Per-token loop benchmark: node-llama-cpp's LlamaCompletion against Moltbot's FFI engine
// (src/engine/ffi-engine.ts) on the same libllama, at 1 and 2 threads, one stream and 8
// concurrent sequences, 64-token greedy generations. Configurations run interleaved, round
// after round, so a noisy neighbour hurts all of them alike; the summary is the median.
// llama.cpp's own llama-bench joins when a peer build exists (~/.cache/moltbot-peer/*/bin).
//
//   node --import tsx bench/engine-loop.ts [--model FILE] [--rounds 3] [--seconds 3]
//        [--tokens 64] [--only ffi,ffi-fixed,nlc,llama-bench] [--hog N] [--json FILE]
//
// "ffi" is the engine as configured by default (persistent threadpool, threads chosen per step
// by StepThreadTuner); "ffi-fixed" is the same engine at a fixed thread count and no
// threadpool (what it did before). --hog N runs N busy-looping processes beside the
// measurement, the way the server process and other workers share a small machine.
//
// Without --model the m100 random-weight model (~98M parameters, Q8_0) is generated once
// into ~/.cache/moltbot/bench/ by scripts/make-model.ts.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, GenerationParams } from "../src/engine/types.js";
import { findPeerTool } from "./lib.js";

/** The package root (holds package.json), whether run from source or from dist/. */
const root = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
const commandLine = ["node", ...process.execArgv, path.relative(process.cwd(), process.argv[1]!), ...process.argv.slice(2)].join(" ");

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    tokens: { type: "string", default: "64" },
    only: { type: "string" },
    hog: { type: "string", default: "0" },
    json: { type: "string" },
    help: { type: "boolean" },
  },
});
if (args.help) {
  console.log("usage: node --import tsx bench/engine-loop.ts [--model FILE] [--rounds N] [--seconds S] [--tokens N] [--only ffi,nlc,llama-bench] [--json FILE]");
  process.exit(0);
}
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const TOKENS = Number(args.tokens);
const ONLY = args.only?.split(",") ?? ["ffi", "ffi-fixed", "nlc", "llama-bench"];
const HOGS = Number(args.hog);
const PROMPT = "The old man looked at the sea and said that";
const CTX = 256;

function ensureModel(): string {
  if (args.model) return path.resolve(args.model);
  const file = path.join(os.homedir(), ".cache", "moltbot", "bench", "m100-q8_0.gguf");
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true });
    console.log(`generating ${file} ...`);
    execFileSync(process.execPath, ["--import", "tsx", path.join(root, "scripts/make-model.ts"), "--preset", "m100", "--out", file], { stdio: "inherit", cwd: root });
  }
  return file;
}

/** One measured configuration: set up, run generations for a while, tear down. */
interface Config {
  name: string;
  /**
   * `once` runs one batch of `streams` generations and returns its completion tokens and wall
   * milliseconds; generations still running at `signal` stop and count what they made (a
   * starved 2-thread run can take minutes for 64 tokens).
   */
  open(): Promise<{ once(signal: AbortSignal): Promise<{ tokens: number; ms: number }>; close(): Promise<void> }>;
}

const greedy: GenerationParams = { temperature: 0, topP: 1, seed: undefined, maxTokens: TOKENS, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };

function ffiConfig(modelPath: string, threads: number, streams: number, fixed = false): Config {
  return {
    name: `${fixed ? "ffi-fixed " : "ffi       "} t=${threads} x${streams}`,
    async open() {
      const engine: Engine = await loadFfiEngine({ modelPath, contextSize: CTX, parallel: streams, threads, embedding: false }, fixed ? { threadpoolPoll: false, adaptiveThreads: false } : {});
      const prompt = engine.tokenize(PROMPT, true);
      return {
        async once(signal) {
          let tokens = 0;
          const t0 = performance.now();
          await Promise.all(Array.from({ length: streams }, () => engine.generate({ promptTokens: prompt, params: greedy, maxTokens: TOKENS, signal, onToken: () => (tokens++, true) })));
          return { tokens, ms: performance.now() - t0 };
        },
        close: () => engine.close(),
      };
    },
  };
}

type NlcModule = typeof import("node-llama-cpp");
let nlc: { mod: NlcModule; llama: Awaited<ReturnType<NlcModule["getLlama"]>> } | undefined;

function nlcConfig(modelPath: string, threads: number, streams: number): Config {
  return {
    name: `nlc        t=${threads} x${streams}`,
    async open() {
      if (nlc === undefined) {
        const mod = await import("node-llama-cpp");
        nlc = { mod, llama: await mod.getLlama({ gpu: false, build: "never", logLevel: mod.LlamaLogLevel.error }) };
      }
      const model = await nlc.llama.loadModel({ modelPath });
      const context = await model.createContext({ contextSize: CTX * streams, sequences: streams, threads, batchSize: 512 });
      const completions = Array.from({ length: streams }, () => new nlc!.mod.LlamaCompletion({ contextSequence: context.getSequence() }));
      return {
        async once(signal) {
          let tokens = 0;
          const t0 = performance.now();
          // Random weights rarely emit EOS; if they do, the shorter generation counts what it made.
          await Promise.all(completions.map((c) => c.generateCompletion(PROMPT, { maxTokens: TOKENS, temperature: 0, signal, stopOnAbortSignal: true, onToken: (t) => { tokens += t.length; } })
            .catch((err: unknown) => { if (!signal.aborted) throw err; })));
          return { tokens, ms: performance.now() - t0 };
        },
        async close() {
          for (const c of completions) c.dispose();
          await context.dispose();
          await model.dispose();
        },
      };
    },
  };
}

const findLlamaBench = (): string | null => findPeerTool("llama-bench");

/** llama-bench's text-generation figure (no sampling, no detokenizing): the ceiling. */
function llamaBenchConfig(exe: string, modelPath: string, threads: number): Config {
  return {
    name: `llama-bench t=${threads} x1`,
    async open() {
      return {
        async once(_signal) {
          const reps = Math.max(1, Math.round(SECONDS * 3));
          const r = spawnSync(exe, ["-m", modelPath, "-t", String(threads), "-p", "0", "-n", String(TOKENS), "-r", String(reps), "-o", "json"], { encoding: "utf8", timeout: 60_000 });
          if (r.status !== 0) throw new Error(`llama-bench failed: ${r.stderr.slice(-300)}`);
          const rows = JSON.parse(r.stdout) as { avg_ts: number }[];
          // Report its own timing (excludes model load): tokens/ms from avg_ts.
          const tps = rows[0]!.avg_ts;
          return { tokens: TOKENS * reps, ms: (TOKENS * reps * 1000) / tps };
        },
        async close() {},
      };
    },
  };
}

/** Cost of one `await setImmediate` turn, the loop's yield between decode steps. */
async function measureYield(): Promise<number> {
  const n = 20000;
  for (let i = 0; i < 1000; i++) await new Promise<void>((r) => setImmediate(r));
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
  return ((performance.now() - t0) * 1000) / n;
}

async function main(): Promise<void> {
  const modelPath = ensureModel();
  const configs: Config[] = [];
  for (const threads of [1, 2]) {
    for (const streams of [1, 8]) {
      if (ONLY.includes("nlc")) configs.push(nlcConfig(modelPath, threads, streams));
      if (ONLY.includes("ffi")) configs.push(ffiConfig(modelPath, threads, streams));
      if (ONLY.includes("ffi-fixed") && threads > 1) configs.push(ffiConfig(modelPath, threads, streams, true));
    }
  }
  const lb = ONLY.includes("llama-bench") ? findLlamaBench() : null;
  if (lb !== null) for (const threads of [1, 2]) configs.push(llamaBenchConfig(lb, modelPath, threads));

  const hogs = Array.from({ length: HOGS }, () => spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
  process.on("exit", () => { for (const h of hogs) h.kill("SIGKILL"); });
  const load0 = os.loadavg()[0]!;
  console.log(`# ${commandLine}`);
  console.log(`# model ${modelPath}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}; node ${process.version}; load avg ${load0.toFixed(2)}`);
  console.log(`# ${TOKENS}-token greedy generations, ${ROUNDS} interleaved rounds of ~${SECONDS}s per configuration${lb ? `; llama-bench: ${lb}` : ""}`);
  const yieldUs = await measureYield();
  if (HOGS > 0) console.log(`# ${HOGS} busy-looping process(es) running beside the measurement`);
  console.log(`# setImmediate yield between decode steps: ${yieldUs.toFixed(2)} us per step`);

  const results = new Map<string, number[]>(configs.map((c) => [c.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const config of configs) {
      const run = await config.open();
      try {
        await run.once(AbortSignal.timeout(SECONDS * 1000)); // warm-up: graph allocation, page-in of the weights
        let tokens = 0;
        let ms = 0;
        const signal = AbortSignal.timeout(SECONDS * 1000);
        do {
          const r = await run.once(signal);
          tokens += r.tokens;
          ms += r.ms;
        } while (!signal.aborted && !config.name.startsWith("llama-bench"));
        const tps = (tokens / ms) * 1000;
        results.get(config.name)!.push(tps);
        console.log(`round ${round}  ${config.name.padEnd(22)} ${tps.toFixed(1).padStart(8)} tok/s  (${tokens} tokens)`);
      } finally {
        await run.close();
      }
    }
  }

  console.log(`\n# median tok/s (aggregate over the streams), load avg ${load0.toFixed(2)} -> ${os.loadavg()[0]!.toFixed(2)}`);
  const summary: Record<string, { median: number; runs: number[] }> = {};
  for (const [name, runs] of results) {
    const sorted = [...runs].sort((a, b) => a - b);
    const median = sorted.length === 0 ? NaN : sorted[Math.floor(sorted.length / 2)]!;
    summary[name.replace(/\s+/g, " ")] = { median: +median.toFixed(1), runs: runs.map((r) => +r.toFixed(1)) };
    console.log(`${name.padEnd(22)} ${median.toFixed(1).padStart(8)}   [${runs.map((r) => r.toFixed(1)).join(", ")}]`);
  }
  console.log(`# ${commandLine}`);
  if (args.json) {
    writeFileSync(args.json, JSON.stringify({ command: commandLine, model: modelPath, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, tokens: TOKENS, yieldUs, loadAvg: [load0, os.loadavg()[0]], results: summary }, null, 2));
  }
  await nlc?.llama.dispose();
  for (const h of hogs) h.kill("SIGKILL");
}

main().catch((err: unknown) => {
  console.error(`engine-loop: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exit(1);
});
