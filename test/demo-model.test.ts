import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { ensureDemoModel } from "../src/demo/ensure-demo-model.js";
import { heldOutPerplexity, spreadSample } from "../src/demo/build-demo-model.js";
import { loadBrownCorpus } from "../src/demo/brown.js";
import { readGgufMetadata } from "../src/gguf/reader.js";

const cacheDir = await mkdtemp(join(tmpdir(), "moltbot-demo-"));
test.after(() => rm(cacheDir, { recursive: true, force: true }));

test("ensureDemoModel builds a loadable GGUF once, with a low held-out perplexity, and reuses it", { timeout: 180_000 }, async () => {
  const logs: string[] = [];
  const path = await ensureDemoModel({ cacheDir, log: (m) => logs.push(m) });
  assert.ok(logs.some((m) => m.includes("building")), logs.join("\n"));
  const md = await readGgufMetadata(path);
  assert.equal(md.metadata.get("general.architecture"), "llama");
  const vocabSize = Number(md.metadata.get("llama.vocab_size"));
  const config = JSON.parse(await readFile(join(path, "..", "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(config.name, "demo");
  assert.equal(config.type, "llm");

  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: path });
  try {
    const corpus = await loadBrownCorpus();
    const ppl = await heldOutPerplexity(model, spreadSample(corpus.heldOut, 2), { threads: 1 });
    assert.ok(Number.isFinite(ppl.perplexity) && ppl.tokens > 1000, JSON.stringify(ppl));
    // Uniform would be vocabSize; the Q8_0 variant that llama.cpp mis-evaluated scored ~vocabSize/2.
    assert.ok(ppl.perplexity < vocabSize / 20, `held-out perplexity ${ppl.perplexity} (vocab ${vocabSize})`);
  } finally {
    await model.dispose();
  }

  const before = (await stat(path)).mtimeMs;
  const t0 = performance.now();
  const again = await ensureDemoModel({ cacheDir });
  assert.equal(again, path);
  assert.equal((await stat(path)).mtimeMs, before);
  assert.ok(performance.now() - t0 < 500, "the cached model is reused without rebuilding");
});
