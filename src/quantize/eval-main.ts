// Child-process entry of `moltbot quantize --eval`: loads the source and the quantized model
// through Moltbot's own engine (ffi-engine.ts, as a worker serves them) and measures both on this
// machine. Usage:
//   eval-main --source FILE --output FILE [--threads N] [--tokens N]
// Prints exactly one JSON line (EvalReport) on stdout; progress goes to stderr.
//
// Speed: prompt processing (a 256-token prompt, best of 5), one stream and 8 streams generating
// greedily (EOS ignored, no drafting). Accuracy: windows of held-out Brown Corpus text (every
// tenth file, never trained on by the demo model), each scored by both models at every position:
// perplexity of each, the mean KL divergence KL(P_source || P_output) of the next-token
// distributions, and how often both rank the same token first.

import { stat } from "node:fs/promises";
import { parseArgs } from "node:util";
import { loadBrownCorpus } from "../demo/brown.js";
import { loadFfiEngine, type FfiEngineHandle } from "../engine/ffi-engine.js";
import type { GenerationParams } from "../engine/types.js";
import type { EvalReport, ModelSpeed } from "./evaluate.js";

const WINDOW = 512;
const PP_TOKENS = 256;
const GEN_TOKENS = 64;
const STREAMS = 8;

const GREEDY: GenerationParams = {
  maxTokens: null,
  temperature: 0,
  topP: 1,
  seed: 1,
  minTokens: 0,
  ignoreEos: true,
  stop: [],
  topLogprobs: null,
  cachePrompt: false,
};

const log = (msg: string) => process.stderr.write(`[quantize-eval] ${msg}\n`);

async function load(modelPath: string, threads: number, parallel: number, contextSize: number): Promise<FfiEngineHandle> {
  return loadFfiEngine({ modelPath, contextSize, parallel, threads, embedding: false, speculative: false, kvCacheTokens: contextSize * parallel });
}

/** Wall seconds of one greedy generation, from its first token to its last. */
function generate(engine: FfiEngineHandle, prompt: number[], maxTokens: number): Promise<{ first: number; last: number; tokens: number }> {
  let first = 0;
  let last = 0;
  let tokens = 0;
  return engine
    .generate({
      promptTokens: prompt,
      params: GREEDY,
      maxTokens,
      onToken: () => {
        last = performance.now();
        if (tokens++ === 0) first = last;
        return true;
      },
    })
    .then(() => ({ first, last, tokens }));
}

async function measureSpeed(modelPath: string, text: number[], threads: number): Promise<ModelSpeed> {
  const bytes = (await stat(modelPath)).size;
  const engine = await load(modelPath, threads, STREAMS, WINDOW);
  try {
    // Best of several after a warm-up: the first steps of an engine also pick its thread count
    // (threads.ts), and a shared machine's noise only ever adds time.
    const pp = text.slice(0, PP_TOKENS);
    await generate(engine, pp, 1);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const r = await generate(engine, pp, 1);
      best = Math.min(best, r.first - t0);
    }
    // One stream: tokens after the first over the time between first and last, best of two.
    await generate(engine, text.slice(0, 8), 8);
    const rate = (r: { first: number; last: number; tokens: number }) => ((r.tokens - 1) * 1000) / (r.last - r.first);
    const tps1 = Math.max(rate(await generate(engine, text.slice(0, 16), GEN_TOKENS)), rate(await generate(engine, text.slice(16, 32), GEN_TOKENS)));
    // Eight streams started together: every token after each stream's first, over the span from
    // the first stream's first token to the last stream's last.
    const runs = await Promise.all(Array.from({ length: STREAMS }, (_, s) => generate(engine, text.slice(s * 16, s * 16 + 16), GEN_TOKENS)));
    const end = Math.max(...runs.map((r) => r.last));
    const after = runs.reduce((n, r) => n + r.tokens - 1, 0);
    return {
      bytes,
      promptTokensPerSecond: (PP_TOKENS * 1000) / best,
      tokensPerSecond1: tps1,
      tokensPerSecond8: (after * 1000) / (end - Math.min(...runs.map((r) => r.first))),
    };
  } finally {
    await engine.close();
  }
}

function logSoftmax(row: Float32Array, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - lse;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

async function measureAccuracy(sourcePath: string, outputPath: string, windows: number[][], threads: number): Promise<EvalReport["accuracy"]> {
  const src = await load(sourcePath, threads, 1, WINDOW);
  const out = await load(outputPath, threads, 1, WINDOW);
  try {
    const V = src.info.vocabSize;
    if (out.info.vocabSize !== V) throw new Error(`the models' vocabularies differ (${V} and ${out.info.vocabSize} tokens)`);
    let nllSrc = 0;
    let nllOut = 0;
    let kl = 0;
    let klMax = 0;
    let agree = 0;
    let n = 0;
    for (const [w, tokens] of windows.entries()) {
      const srcLog: Float64Array[] = [];
      const srcTop: number[] = [];
      await src.evaluateLogits(tokens, (i, row) => {
        const lp = new Float64Array(V);
        logSoftmax(row, lp);
        srcLog[i] = lp;
        srcTop[i] = argmax(row);
      });
      const lq = new Float64Array(V);
      await out.evaluateLogits(tokens, (i, row) => {
        if (i + 1 >= tokens.length) return;
        logSoftmax(row, lq);
        const lp = srcLog[i]!;
        let d = 0;
        for (let t = 0; t < V; t++) d += Math.exp(lp[t]!) * (lp[t]! - lq[t]!);
        kl += d;
        klMax = Math.max(klMax, d);
        const next = tokens[i + 1]!;
        nllSrc -= lp[next]!;
        nllOut -= lq[next]!;
        if (argmax(row) === srcTop[i]) agree++;
        n++;
      });
      log(`accuracy: window ${w + 1}/${windows.length} scored`);
    }
    return {
      tokens: n,
      perplexitySource: Math.exp(nllSrc / n),
      perplexityOutput: Math.exp(nllOut / n),
      meanKl: kl / n,
      maxKl: klMax,
      top1Agreement: agree / n,
    };
  } finally {
    await src.close();
    await out.close();
  }
}

/** `count` windows of held-out text, each from another file (spread over the genres), <s> first. */
async function heldOutWindows(engine: FfiEngineHandle, count: number): Promise<{ windows: number[][]; text: number[] }> {
  const corpus = await loadBrownCorpus();
  const windows: number[][] = [];
  // Evenly spaced through the files (the corpus is ordered by genre).
  const files = Array.from({ length: Math.min(count, corpus.heldOut.length) }, (_, i) => corpus.heldOut[Math.floor(((i + 0.5) * corpus.heldOut.length) / Math.min(count, corpus.heldOut.length))]!);
  for (const file of files) {
    const tokens = engine.tokenize(file.sentences.join(" "), true);
    windows.push(tokens.slice(0, WINDOW));
  }
  return { windows, text: windows.flat() };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { source: { type: "string" }, output: { type: "string" }, threads: { type: "string" }, tokens: { type: "string" } } });
  if (values.source === undefined || values.output === undefined) throw new Error("--source and --output are required");
  const threads = Number(values.threads ?? 2);
  const windowCount = Math.max(1, Math.round(Number(values.tokens ?? 4096) / WINDOW));
  const t0 = performance.now();
  const probe = await load(values.source, 1, 1, WINDOW);
  const { windows, text } = await heldOutWindows(probe, windowCount);
  await probe.close();
  log(`speed: ${values.source}`);
  const source = await measureSpeed(values.source, text, threads);
  log(`speed: ${values.output}`);
  const output = await measureSpeed(values.output, text, threads);
  log(`accuracy: ${windows.length} windows of ${WINDOW} held-out tokens`);
  const accuracy = await measureAccuracy(values.source, values.output, windows, threads);
  const report: EvalReport = { threads, source, output, accuracy, seconds: (performance.now() - t0) / 1000 };
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().then(
  () => process.exit(0), // llama.cpp's threads must not keep the child alive
  (err: unknown) => {
    process.stderr.write(`eval-main: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
