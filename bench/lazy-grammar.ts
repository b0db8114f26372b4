// Lazy grammars (`tool_choice: auto`): does waiting for a call's trigger slow text answers?
// In one FFI engine, rounds alternate between `--streams` plain text sequences and the same with
// the `auto` call grammar waiting on the generic trigger (`^\s*\{`, anchored) or on Hermes'
// `<tool_call>` (searched through the whole text at each token: the costlier one). The model
// writes text that never starts a call, so the grammar never applies; sampling stops at the
// model's end of text or `--tokens` (ignore_eos turns a lazy grammar off). Medians over rounds.
//
//   node --import tsx bench/lazy-grammar.ts [--models demo] [--streams 4] [--tokens 256] [--rounds 7] [--threads 2]
import { parseArgs } from "node:util";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, GenerationParams } from "../src/engine/types.js";
import { toolPlan } from "../src/server/tool-calls.js";
import { benchModel, commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "demo" },
    streams: { type: "string", default: "4" },
    tokens: { type: "string", default: "256" },
    rounds: { type: "string", default: "7" },
    threads: { type: "string", default: "2" },
  },
});
const STREAMS = Number(values.streams);
const TOKENS = Number(values.tokens);
const ROUNDS = Number(values.rounds);
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";
const TOOLS = [{ type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

async function stream(engine: Engine, prompt: number[], params: GenerationParams): Promise<{ tokens: number; ms: number }> {
  let n = 0;
  const s = performance.now();
  await engine.generate({ promptTokens: prompt, params, maxTokens: TOKENS, onToken: () => { n++; return true; } });
  return { tokens: n, ms: performance.now() - s };
}

async function main(): Promise<void> {
  console.log(`# ${commandLine()}`);
  console.log(`# ${machine()}`);
  const plan = (await toolPlan({ tools: TOOLS, tool_choice: "auto" }))!;
  const kinds: Array<[string, Partial<GenerationParams>]> = [
    ["plain", {}],
    ["lazy, generic trigger", { grammar: plan.grammar!, grammarTriggers: plan.triggers! }],
    ["lazy, <tool_call> trigger", { grammar: plan.nativeGrammars!.hermes, grammarTriggers: plan.nativeTriggers!.hermes }],
  ];
  for (const name of values.models!.split(",")) {
    const model = await benchModel(name);
    const engine = await loadFfiEngine({ modelPath: model.file, contextSize: 2048, parallel: STREAMS, threads: Number(values.threads), embedding: false });
    const prompt = engine.tokenize(PROMPT, true);
    const tps = new Map<string, number[]>(kinds.map(([k]) => [k, []]));
    const lengths = new Map<string, number[]>(kinds.map(([k]) => [k, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [kind, extra] of kinds) {
        const params = (i: number): GenerationParams => ({ temperature: 1, topP: 1, seed: r * 100 + i, maxTokens: TOKENS, minTokens: 0, ignoreEos: false, stop: [], topLogprobs: null, cachePrompt: false, ...extra });
        const s = performance.now();
        const runs = await Promise.all(Array.from({ length: STREAMS }, (_, i) => stream(engine, prompt, params(i))));
        const total = runs.reduce((a, x) => a + x.tokens, 0);
        tps.get(kind)!.push((total * 1000) / (performance.now() - s));
        lengths.get(kind)!.push(total / STREAMS);
      }
    }
    await engine.close();
    console.log(`\n## ${name}, ${STREAMS} streams, up to ${TOKENS} tokens, median of ${ROUNDS} rounds (same seeds per kind)`);
    const base = median(tps.get("plain")!);
    for (const [kind] of kinds) {
      const t = median(tps.get(kind)!);
      console.log(`${kind.padEnd(28)} ${t.toFixed(1)} tok/s total (x${(t / base).toFixed(2)}), ${median(lengths.get(kind)!).toFixed(0)} tokens a stream`);
    }
  }
}

await main();
