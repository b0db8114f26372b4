// The node-llama-cpp engine against a generated tiny random-weight llama model: sampling
// determinism, limits, slot reuse under concurrency and abort, logprobs and embeddings.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadNlcEngine } from "../src/engine/nlc-engine.js";
import type { Engine, GeneratedToken, GenerateResult, GenerationParams } from "../src/engine/types.js";
import { completionLimit } from "../src/workers/generation.js";
import { MoltbotError } from "../src/errors.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";

const greedy: GenerationParams = { temperature: 0, topP: 1, seed: undefined, maxTokens: 12, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };

/** A request as the worker builds it: the completion limit resolved against the context. */
const request = (engine: Engine, prompt: number[], params: GenerationParams) => ({
  promptTokens: prompt,
  params,
  maxTokens: completionLimit(engine.info.contextSize, prompt.length, params.maxTokens),
});

async function run(engine: Engine, prompt: number[], params: Partial<GenerationParams> = {}, stopAfter = Infinity, signal?: AbortSignal): Promise<{ tokens: GeneratedToken[]; result: GenerateResult }> {
  const tokens: GeneratedToken[] = [];
  const result = await engine.generate({
    ...request(engine, prompt, { ...greedy, ...params }),
    onToken: (t) => {
      tokens.push(t);
      return tokens.length < stopAfter;
    },
    ...(signal === undefined ? {} : { signal }),
  });
  return { tokens, result };
}

const ids = (tokens: GeneratedToken[]): number[] => tokens.map((t) => t.id);

describe("nlc engine", () => {
  let dir: string;
  let modelPath: string;
  let engine: Engine;
  let prompt: number[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "moltbot-nlc-"));
    modelPath = join(dir, "tiny.gguf");
    await writeRandomLlamaModel(modelPath, randomModelOptions("tiny"));
    engine = await loadNlcEngine({ modelPath, contextSize: 128, parallel: 2, threads: 1, embedding: false });
    prompt = engine.tokenize("the quick brown fox", true);
  });

  after(async () => {
    await engine?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("reports the model and the configured per-sequence context", () => {
    assert.equal(engine.info.architecture, "llama");
    assert.equal(engine.info.contextSize, 128);
    assert.equal(engine.info.vocabSize, 512);
    assert.equal(engine.info.hasChatTemplate, false);
    assert.ok(prompt.length > 1);
  });

  test("formats chat in the plain fallback when the model has no template", () => {
    const text = engine.formatChat([
      { role: "system", content: "be brief" },
      { role: "user", content: "hi" },
    ]);
    assert.equal(text, "System: be brief\nUser: hi\nAssistant:");
  });

  test("greedy generation is deterministic and stops at maxTokens with 'length'", async () => {
    const a = await run(engine, prompt);
    const b = await run(engine, prompt);
    assert.equal(a.result.finishReason, "length");
    assert.equal(a.result.completionTokens, 12);
    assert.equal(a.tokens.length, 12);
    assert.equal(a.result.promptTokens, prompt.length);
    assert.deepEqual(ids(a.tokens), ids(b.tokens));
    const five = await run(engine, prompt, { maxTokens: 5 });
    assert.equal(five.result.finishReason, "length");
    assert.equal(five.tokens.length, 5);
    assert.deepEqual(ids(five.tokens), ids(a.tokens).slice(0, 5));
  });

  test("a fixed seed reproduces sampling; another seed differs", async () => {
    const params = { temperature: 1, topP: 1, seed: 42, maxTokens: 16 };
    const a = await run(engine, prompt, params);
    const b = await run(engine, prompt, params);
    const c = await run(engine, prompt, { ...params, seed: 43 });
    assert.deepEqual(ids(a.tokens), ids(b.tokens));
    assert.notDeepEqual(ids(a.tokens), ids(c.tokens));
  });

  test("concurrent generations share the two slots and a third waits for one", async () => {
    const solo = await run(engine, prompt);
    const other = engine.tokenize("jumps over", true);
    const [x, y, z] = await Promise.all([run(engine, prompt), run(engine, other), run(engine, prompt, { maxTokens: 4 })]);
    for (const r of [x, y]) assert.equal(r.result.finishReason, "length");
    assert.equal(z.tokens.length, 4);
    // Batched decoding must not leak state between sequences.
    assert.deepEqual(ids(x.tokens), ids(solo.tokens));
    assert.deepEqual(ids(z.tokens), ids(solo.tokens).slice(0, 4));
  });

  test("onToken false and the AbortSignal end with 'aborted' and free the slot clean", async () => {
    const reference = await run(engine, prompt);
    const stopped = await run(engine, engine.tokenize("something else", true), {}, 3);
    assert.equal(stopped.result.finishReason, "aborted");
    assert.equal(stopped.result.completionTokens, 3);

    const controller = new AbortController();
    const tokens: GeneratedToken[] = [];
    const aborted = await engine.generate({
      ...request(engine, prompt, { ...greedy, maxTokens: 100 }),
      onToken: (t) => {
        tokens.push(t);
        if (tokens.length === 2) controller.abort();
        return true;
      },
      signal: controller.signal,
    });
    assert.equal(aborted.finishReason, "aborted");
    assert.equal(aborted.completionTokens, 2);

    // Both slots are free again (two at once finish) and hold no stale KV state.
    const [again, again2] = await Promise.all([run(engine, prompt), run(engine, prompt)]);
    assert.deepEqual(ids(again.tokens), ids(reference.tokens));
    assert.deepEqual(ids(again2.tokens), ids(reference.tokens));
  });

  test("an already aborted request returns at once", async () => {
    const r = await run(engine, prompt, {}, Infinity, AbortSignal.abort());
    assert.deepEqual(r.result, { finishReason: "aborted", promptTokens: prompt.length, completionTokens: 0, cachedTokens: 0, draftTokens: 0, acceptedDraftTokens: 0 });
  });

  test("logprobs are real: <= 0, top sorted, greedy picks the top entry", async () => {
    const plain = await run(engine, prompt, { maxTokens: 6 });
    const withLp = await run(engine, prompt, { maxTokens: 6, topLogprobs: 3 });
    assert.deepEqual(ids(withLp.tokens), ids(plain.tokens));
    assert.equal(plain.tokens[0]?.logprob, undefined);
    for (const t of withLp.tokens) {
      assert.ok(t.logprob !== undefined && t.logprob <= 0 && t.logprob > -20, `logprob ${t.logprob}`);
      assert.ok(t.top !== undefined && t.top.length === 3);
      for (let i = 1; i < t.top.length; i++) assert.ok(t.top[i - 1]!.logprob >= t.top[i]!.logprob);
      assert.equal(t.top[0]!.logprob, t.logprob);
      const total = t.top.reduce((s, e) => s + Math.exp(e.logprob), 0);
      assert.ok(total <= 1 + 1e-6);
    }
  });

  test("refuses prompts that don't fit and token ids outside the vocabulary", async () => {
    await assert.rejects(
      run(engine, new Array<number>(128).fill(prompt[1]!)),
      (err) => err instanceof MoltbotError && err.code === "context_length_exceeded",
    );
    await assert.rejects(run(engine, [1, 99999]), (err) => err instanceof MoltbotError && err.code === "invalid_request");
    // A prompt of 120 tokens leaves room for 8 generated tokens.
    const long = await run(engine, new Array<number>(120).fill(prompt[1]!), { maxTokens: 50 });
    assert.equal(long.result.finishReason, "length");
    assert.equal(long.tokens.length, 8);
  });

  test("embeddings are unit length; the generation engine refuses to embed", async () => {
    await assert.rejects(engine.embed([prompt]), (err) => err instanceof MoltbotError && err.code === "model_not_embedding");
    const emb = await loadNlcEngine({ modelPath, contextSize: 128, parallel: 1, threads: 1, embedding: true });
    try {
      const [a, b, c] = await emb.embed([prompt, engine.tokenize("jumps over", true), prompt]);
      for (const v of [a!, b!]) {
        assert.equal(v.length, emb.info.embeddingSize);
        assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
      }
      assert.notDeepEqual(a, b);
      assert.deepEqual(a, c);
      await assert.rejects(emb.generate({ promptTokens: prompt, params: greedy, maxTokens: 1, onToken: () => true }), (err) => err instanceof MoltbotError && err.code === "engine_error");
    } finally {
      await emb.close();
      await emb.close(); // idempotent
    }
  });
});
