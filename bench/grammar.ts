// Constrained decoding: does a grammar-constrained sequence slow the unconstrained ones beside
// it in the continuous batch, and what does a grammar cost per request? In one engine (the FFI
// engine in this process), rounds alternate between `--streams` unconstrained sequences and
// the same with one of them constrained by a JSON-schema grammar that cannot close within the
// tokens (so every sequence runs the same length); medians over the rounds, ratios reported.
// Per request: the schema's conversion (uncached, cached) and the grammar's compilation plus
// first token (a 1-token constrained generation against a 1-token plain one).
//
//   node --import tsx bench/grammar.ts [--models demo,m100] [--streams 4] [--tokens 64] [--rounds 5] [--threads 2] [--speculative on|off]
import { parseArgs } from "node:util";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, GenerationParams } from "../src/engine/types.js";
import { grammarForSchema } from "../src/server/structured-output.js";
import { benchModel, commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "demo,m100" },
    streams: { type: "string", default: "4" },
    tokens: { type: "string", default: "64" },
    rounds: { type: "string", default: "5" },
    threads: { type: "string", default: "2" },
    speculative: { type: "string", default: "on" },
  },
});
const STREAMS = Number(values.streams);
const TOKENS = Number(values.tokens);
const ROUNDS = Number(values.rounds);
const THREADS = Number(values.threads);
const SPECULATIVE = values.speculative !== "off";
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";

/** An object whose array needs more items than the tokens allow: the grammar never completes. */
const SCHEMA = {
  type: "object",
  properties: { id: { type: "integer" }, words: { type: "array", items: { type: "string", maxLength: 12 }, minItems: 1000 } },
  required: ["id", "words"],
};

const plain = (seed: number): GenerationParams => ({ temperature: 1, topP: 1, seed, maxTokens: TOKENS, minTokens: TOKENS, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: false });
const constrained = (seed: number, grammar: string): GenerationParams => ({ ...plain(seed), minTokens: 0, ignoreEos: false, grammar });

/** Tokens/s of one sequence, from its first token to its last. */
async function stream(engine: Engine, prompt: number[], params: GenerationParams): Promise<{ tps: number; tokens: number }> {
  let first = 0;
  let last = 0;
  let n = 0;
  await engine.generate({
    promptTokens: prompt,
    params,
    maxTokens: params.maxTokens!,
    onToken: () => {
      last = performance.now();
      if (n++ === 0) first = last;
      return true;
    },
  });
  return { tps: n > 1 ? ((n - 1) * 1000) / (last - first) : 0, tokens: n };
}

async function main(): Promise<void> {
  console.log(`# ${commandLine()}`);
  console.log(`# ${machine()}`);
  const t0 = performance.now();
  const grammar = await grammarForSchema(SCHEMA);
  const firstConvert = performance.now() - t0;
  const convertTimes: number[] = [];
  for (let i = 0; i < 50; i++) {
    const s = performance.now();
    await grammarForSchema({ ...SCHEMA, description: `uncached ${i}` });
    convertTimes.push(performance.now() - s);
  }
  const cachedTimes: number[] = [];
  for (let i = 0; i < 200; i++) {
    const s = performance.now();
    await grammarForSchema(SCHEMA);
    cachedTimes.push(performance.now() - s);
  }
  console.log(`schema -> GBNF: first ${firstConvert.toFixed(1)} ms (loads the converter), then ${median(convertTimes).toFixed(2)} ms uncached, ${(median(cachedTimes) * 1000).toFixed(0)} us cached (median)`);

  for (const name of values.models!.split(",")) {
    const model = await benchModel(name);
    const engine = await loadFfiEngine({ modelPath: model.file, contextSize: 512, parallel: STREAMS, threads: THREADS, embedding: false, speculative: SPECULATIVE });
    const prompt = engine.tokenize(PROMPT, true);
    const one = async (p: GenerationParams) => {
      const s = performance.now();
      await engine.generate({ promptTokens: prompt, params: { ...p, maxTokens: 1, minTokens: 0 }, maxTokens: 1, onToken: () => true });
      return performance.now() - s;
    };
    const first: { plain: number[]; constrained: number[] } = { plain: [], constrained: [] };
    for (let i = 0; i < 20; i++) {
      first.plain.push(await one({ ...plain(i), ignoreEos: false }));
      first.constrained.push(await one(constrained(i, grammar)));
    }
    const mixedPlain: number[] = [];
    const mixedConstrained: number[] = [];
    const allPlain: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const base = await Promise.all(Array.from({ length: STREAMS }, (_, i) => stream(engine, prompt, plain(r * 100 + i))));
      allPlain.push(base.reduce((s, x) => s + x.tps, 0) / STREAMS);
      const mixed = await Promise.all(Array.from({ length: STREAMS }, (_, i) => stream(engine, prompt, i === 0 ? constrained(r * 100 + i, grammar) : plain(r * 100 + i))));
      mixedConstrained.push(mixed[0]!.tps);
      mixedPlain.push(mixed.slice(1).reduce((s, x) => s + x.tps, 0) / (STREAMS - 1));
      if (mixed[0]!.tokens !== TOKENS) console.log(`warning: the constrained stream ended after ${mixed[0]!.tokens} tokens`);
    }
    await engine.close();
    const a = median(allPlain);
    const b = median(mixedPlain);
    const c = median(mixedConstrained);
    console.log(`\n## ${name} (vocabulary ${engine.info.vocabSize}), ${STREAMS} streams x ${TOKENS} tokens, ${THREADS} threads, drafting ${SPECULATIVE ? "on" : "off"}, median of ${ROUNDS} rounds`);
    console.log(`unconstrained stream, all ${STREAMS} unconstrained:        ${a.toFixed(1)} tok/s`);
    console.log(`unconstrained stream, beside 1 constrained:  ${b.toFixed(1)} tok/s (x${(b / a).toFixed(2)})`);
    console.log(`the constrained stream:                      ${c.toFixed(1)} tok/s (x${(c / a).toFixed(2)})`);
    console.log(`1-token request: plain ${median(first.plain).toFixed(2)} ms, constrained ${median(first.constrained).toFixed(2)} ms (grammar compile + first masked token: +${(median(first.constrained) - median(first.plain)).toFixed(2)} ms)`);
  }
}

await main();
