// The libllama/koffi engine on a tiny random-weight llama GGUF: the same engine underneath as
// node-llama-cpp, so greedy output must match it token for token; plus sampling, limits,
// continuous batching, cancellation, logprobs and embeddings.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { completeUtf8Length, continuesUtf8, loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, GeneratedToken, GenerationParams } from "../src/engine/types.js";
import { completionLimit } from "../src/workers/generation.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { MoltbotError } from "../src/errors.js";
import { StepThreadTuner } from "../src/engine/threads.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "moltbot-ffi-"));
const modelPath = path.join(dir, "tiny.gguf");
const PARALLEL = 2;
let engine: Engine;

const greedy = (maxTokens: number | null, extra: Partial<GenerationParams> = {}): GenerationParams => ({
  temperature: 0, topP: 1, seed: undefined, maxTokens, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true, ...extra,
});

/** A request as the worker builds it: the completion limit resolved against the context. */
const request = (e: Engine, prompt: number[], params: GenerationParams) => ({
  promptTokens: prompt, params, maxTokens: completionLimit(e.info.contextSize, prompt.length, params.maxTokens),
});

async function run(e: Engine, prompt: number[], params: GenerationParams, signal?: AbortSignal) {
  const tokens: GeneratedToken[] = [];
  const times: number[] = [];
  const result = await e.generate({
    ...request(e, prompt, params), ...(signal ? { signal } : {}),
    onToken: (t) => { tokens.push(t); times.push(performance.now()); return true; },
  });
  return { result, tokens, ids: tokens.map((t) => t.id), times };
}

before(async () => {
  await writeRandomLlamaModel(modelPath, randomModelOptions("tiny"));
  engine = await loadFfiEngine({ modelPath, contextSize: 256, parallel: PARALLEL, threads: 1, embedding: false });
});

after(async () => {
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("constrained text stays well-formed UTF-8: which byte pieces may follow", () => {
  const b = (...xs: number[]) => Uint8Array.from(xs);
  assert.ok(continuesUtf8(null, b(0xe2, 0x82)), "an incomplete sequence may wait for its end");
  assert.ok(!continuesUtf8(null, b(0xe2, 0x82), true), "but is not whole");
  assert.ok(continuesUtf8(b(0xe2, 0x82), b(0xac)), "€ completed");
  assert.ok(!continuesUtf8(null, b(0x80)), "a lone continuation byte");
  assert.ok(!continuesUtf8(null, b(0xc0)) && !continuesUtf8(null, b(0xf5)), "bytes never in UTF-8");
  assert.ok(!continuesUtf8(b(0xe0), b(0x81)), "overlong form");
  assert.ok(!continuesUtf8(b(0xed), b(0xa0)), "surrogate");
  assert.ok(!continuesUtf8(b(0xf4), b(0x90)), "past U+10FFFF");
  assert.ok(!continuesUtf8(b(0xe2), Buffer.from("a")), "ASCII inside a sequence");
  assert.ok(continuesUtf8(null, Buffer.from("plain €", "utf8"), true));
});

test("incomplete UTF-8 sequences are held back until complete", () => {
  const euro = Buffer.from("a€", "utf8"); // 61 e2 82 ac
  assert.equal(completeUtf8Length(euro), 4);
  assert.equal(completeUtf8Length(euro.subarray(0, 3)), 1);
  assert.equal(completeUtf8Length(euro.subarray(0, 2)), 1);
  const emoji = Buffer.from("😀", "utf8");
  assert.equal(completeUtf8Length(emoji.subarray(0, 3)), 0);
  assert.equal(completeUtf8Length(emoji), 4);
  assert.equal(completeUtf8Length(Buffer.from("plain")), 5);
});

describe("step thread tuner", () => {
  /** Run `steps` steps of `size` tokens through the tuner, timed by `cost(threads)`. */
  function drive(tuner: StepThreadTuner, size: number, steps: number, cost: (threads: number) => number): number[] {
    const chosen: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t = tuner.choose(size);
      tuner.record(size, t, cost(t));
      chosen.push(t);
    }
    return chosen;
  }
  const share = (xs: number[], v: number) => xs.filter((x) => x === v).length / xs.length;

  test("keeps all threads while they are faster, probing 1 thread rarely", () => {
    const tuner = new StepThreadTuner(2);
    const chosen = drive(tuner, 1, 1000, (t) => (t === 2 ? 0.8 : 1.4)).slice(10);
    assert.ok(share(chosen, 2) > 0.97, `2 threads chosen ${share(chosen, 2)}`);
    assert.ok(share(chosen, 1) > 0, "1 thread is re-tried now and then");
  });

  test("falls back to 1 thread when all threads get slower (a busy neighbour), and back again", () => {
    const tuner = new StepThreadTuner(2);
    let busy = false;
    const cost = (t: number) => (t === 2 ? (busy ? 2.4 : 0.8) : 1.4);
    drive(tuner, 8, 300, cost);
    busy = true;
    const during = drive(tuner, 8, 600, cost);
    assert.ok(share(during.slice(-400), 1) > 0.97, `1 thread chosen ${share(during.slice(-400), 1)} under contention`);
    busy = false;
    const after = drive(tuner, 8, 600, cost);
    // probes of 1 thread take 4 of every 160 steps (2.5%)
    assert.ok(share(after.slice(-400), 2) > 0.95, `2 threads chosen ${share(after.slice(-400), 2)} after it`);
  });

  test("occasional slow steps (the server preempting a compute thread) do not flip the choice", () => {
    const tuner = new StepThreadTuner(2);
    let i = 0;
    const chosen = drive(tuner, 1, 1000, (t) => (t === 2 ? (++i % 4 === 0 ? 8 : 0.8) : 1.4)).slice(20);
    assert.ok(share(chosen, 2) > 0.95, `2 threads chosen ${share(chosen, 2)}`);
  });

  test("step sizes are judged apart, and the warm-up step is not counted", () => {
    const tuner = new StepThreadTuner(4);
    // First step of each choice is very slow (page-in): it must not decide anything.
    let first = true;
    drive(tuner, 1, 400, (t) => (first && t === 4 ? ((first = false), 500) : t === 4 ? 2 : 1));
    drive(tuner, 256, 400, (t) => (t === 4 ? 10 : 30));
    const small = drive(tuner, 1, 200, (t) => (t === 4 ? 2 : 1));
    const large = drive(tuner, 300, 200, (t) => (t === 4 ? 10 : 30));
    assert.ok(share(small, 1) > 0.97 && share(large, 4) > 0.97);
    assert.equal(new StepThreadTuner(1).choose(512), 1);
  });
});

describe("ffi engine", () => {
  test("reports model info from the GGUF", () => {
    assert.equal(engine.info.architecture, "llama");
    assert.equal(engine.info.vocabSize, 512);
    assert.equal(engine.info.embeddingSize, 64);
    assert.equal(engine.info.contextSize, 256);
    assert.equal(engine.info.trainContextSize, 512);
    assert.ok(engine.info.parameterCount > 100_000);
  });

  test("tokenize/detokenize round-trip and the plain chat fallback", () => {
    const ids = engine.tokenize("the cat sat on the mat", true);
    assert.equal(ids[0], 1, "BOS first");
    assert.equal(engine.detokenize(ids).trim(), "the cat sat on the mat");
    assert.equal(engine.formatChat([{ role: "system", content: "be brief" }, { role: "user", content: "hi" }]), "System: be brief\nUser: hi\nAssistant:");
  });

  test("greedy generation is deterministic and equals node-llama-cpp's greedy output", async () => {
    const prompt = engine.tokenize("the old man said that", true);
    const a = await run(engine, prompt, greedy(24));
    const b = await run(engine, prompt, greedy(24));
    assert.deepEqual(a.ids, b.ids);
    assert.equal(a.ids.length, 24);

    const { getLlama } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
    const model = await llama.loadModel({ modelPath });
    const context = await model.createContext({ contextSize: 256, threads: 1 });
    const expected: number[] = [];
    try {
      for await (const t of context.getSequence().evaluate(prompt as never, { temperature: 0 })) {
        expected.push(t as number);
        if (expected.length === 24) break;
      }
    } finally {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    }
    assert.deepEqual(a.ids, expected);
  });

  test("a seed makes sampling reproducible", async () => {
    const prompt = engine.tokenize("once upon a time", true);
    const p = (seed: number) => greedy(32, { temperature: 1.0, topP: 0.95, seed });
    const a = await run(engine, prompt, p(42));
    const b = await run(engine, prompt, p(42));
    const c = await run(engine, prompt, p(43));
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });

  test("maxTokens ends with finishReason length and exactly that many tokens", async () => {
    const prompt = engine.tokenize("in the beginning", true);
    const r = await run(engine, prompt, greedy(7));
    const { finishReason, promptTokens, completionTokens } = r.result;
    assert.deepEqual({ finishReason, promptTokens, completionTokens }, { finishReason: "length", promptTokens: prompt.length, completionTokens: 7 });
    assert.equal(r.tokens.length, 7);
  });

  test("2 threads (persistent pool, per-step tuner) give the same greedy tokens as 1", async () => {
    const prompt = engine.tokenize("the old man said that", true);
    const one = await run(engine, prompt, greedy(40));
    for (const ffi of [{}, { threadpoolPoll: 0, adaptiveThreads: false }, { threadpoolPoll: false as const }]) {
      const two = await loadFfiEngine({ modelPath, contextSize: 256, parallel: PARALLEL, threads: 2, embedding: false }, ffi);
      try {
        const [a, b] = await Promise.all([run(two, prompt, greedy(40)), run(two, prompt, greedy(40))]);
        assert.deepEqual(a.ids, one.ids, `threads 2 ${JSON.stringify(ffi)}`);
        assert.deepEqual(b.ids, one.ids);
      } finally {
        await two.close();
      }
    }
  });

  test("two concurrent generations share decode steps and both finish", async () => {
    const [a, b] = await Promise.all([
      run(engine, engine.tokenize("the first story", true), greedy(40)),
      run(engine, engine.tokenize("a second one that is longer", true), greedy(40)),
    ]);
    assert.equal(a.result.finishReason, "length");
    assert.equal(b.result.finishReason, "length");
    assert.equal(a.tokens.length, 40);
    assert.equal(b.tokens.length, 40);
    // Interleaved: each one's token stream began before the other's ended.
    assert.ok(a.times[0]! < b.times.at(-1)! && b.times[0]! < a.times.at(-1)!, "token timestamps overlap");
    // Batched decoding gives the same greedy tokens as decoding alone.
    const solo = await run(engine, engine.tokenize("the first story", true), greedy(40));
    assert.deepEqual(a.ids, solo.ids);
  });

  test("a cancelled generation frees its slot for a queued request", async () => {
    const prompt = engine.tokenize("the house", true);
    const ac = new AbortController();
    const stopB = new AbortController();
    let aTokens = 0;
    const a = engine.generate({ ...request(engine, prompt, greedy(null)), signal: ac.signal, onToken: () => { if (++aTokens === 5) ac.abort(); return true; } });
    const b = engine.generate({ ...request(engine, prompt, greedy(null)), signal: stopB.signal, onToken: () => true });
    // The (parallel+1)th request waits for a slot; it can only run once `a` releases its own.
    const c = run(engine, prompt, greedy(10));
    const ra = await a;
    assert.equal(ra.finishReason, "aborted");
    assert.ok(ra.completionTokens >= 5 && ra.completionTokens < 100);
    const rc = await c;
    assert.equal(rc.result.finishReason, "length");
    assert.equal(rc.tokens.length, 10);
    stopB.abort();
    assert.equal((await b).finishReason, "aborted");
    // onToken returning false also stops and frees the slot.
    const r = await engine.generate({ ...request(engine, prompt, greedy(50)), onToken: () => false });
    assert.equal(r.finishReason, "aborted");
    assert.equal(r.promptTokens, prompt.length);
    assert.equal(r.completionTokens, 1);
  });

  test("logprobs are <= 0 and the top alternatives are sorted", async () => {
    const prompt = engine.tokenize("she looked at", true);
    const r = await run(engine, prompt, greedy(8, { topLogprobs: 5 }));
    for (const t of r.tokens) {
      assert.ok(t.logprob !== undefined && t.logprob <= 0 && Number.isFinite(t.logprob));
      assert.equal(t.top?.length, 5);
      for (let i = 1; i < t.top!.length; i++) assert.ok(t.top![i - 1]!.logprob >= t.top![i]!.logprob, "sorted descending");
      // Greedy picks the argmax, so the chosen token is the best alternative.
      assert.ok(Math.abs(t.top![0]!.logprob - t.logprob) < 1e-6);
    }
    const plain = await run(engine, prompt, greedy(8));
    assert.equal(plain.tokens[0]!.logprob, undefined, "no logprobs unless asked");
    assert.deepEqual(plain.ids, r.ids);
  });

  test("the context room: a prompt that fills the context is refused, max_tokens is cut to the room", () => {
    assert.throws(() => completionLimit(engine.info.contextSize, 300, 4), (e: unknown) => e instanceof MoltbotError && e.code === "context_length_exceeded");
    assert.throws(() => completionLimit(256, 256, null), (e: unknown) => e instanceof MoltbotError && e.code === "context_length_exceeded");
    assert.equal(completionLimit(256, 250, null), 6);
    assert.equal(completionLimit(256, 250, 100), 6);
    assert.equal(completionLimit(256, 10, 100), 100);
  });

  test("the engine asserts the room it was given instead of re-checking the client's request", async () => {
    await assert.rejects(engine.generate({ promptTokens: new Array(300).fill(5), params: greedy(4), maxTokens: 4, onToken: () => true }),
      (e: unknown) => e instanceof MoltbotError && e.code === "internal_error");
  });

  test("embeddings are unit length and do not depend on batch packing", async () => {
    const emb = await loadFfiEngine({ modelPath, contextSize: 128, parallel: 4, threads: 1, embedding: true });
    try {
      const a = emb.tokenize("the cat sat on the mat", true);
      const b = emb.tokenize("a dog", true);
      const [va, vb, va2] = await emb.embed([a, b, a]);
      const [vbAlone] = await emb.embed([b]);
      for (const v of [va!, vb!]) {
        assert.equal(v.length, 64);
        assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
      }
      for (let i = 0; i < 64; i++) {
        assert.ok(Math.abs(va![i]! - va2![i]!) < 1e-5);
        assert.ok(Math.abs(vb![i]! - vbAlone![i]!) < 1e-5);
      }
      assert.notDeepEqual(va, vb);
      await assert.rejects(emb.generate({ promptTokens: a, params: greedy(2), maxTokens: 2, onToken: () => true }), MoltbotError as never);
    } finally {
      await emb.close();
    }
    await assert.rejects(engine.embed([[1, 2]]), (e: unknown) => e instanceof MoltbotError && e.code === "model_not_embedding");
  });
});

describe("ffi engine lifecycle", () => {
  test("close drains: running and queued generations finish, new ones are refused, then the model is freed", async () => {
    const e = await loadFfiEngine({ modelPath, contextSize: 256, parallel: 1, threads: 1, embedding: false });
    const prompt = e.tokenize("drain me", true);
    const running = run(e, prompt, greedy(40));
    const queued = run(e, prompt, greedy(20));
    const closed = e.close();
    await assert.rejects(run(e, prompt, greedy(5)), (err: MoltbotError) => err.code === "engine_error" && /closing/.test(err.message));
    const [a, b] = await Promise.all([running, queued]);
    assert.equal(a.result.finishReason, "length");
    assert.equal(a.ids.length, 40);
    assert.equal(b.result.finishReason, "length");
    assert.equal(b.ids.length, 20);
    await closed;
    await e.close(); // idempotent
  });

  test("destroy aborts: running and queued generations fail at once", async () => {
    const e = await loadFfiEngine({ modelPath, contextSize: 256, parallel: 1, threads: 1, embedding: false });
    const prompt = e.tokenize("stop me", true);
    let started!: () => void;
    const first = new Promise<void>((resolve) => (started = resolve));
    const running = e.generate({ ...request(e, prompt, greedy(200)), onToken: () => (started(), true) });
    const queued = run(e, prompt, greedy(200));
    await first;
    await e.destroy();
    for (const p of [running, queued]) await assert.rejects(p, (err: MoltbotError) => err.code === "engine_error");
    await e.close(); // after a destroy: nothing left to drain
  });
});
