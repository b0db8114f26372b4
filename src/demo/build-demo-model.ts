// Compiles the Brown Corpus into a bigram language model stored as a llama GGUF whose forward
// pass computes exactly the smoothed log P(next | prev):
//   token_embd = identity (d = vocab size), so the hidden state is one-hot at the previous token;
//   one block with zero attention/FFN output weights, so the residual passes through untouched;
//   output_norm turns the one-hot into sqrt(d) at that position (eps is tiny), and
//   output.weight[next][prev] = (log P(next|prev) + shift[prev]) / sqrt(d).
// The per-context shift centres each context's log-probs around 0 (softmax ignores it), which
// halves the rounding error of F16 and Q8_0. Counting uses llama.cpp's own tokenizer on a vocab-only
// GGUF first, so the counts and serving see identical tokens.
// Loads llama.cpp: run it in a child process (build-demo-main.ts), never in the server.

import { rm } from "node:fs/promises";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import type { Llama, LlamaModel, Token } from "node-llama-cpp";
import { MoltbotError } from "../errors.js";
import { llamaMetadata, writeLlamaModel } from "../gguf/llama-model.js";
import type { LlamaHParams } from "../gguf/llama-model.js";
import { TokenType } from "../gguf/spm-vocab.js";
import type { SpmVocab } from "../gguf/spm-vocab.js";
import { writeGguf } from "../gguf/writer.js";
import type { TensorTypeName } from "../gguf/writer.js";
import { BigramCounts, kneserNeyLogProbs } from "./bigram.js";
import { loadBrownCorpus } from "./brown.js";
import type { BrownFile } from "./brown.js";
import { DEMO_DEFAULTS } from "./demo-spec.js";
import { chooseDemoVocab } from "./vocab.js";

export interface DemoBuildOptions {
  outPath: string;
  vocabSize?: number;
  tensorType?: TensorTypeName;
  /** Held-out files to score through the engine after building, spread over the genres: 0 skips, >= 50 = all. */
  evalFiles?: number;
  threads?: number;
  log?: (msg: string) => void;
}

export interface HeldOutPerplexity {
  tokens: number;
  /** exp(mean negative log-likelihood per token). */
  perplexity: number;
  /** The same likelihood spread over whitespace-separated words: comparable across vocabularies. */
  wordPerplexity: number;
  bitsPerChar: number;
  files: number;
  seconds: number;
}

export interface DemoBuildStats {
  path: string;
  vocabSize: number;
  piecesUsed: number;
  tensorType: TensorTypeName;
  bytes: number;
  parameters: number;
  trainTokens: number;
  discount: number;
  /** Largest |engine logit - intended log-prob - per-context constant| over the checked contexts. */
  logitMaxError: number;
  buildSeconds: number;
  heldOut?: HeldOutPerplexity;
}

const LOG_EPS = 1e-10;

export function demoHParams(vocabSize: number): LlamaHParams {
  return {
    vocabSize,
    embeddingLength: vocabSize,
    blockCount: 1,
    // The block only has to exist: one 32-wide head and a 32-wide FFN cost next to nothing.
    headCount: 1,
    headCountKv: 1,
    keyLength: 32,
    valueLength: 32,
    feedForwardLength: 32,
    contextLength: DEMO_DEFAULTS.contextLength,
    rmsEpsilon: LOG_EPS,
  };
}

let llamaPromise: Promise<Llama> | undefined;
function llama(): Promise<Llama> {
  return (llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error }));
}

export async function buildDemoModel(opts: DemoBuildOptions): Promise<DemoBuildStats> {
  const log = opts.log ?? (() => undefined);
  const V = opts.vocabSize ?? DEMO_DEFAULTS.vocabSize;
  const tensorType = opts.tensorType ?? DEMO_DEFAULTS.tensorType;
  const t0 = performance.now();

  const corpus = await loadBrownCorpus();
  const vocab = chooseDemoVocab(corpus.train.flatMap((f) => f.sentences), V);
  const hparams = demoHParams(V);
  log(`vocabulary: ${vocab.usedPieces} pieces in ${V} tokens`);

  // Chicken and egg: tokenize with the real llama.cpp tokenizer of this very vocabulary.
  const vocabPath = `${opts.outPath}.vocab-${process.pid}.gguf`;
  let counts: BigramCounts;
  try {
    await writeGguf(vocabPath, { metadata: llamaMetadata(hparams, vocab, "moltbot-demo-vocab", tensorType), tensors: [] });
    const vocabModel = await (await llama()).loadModel({ modelPath: vocabPath, vocabOnly: true });
    try {
      counts = countBigrams(vocabModel, corpus.train, vocab);
    } finally {
      await vocabModel.dispose();
    }
  } finally {
    await rm(vocabPath, { force: true });
  }
  log(`counted ${counts.total} training bigrams`);

  const support = (t: number): boolean => vocab.types[t] === TokenType.normal || vocab.types[t] === TokenType.byte || t === vocab.eosId;
  const { logProbs, discount } = kneserNeyLogProbs(counts, { support });
  const shift = centringShifts(logProbs, V, support);

  const written = await writeLlamaModel(opts.outPath, {
    hparams,
    vocab,
    name: "moltbot-demo-brown-bigram",
    tensorType,
    values: (spec) => {
      const n = spec.dims.reduce((a, b) => a * b, 1);
      if (spec.isNorm) return new Float32Array(n).fill(1);
      if (spec.name === "token_embd.weight") return () => oneHotRows(V);
      if (spec.name === "output.weight") return () => outputRows(logProbs, shift, V);
      return () => zeroChunks(n);
    },
  });

  const model = await (await llama()).loadModel({ modelPath: opts.outPath });
  try {
    const logitMaxError = await checkLogits(model, logProbs, V, support);
    const buildSeconds = (performance.now() - t0) / 1000;
    log(`built ${opts.outPath} in ${buildSeconds.toFixed(1)} s; logits match log-probs within ${logitMaxError.toExponential(2)}`);
    const stats: DemoBuildStats = {
      path: opts.outPath,
      vocabSize: V,
      piecesUsed: vocab.usedPieces,
      tensorType,
      bytes: written.bytes,
      parameters: written.parameters,
      trainTokens: counts.total,
      discount,
      logitMaxError,
      buildSeconds,
    };
    const evalFiles = opts.evalFiles ?? 0;
    if (evalFiles > 0) stats.heldOut = await heldOutPerplexity(model, spreadSample(corpus.heldOut, evalFiles), { threads: opts.threads ?? 1 });
    return stats;
  } finally {
    await model.dispose();
  }
}

function countBigrams(model: LlamaModel, files: BrownFile[], vocab: SpmVocab): BigramCounts {
  const counts = new BigramCounts(vocab.tokens.length);
  for (const file of files) {
    let prev = -1;
    for (const sentence of file.sentences) {
      const tokens = model.tokenize(sentence) as number[];
      if (tokens.length === 0) continue;
      // Every sentence start is also seen after <s>: prompts begin there, and 450 file starts
      // alone would leave P(first word | <s>) poorly estimated.
      counts.add(vocab.bosId, tokens[0]!);
      if (prev >= 0) counts.add(prev, tokens[0]!);
      for (let i = 1; i < tokens.length; i++) counts.add(tokens[i - 1]!, tokens[i]!);
      prev = tokens[tokens.length - 1]!;
    }
    if (prev >= 0) counts.add(prev, vocab.eosId);
  }
  return counts;
}

/** Per-context constant moving the supported log-probs' range to be centred on 0. */
function centringShifts(logProbs: Float32Array, V: number, support: (t: number) => boolean): Float32Array {
  const shift = new Float32Array(V);
  for (let p = 0; p < V; p++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let n = 0; n < V; n++) {
      if (!support(n)) continue;
      const v = logProbs[p * V + n]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    shift[p] = -(lo + hi) / 2;
  }
  return shift;
}

function* oneHotRows(V: number): Generator<Float32Array> {
  const row = new Float32Array(V);
  for (let t = 0; t < V; t++) {
    row.fill(0);
    row[t] = 1;
    yield row;
  }
}

/** Row `next` of output.weight runs over every previous token (ggml ne[0] = d = prev). */
function* outputRows(logProbs: Float32Array, shift: Float32Array, V: number): Generator<Float32Array> {
  // rms_norm of a one-hot vector is sqrt(V) at the hot position (eps is negligible).
  const scale = Math.sqrt(1 / V + LOG_EPS);
  const row = new Float32Array(V);
  for (let next = 0; next < V; next++) {
    for (let prev = 0; prev < V; prev++) row[prev] = (logProbs[prev * V + next]! + shift[prev]!) * scale;
    yield row;
  }
}

function* zeroChunks(n: number): Generator<Float32Array> {
  const size = 1 << 16;
  const zero = new Float32Array(size);
  for (let done = 0; done < n; done += size) yield n - done >= size ? zero : zero.subarray(0, n - done);
}

/** Evaluates a few contexts and compares the engine's full logit vectors with the matrix. */
async function checkLogits(model: LlamaModel, logProbs: Float32Array, V: number, support: (t: number) => boolean): Promise<number> {
  const context = await model.createContext({ contextSize: 64, threads: 1 });
  try {
    const probe = [model.tokens.bos!, ...model.tokenize("The United States of America, he said.")];
    const out = await context.getSequence().controlledEvaluate(probe.map((t) => [t, { generateNext: { logits: true } }]));
    let worst = 0;
    for (let i = 0; i < probe.length; i++) {
      const logits = out[i]?.next.logits;
      if (!logits) throw new MoltbotError("engine_error", "the engine returned no logits for the check");
      const prev = probe[i]!;
      const diffs: number[] = [];
      for (let n = 0; n < V; n++) if (support(n)) diffs.push(logits.get(n as Token)! - logProbs[prev * V + n]!);
      const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
      for (const d of diffs) worst = Math.max(worst, Math.abs(d - mean));
    }
    return worst;
  } finally {
    await context.dispose();
  }
}

/** `n` files evenly spaced through `files` (the corpus is ordered by genre). */
export function spreadSample<T>(files: readonly T[], n: number): T[] {
  if (n >= files.length) return [...files];
  return Array.from({ length: n }, (_, i) => files[Math.floor(((i + 0.5) * files.length) / n)]!);
}

/**
 * Scores held-out files through the engine: each file is <s> + its tokens, and the log-prob
 * of every next token comes from llama.cpp's logits (logit - max - log sum exp(logit - max)).
 */
export async function heldOutPerplexity(
  model: LlamaModel,
  files: BrownFile[],
  opts: { threads: number },
): Promise<HeldOutPerplexity> {
  const t0 = performance.now();
  const window = 2048;
  const context = await model.createContext({ contextSize: window, batchSize: 512, threads: opts.threads });
  let nll = 0;
  let tokens = 0;
  let words = 0;
  let chars = 0;
  let fileCount = 0;
  try {
    const sequence = context.getSequence();
    for (const file of files) {
      const ids: number[] = [model.tokens.bos!];
      for (const s of file.sentences) ids.push(...(model.tokenize(s) as number[]));
      const text = file.sentences.join(" ");
      words += text.split(" ").length;
      chars += text.length;
      fileCount++;
      // Windows overlap by one token: a bigram needs only the previous token as context.
      for (let start = 0; start + 1 < ids.length; start += window - 1) {
        const chunk = ids.slice(start, start + window) as Token[];
        await sequence.clearHistory();
        const items = chunk.map((t, i) =>
          i + 1 < chunk.length
            ? // includeTop, not includeMax: node-llama-cpp 3.22.1 drops the max entry with includeMax.
              ([t, { generateNext: { logits: { filter: { tokens: [chunk[i + 1]!], includeTop: 1 } }, totalLogitWeight: true } }] as const)
            : t,
        );
        const out = await sequence.controlledEvaluate(items as Parameters<typeof sequence.controlledEvaluate>[0]);
        for (let i = 0; i + 1 < chunk.length; i++) {
          const next = out[i]?.next;
          const logit = next?.logits?.get(chunk[i + 1]!);
          const total = next?.totalLogitWeight;
          if (next?.logits === undefined || logit === undefined || total === undefined) {
            throw new MoltbotError("engine_error", "the engine returned no logits while scoring held-out text");
          }
          let max = -Infinity;
          for (const v of next.logits.values()) max = Math.max(max, v);
          nll -= logit - max - Math.log(total);
          tokens++;
        }
      }
    }
  } finally {
    await context.dispose();
  }
  return {
    tokens,
    perplexity: Math.exp(nll / tokens),
    wordPerplexity: Math.exp(nll / words),
    bitsPerChar: nll / Math.LN2 / chars,
    files: fileCount,
    seconds: (performance.now() - t0) / 1000,
  };
}
