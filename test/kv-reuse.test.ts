// The engine's shared KV buffer on a real (tiny, random-weight) llama model: prompt prefixes
// reused across requests and across concurrent sequences, speculative decoding, and a KV
// buffer too small for everything at once. Whatever the engine does with cells, greedy output
// must be what a fresh engine with no cache and no drafting produces.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, EngineLoadOptions, GenerateResult, GenerationParams } from "../src/engine/types.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { completionLimit } from "../src/workers/generation.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "moltbot-kv-"));
/** Decisive logits: greedy outputs compared across batch and cell layouts must not hinge on near-ties. */
const modelPath = path.join(dir, "tiny-decisive.gguf");
/** The default tiny model: near-uniform logits, and greedy decoding falls into cycles (what drafting needs). */
const cyclingPath = path.join(dir, "tiny.gguf");
const CTX = 512;
const engines: Engine[] = [];

async function engine(opts: Partial<EngineLoadOptions> = {}): Promise<Engine> {
  const e = await loadFfiEngine({ modelPath, contextSize: CTX, parallel: 4, threads: 1, embedding: false, speculative: false, ...opts });
  engines.push(e);
  return e;
}

const greedy = (maxTokens: number, extra: Partial<GenerationParams> = {}): GenerationParams => ({
  temperature: 0, topP: 1, seed: undefined, maxTokens, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true, ...extra,
});

async function gen(e: Engine, prompt: number[], params: GenerationParams, opts: { signal?: AbortSignal; onToken?: (n: number) => void } = {}): Promise<{ ids: number[]; result: GenerateResult }> {
  const ids: number[] = [];
  const result = await e.generate({
    promptTokens: prompt,
    params,
    maxTokens: completionLimit(e.info.contextSize, prompt.length, params.maxTokens),
    ...(opts.signal ? { signal: opts.signal } : {}),
    onToken: (t) => {
      ids.push(t.id);
      opts.onToken?.(ids.length);
      return true;
    },
  });
  return { ids, result };
}

/** Greedy output of an engine that reuses no prefix and drafts nothing. */
const references = new Map<string, Engine>();
async function expected(prompt: number[], n: number, params: GenerationParams = greedy(n), file = modelPath): Promise<number[]> {
  let ref = references.get(file);
  if (!ref) references.set(file, (ref = await engine({ modelPath: file, speculative: false })));
  return (await gen(ref, prompt, { ...params, maxTokens: n, cachePrompt: false })).ids;
}

let words: string[];
const text = (from: number, n: number) => Array.from({ length: n }, (_, i) => words[(from + i) % words.length]).join(" ");

before(async () => {
  await writeRandomLlamaModel(modelPath, randomModelOptions("tiny", { weightStd: 1 }));
  await writeRandomLlamaModel(cyclingPath, randomModelOptions("tiny"));
  words = "the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three".split(" ");
});

after(async () => {
  for (const e of engines) await e.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("prompt prefix reuse", () => {
  test("a prompt sharing a prefix evaluates only its tail, with the same greedy output as without reuse", async () => {
    const e = await engine();
    const context = text(0, 150);
    const first = e.tokenize(`${context} alpha`, true);
    const second = e.tokenize(`${context} beta gamma`, true);
    const a = await gen(e, first, greedy(24));
    assert.equal(a.result.cachedTokens, 0, "nothing cached yet");
    const b = await gen(e, second, greedy(24));
    const shared = first.findIndex((t, i) => second[i] !== t);
    assert.ok(shared > 100, "the two prompts share a long prefix");
    assert.equal(b.result.cachedTokens, shared, "every shared token was reused");
    assert.deepEqual(a.ids, await expected(first, 24));
    assert.deepEqual(b.ids, await expected(second, 24));
    // The same prompt again reuses all but its last token.
    const again = await gen(e, second, greedy(24));
    assert.equal(again.result.cachedTokens, second.length - 1);
    assert.deepEqual(again.ids, b.ids);
  });

  test("cache_prompt false evaluates the whole prompt", async () => {
    const e = await engine();
    const p = e.tokenize(text(10, 60), true);
    await gen(e, p, greedy(4));
    const r = await gen(e, p, greedy(4, { cachePrompt: false }));
    assert.equal(r.result.cachedTokens, 0);
  });

  test("concurrent sequences share one prefix; aborting one mid-stream leaves the other's output unchanged", async () => {
    const e = await engine();
    const context = text(30, 120);
    const warm = e.tokenize(`${context} zero`, true);
    await gen(e, warm, greedy(2));
    const p1 = e.tokenize(`${context} one`, true);
    const p2 = e.tokenize(`${context} two`, true);
    const ac = new AbortController();
    const [r1, r2] = await Promise.all([
      gen(e, p1, greedy(60), { signal: ac.signal, onToken: (n) => n === 5 && ac.abort() }),
      gen(e, p2, greedy(60)),
    ]);
    assert.equal(r1.result.finishReason, "aborted");
    assert.ok(r1.result.cachedTokens > 100 && r2.result.cachedTokens > 100, "both reused the shared prefix");
    assert.equal(r2.result.finishReason, "length");
    assert.deepEqual(r2.ids, await expected(p2, 60));
    // The prefix survived the abort: a third prompt still finds it.
    const r3 = await gen(e, e.tokenize(`${context} three`, true), greedy(4));
    assert.ok(r3.result.cachedTokens > 100);
  });
});

describe("a KV buffer smaller than the work", () => {
  test("sequences that outgrow the buffer are preempted and resumed with unchanged output", async () => {
    // One context of cells for four sequences of up to 200 tokens each.
    const e = await engine({ kvCacheTokens: CTX });
    const prompts = [0, 40, 80, 120].map((o) => e.tokenize(text(o, 30), true));
    const results = await Promise.all(prompts.map((p) => gen(e, p, greedy(160))));
    for (const [i, r] of results.entries()) {
      assert.equal(r.result.finishReason, "length");
      assert.deepEqual(r.ids, await expected(prompts[i]!, 160), `sequence ${i}`);
    }
  });

  test("a prompt larger than the free room waits for a running sequence instead of evicting it", async () => {
    const e = await engine({ kvCacheTokens: CTX });
    const long = e.tokenize(text(200, 200), true);
    const other = e.tokenize(text(300, 220), true);
    const order: string[] = [];
    const [a, b] = await Promise.all([
      gen(e, long, greedy(80)).then((r) => (order.push("long"), r)),
      gen(e, other, greedy(40)).then((r) => (order.push("other"), r)),
    ]);
    assert.deepEqual(a.ids, await expected(long, 80));
    assert.deepEqual(b.ids, await expected(other, 40));
    assert.equal(a.result.finishReason, "length");
    assert.equal(b.result.finishReason, "length");
  });
});

describe("speculative decoding", () => {
  test("drafts from the context are accepted on a repeating continuation, with output identical to plain decoding", async () => {
    const e = await engine({ modelPath: cyclingPath, speculative: true });
    const prompt = e.tokenize("the cat sat on the mat and the cat sat on the mat", true);
    const r = await gen(e, prompt, greedy(200));
    assert.deepEqual(r.ids, await expected(prompt, 200, greedy(200), cyclingPath));
    assert.ok(r.result.draftTokens > 0, "drafts were proposed");
    assert.ok(r.result.acceptedDraftTokens > r.result.draftTokens / 2, `most drafts accepted (${r.result.acceptedDraftTokens}/${r.result.draftTokens})`);
  });

  test("seeded sampling draws the same tokens with and without drafting", async () => {
    const e = await engine({ modelPath: cyclingPath, speculative: true });
    const prompt = e.tokenize("a b c a b c a b c a b c", true);
    // A low temperature keeps the walk in its cycles (drafts get proposed) while every token still
    // comes from the seeded random draw.
    const params = greedy(120, { temperature: 0.02, seed: 42 });
    const r = await gen(e, prompt, params);
    assert.ok(r.result.draftTokens > 0, "drafts were proposed");
    assert.deepEqual(r.ids, await expected(prompt, 120, params, cyclingPath));
  });

  test("concurrent drafting sequences keep their own outputs", async () => {
    const e = await engine({ modelPath: cyclingPath, speculative: true });
    const prompts = ["one two three one two three", "red green blue red green", "x y z x y z x y"].map((s) => e.tokenize(s, true));
    const runs = await Promise.all(prompts.map((p) => gen(e, p, greedy(100))));
    for (const [i, r] of runs.entries()) assert.deepEqual(r.ids, await expected(prompts[i]!, 100, greedy(100), cyclingPath), `sequence ${i}`);
  });
});

describe("finished prompts saved to host memory", () => {
  test("interleaved conversations each get their own prefix back after the other's turn, with unchanged output", async () => {
    const e = await engine({ promptCacheBytes: 64 * 2 ** 20 });
    // Long enough to be saved (short prompts are not: evaluating them again costs about the same).
    const x = text(0, 150);
    const y = text(500, 150);
    const x1 = e.tokenize(`${x} alpha`, true);
    const y1 = e.tokenize(`${y} alpha`, true);
    const x2 = e.tokenize(`${x} beta gamma`, true);
    const y2 = e.tokenize(`${y} beta gamma`, true);
    assert.ok(x1.length >= 256 && y1.length >= 256, "long enough to be saved");
    const shared = (a: number[], b: number[]) => a.findIndex((t, i) => b[i] !== t);
    await gen(e, x1, greedy(16));
    // y1 shares nothing with x1 but the BOS token: x1's cells leave the KV buffer for host
    // memory at its admission.
    const ry1 = await gen(e, y1, greedy(16));
    assert.equal(ry1.result.cachedTokens, shared(x1, y1));
    assert.ok(shared(x1, y1) <= 1);
    const rx2 = await gen(e, x2, greedy(24));
    assert.equal(rx2.result.cachedTokens, shared(x1, x2), "x's prefix came back from host memory");
    const ry2 = await gen(e, y2, greedy(24));
    assert.equal(ry2.result.cachedTokens, shared(y1, y2), "y's too, after x's turn");
    assert.deepEqual(rx2.ids, await expected(x2, 24));
    assert.deepEqual(ry2.ids, await expected(y2, 24));
    // A next turn that continues x2 and its answer reuses all of it.
    const x3 = [...x2, ...rx2.ids, ...e.tokenize(" delta", false)];
    const rx3 = await gen(e, x3, greedy(8));
    assert.ok(rx3.result.cachedTokens >= x2.length, `the whole previous turn was reused (${rx3.result.cachedTokens} of ${x3.length})`);
    assert.deepEqual(rx3.ids, await expected(x3, 8));
  });
});
