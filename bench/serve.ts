// Serving benchmark: start-up time, and single-stream tokens/s and time to first token through
// Moltbot's HTTP API, against node-llama-cpp driving the same model in-process and llama.cpp's
// own llama-server on the same GGUF and thread count. Runs are interleaved round by round so
// machine noise hits every target alike.
//
//   node --import tsx bench/serve.ts [--models demo,m100] [--threads 1,2] [--rounds 3] [--requests 4] [--tokens 64]
//        [--startup-runs 5] [--llama-server PATH] [--startup-only] [--baseline OTHER/bin/moltbot]
//
// --baseline times another build's `moltbot deploy` start-up too, run for run alternating with
// this one (a before/after on a shared machine); --startup-only stops after the start-up figures.
//
// llama-server comes from ../shared/peer/build-llama-server.sh (skipped when not built).
import { existsSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { getLlama, LlamaCompletion, LlamaLogLevel } from "node-llama-cpp";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import { benchModel, commandLine, freePort, machine, median, startServed, timedStream, TokenClock, type StreamTiming } from "./lib.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "demo,m100" },
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "3" },
    requests: { type: "string", default: "4" },
    tokens: { type: "string", default: "64" },
    "startup-runs": { type: "string", default: "5" },
    // A llama-server binary other than the peer build's (e.g. one built without AMX where the
    // native build's AMX kernels fault on this VM).
    "llama-server": { type: "string" },
    "startup-only": { type: "boolean", default: false },
    baseline: { type: "string" },
  },
});
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const TOKENS = Number(values.tokens);
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";
const ROOT = path.resolve(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "moltbot");

function peerBin(name: string): string | undefined {
  const base = path.join(os.homedir(), ".cache", "moltbot-peer");
  if (!existsSync(base)) return undefined;
  for (const v of readdirSync(base)) {
    const p = path.join(base, v, "bin", name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

const modelFile = async (name: string) => (await benchModel(name)).file;

// Every request gets a prompt of its own: llama-server would otherwise reuse the previous
// request's KV cache (cache_prompt) and its TTFT would measure one decode step, not a prompt.
let requestNo = 0;
const nextPrompt = () => `${++requestNo}. ${PROMPT}`;

interface Target {
  name: string;
  run(): Promise<StreamTiming>;
  close(): Promise<void>;
}

async function moltbotTarget(file: string, threads: number): Promise<Target> {
  const port = freePort();
  const modelPath = path.basename(file) === "demo.gguf" ? path.dirname(file) : file;
  const s = await startServed(process.execPath, [BIN, "deploy", "--model-path", modelPath, "--port", String(port), "--threads", String(threads), "--log-level", "WARNING"], port, "/readyz");
  const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  const model = models.data[0]!.id;
  return {
    name: "moltbot (HTTP)",
    run: () => timedStream(`${s.url}/v1/completions`, { model, prompt: nextPrompt(), max_tokens: TOKENS, temperature: 0, ignore_eos: true }),
    close: s.stop,
  };
}

async function llamaServerTarget(bin: string, file: string, threads: number): Promise<Target> {
  const port = freePort();
  const s = await startServed(bin, ["-m", file, "--port", String(port), "--host", "127.0.0.1", "-t", String(threads), "-tb", String(threads), "-c", "8192", "-np", "4", "--no-webui", "-lv", "0"], port, "/health");
  return {
    name: "llama-server (HTTP)",
    run: () => timedStream(`${s.url}/v1/completions`, { prompt: nextPrompt(), max_tokens: TOKENS, temperature: 0, ignore_eos: true, cache_prompt: false }),
    close: s.stop,
  };
}

async function inProcessTarget(file: string, threads: number): Promise<Target> {
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error, maxThreads: 0, progressLogs: false });
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ contextSize: 2048, threads, sequences: 1 });
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  return {
    name: "node-llama-cpp (in-process)",
    run: async () => {
      await sequence.clearHistory();
      const clock = new TokenClock();
      await completion.generateCompletion(nextPrompt(), { maxTokens: TOKENS, temperature: 0, onToken: () => clock.tick() });
      return clock.result();
    },
    close: async () => {
      await context.dispose();
      await model.dispose();
    },
  };
}

// Moltbot's own engine without the server around it: the difference to "moltbot (HTTP)" is
// what HTTP, IPC and the worker process cost.
async function engineTarget(file: string, threads: number): Promise<Target> {
  const engine = await loadFfiEngine({ modelPath: file, contextSize: 2048, parallel: 4, threads, embedding: false });
  const params = { temperature: 0, topP: 1, seed: undefined, maxTokens: TOKENS, minTokens: TOKENS, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };
  return {
    name: "moltbot engine (in-process)",
    run: async () => {
      const clock = new TokenClock();
      await engine.generate({ promptTokens: engine.tokenize(nextPrompt(), true), params, maxTokens: TOKENS, onToken: (t) => (t.text ? clock.tick() : undefined, true) });
      return clock.result();
    },
    close: () => engine.close(),
  };
}

async function startupOnce(bin: string, demoDir: string): Promise<number> {
  const port = freePort();
  const s = await startServed(process.execPath, [bin, "deploy", "--model-path", demoDir, "--port", String(port), "--log-level", "WARNING"], port, "/readyz");
  await s.stop();
  return s.readyMs;
}

/** Start-up times of this build and, alternating run for run, of the baseline's. */
async function startup(demoDir: string, runs: number, baseline: string | undefined): Promise<{ own: number[]; baseline: number[] }> {
  const own: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (baseline !== undefined) base.push(await startupOnce(baseline, demoDir));
    own.push(await startupOnce(BIN, demoDir));
  }
  return { own, baseline: base };
}

const fmt = (n: number, d = 1) => n.toFixed(d);

async function main(): Promise<void> {
  console.log(`# bench/serve.ts — ${new Date().toISOString()}`);
  console.log(`machine: ${machine()}`);
  console.log(`command: ${commandLine()}`);
  const demo = await modelFile("demo");
  const runs = await startup(path.dirname(demo), Number(values["startup-runs"]), values.baseline);
  const report = (what: string, st: number[]) =>
    console.log(`\nstart-up, ${what} deploy (demo model built) -> /readyz 200: median ${fmt(median(st), 0)} ms, min ${fmt(Math.min(...st), 0)} ms, max ${fmt(Math.max(...st), 0)} ms (${st.length} runs)`);
  if (values.baseline !== undefined) report(values.baseline, runs.baseline);
  report("moltbot", runs.own);
  if (values["startup-only"]) return;

  const peer = values["llama-server"] ?? peerBin("llama-server");
  if (!peer) console.log("llama-server not built (../shared/peer/build-llama-server.sh): skipped");
  for (const modelName of values.models!.split(",")) {
    const file = await modelFile(modelName);
    for (const threads of values.threads!.split(",").map(Number)) {
      const targets: Target[] = [await moltbotTarget(file, threads), await engineTarget(file, threads), await inProcessTarget(file, threads)];
      if (peer) targets.push(await llamaServerTarget(peer, file, threads));
      const results = new Map<string, StreamTiming[]>(targets.map((t) => [t.name, []]));
      for (const t of targets) await t.run(); // warm-up
      for (let r = 0; r < ROUNDS; r++) {
        for (const t of targets) for (let i = 0; i < REQUESTS; i++) results.get(t.name)!.push(await t.run());
      }
      for (const t of targets) await t.close();
      console.log(`\n## ${modelName} (${path.basename(file)}), ${threads} thread(s), ${TOKENS}-token greedy completions, ${ROUNDS}x${REQUESTS} runs each, medians`);
      console.log(`| target | tokens/s (end to end) | decode tokens/s | TTFT ms |`);
      console.log(`|---|---|---|---|`);
      const rows = [...results].map(([name, rs]) => ({ name, e2e: median(rs.map((x) => (x.tokens * 1000) / x.totalMs)), dec: median(rs.map((x) => x.decodeTps)), ttft: median(rs.map((x) => x.ttftMs)) }));
      for (const row of rows) console.log(`| ${row.name} | ${fmt(row.e2e)} | ${fmt(row.dec)} | ${fmt(row.ttft, 2)} |`);
      const mb = rows[0]!;
      const own = rows.find((x) => x.name.startsWith("moltbot engine"));
      if (own) console.log(`server overhead (HTTP + IPC + worker process) vs the same engine in-process: ${fmt(100 - (mb.e2e / own.e2e) * 100)}% tokens/s, TTFT +${fmt(mb.ttft - own.ttft, 2)} ms`);
      const ip = rows.find((x) => x.name.startsWith("node-llama-cpp"));
      const ls = rows.find((x) => x.name.startsWith("llama-server"));
      if (ip) console.log(`moltbot vs in-process node-llama-cpp: ${fmt((mb.e2e / ip.e2e) * 100 - 100)}% tokens/s, TTFT ${fmt(mb.ttft - ip.ttft, 2)} ms`);
      if (ls) console.log(`moltbot vs llama-server: ${fmt(mb.e2e / ls.e2e, 2)}x tokens/s, TTFT ${fmt(mb.ttft - ls.ttft, 2)} ms`);
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
