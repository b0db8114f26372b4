import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import type { Llama, LlamaModel } from "node-llama-cpp";
import { gv, writeGguf, f32ToF16, encodeTensorChunk } from "../src/gguf/writer.js";
import { isGgufFile, readGgufMetadata } from "../src/gguf/reader.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";

const dir = await mkdtemp(join(tmpdir(), "moltbot-gguf-"));
test.after(() => rm(dir, { recursive: true, force: true }));

let llamaPromise: Promise<Llama> | undefined;
const llama = (): Promise<Llama> => (llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error }));

test("writer round-trips metadata of every type through readGgufMetadata", async () => {
  const path = join(dir, "meta.gguf");
  const r = await writeGguf(path, {
    metadata: [
      ["general.architecture", gv.str("llama")],
      ["general.alignment", gv.u32(32)],
      ["a.u32", gv.u32(4294967295)],
      ["a.i32", gv.i32(-7)],
      ["a.f32", gv.f32(0.5)],
      ["a.bool", gv.bool(true)],
      ["a.u64", gv.u64(2n ** 40n)],
      ["a.u64.big", gv.u64(2n ** 63n)],
      ["a.unicode", gv.str("▁héllo")],
      ["a.strs", gv.strs(["x", "", "▁y"])],
      ["a.f32s", gv.f32s([1.5, -2])],
      ["a.i32s", gv.i32s([3, -4])],
    ],
    tensors: [
      { name: "t.f32", dims: [3, 2], type: "f32", data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: "t.f16", dims: [5], type: "f16", data: () => [Float32Array.from([1, 2]), Float32Array.from([3, 4, 5])] },
      { name: "t.q8", dims: [32, 2], type: "q8_0", data: new Float32Array(64).fill(0.25) },
    ],
  });
  assert.equal(r.parameters, 6 + 5 + 64);
  const md = await readGgufMetadata(path);
  assert.equal(md.version, 3);
  assert.equal(md.tensorCount, 3);
  const get = (k: string): unknown => md.metadata.get(k);
  assert.equal(get("general.architecture"), "llama");
  assert.equal(get("a.u32"), 4294967295);
  assert.equal(get("a.i32"), -7);
  assert.equal(get("a.f32"), 0.5);
  assert.equal(get("a.bool"), true);
  assert.equal(get("a.u64"), 2 ** 40);
  assert.equal(get("a.u64.big"), 2n ** 63n);
  assert.equal(get("a.unicode"), "▁héllo");
  assert.deepEqual(get("a.strs"), ["x", "", "▁y"]);
  assert.deepEqual(get("a.f32s"), [1.5, -2]);
  assert.deepEqual(get("a.i32s"), [3, -4]);
  // Like gguf-py, every tensor (the last included) is padded to the 32-byte alignment.
  const size = (await stat(path)).size;
  assert.equal(size % 32, 0);
  assert.equal(r.bytes, size);
});

test("isGgufFile checks the magic, not the name", async () => {
  const text = join(dir, "notes.gguf");
  await writeFile(text, "GGU not really\n");
  assert.equal(await isGgufFile(text), false);
  assert.equal(await isGgufFile(join(dir, "missing")), false);
  const model = join(dir, "weights.bin");
  await writeGguf(model, { metadata: [], tensors: [] });
  assert.equal(await isGgufFile(model), true);
  await assert.rejects(readGgufMetadata(text), { name: "MoltbotError" });
});

test("a failing tensor source leaves neither the file nor a temp file behind", async () => {
  const sub = await mkdtemp(join(dir, "atomic-"));
  const path = join(sub, "broken.gguf");
  await assert.rejects(
    writeGguf(path, {
      metadata: [],
      tensors: [{ name: "t", dims: [64], type: "f32", data: function* () { yield new Float32Array(32); throw new Error("boom"); } }],
    }),
    /boom/,
  );
  assert.deepEqual(await readdir(sub), []);
});

test("f16 and q8_0 encoders match ggml's layout", () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(1e6), 0x7c00);
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // tie rounds to even
  const values = Float32Array.from({ length: 32 }, (_, i) => (i - 16) / 16);
  const block = encodeTensorChunk("q8_0", values);
  assert.equal(block.length, 34);
  const view = new DataView(block.buffer);
  assert.equal(view.getUint16(0, true), f32ToF16(1 / 127));
  assert.equal(view.getInt8(2), -127);
  assert.equal(view.getInt8(2 + 16), 0);
});

async function loadTiny(path: string): Promise<LlamaModel> {
  return (await llama()).loadModel({ modelPath: path });
}

test("a random tiny model loads in llama.cpp, round-trips text and generates tokens", async () => {
  const path = join(dir, "tiny.gguf");
  const written = await writeRandomLlamaModel(path, randomModelOptions("tiny"));
  assert.ok(written.bytes < 2_000_000, `tiny model is ${written.bytes} bytes`);
  const md = await readGgufMetadata(path);
  assert.equal(md.metadata.get("general.architecture"), "llama");
  assert.equal(md.metadata.get("llama.context_length"), 512);

  const model = await loadTiny(path);
  try {
    assert.equal(model.tokens.bos, 1);
    assert.equal(model.tokens.eos, 2);
    const text = "The world is good, isn't it? Über 42";
    const tokens = model.tokenize(text);
    assert.equal(model.detokenize(tokens), text);
    assert.ok(tokens.some((t) => t >= 3 && t < 259), "Ü goes through byte fallback");

    // One thread: on a busy 2-core box llama.cpp's spinning threads otherwise cost ~100x.
    const context = await model.createContext({ contextSize: 128, threads: 1 });
    try {
      const sequence = context.getSequence();
      const generated: number[] = [];
      const N = 16;
      for await (const token of sequence.evaluate([model.tokens.bos!, ...tokens], { temperature: 0 })) {
        generated.push(token);
        if (generated.length >= N) break;
      }
      assert.equal(generated.length, N);
      assert.ok(generated.every((t) => Number.isInteger(t) && t >= 0 && t < 512));
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
});

test("f16 and q8_0 models give the same next-token logits as f32 (up to rounding)", async () => {
  const logitsFor = async (type: "f32" | "f16" | "q8_0"): Promise<Float64Array> => {
    const path = join(dir, `tiny-${type}.gguf`);
    await writeRandomLlamaModel(path, randomModelOptions("tiny", { tensorType: type, seed: 7 }));
    const model = await loadTiny(path);
    const context = await model.createContext({ contextSize: 64, threads: 1 });
    try {
      const tokens = [model.tokens.bos!, ...model.tokenize("the state of the world")];
      const out = await context.getSequence().controlledEvaluate(
        tokens.map((t, i) => (i === tokens.length - 1 ? [t, { generateNext: { logits: true } }] : t)),
      );
      const logits = out[tokens.length - 1]?.next.logits;
      assert.ok(logits);
      const arr = new Float64Array(512);
      for (const [tok, v] of logits) arr[tok] = v;
      return arr;
    } finally {
      await context.dispose();
      await model.dispose();
    }
  };
  const ref = await logitsFor("f32");
  const spread = Math.max(...ref) - Math.min(...ref);
  assert.ok(spread > 0, "random model has non-constant logits");
  for (const type of ["f16", "q8_0"] as const) {
    const other = await logitsFor(type);
    let maxDiff = 0;
    for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - other[i]!));
    assert.ok(maxDiff < 0.1 * spread, `${type}: max logit difference ${maxDiff} vs spread ${spread}`);
  }
});

test("the random model bytes are deterministic for a seed", async () => {
  const a = join(dir, "det-a.gguf");
  const b = join(dir, "det-b.gguf");
  await writeRandomLlamaModel(a, randomModelOptions("tiny", { tensorType: "q8_0" }));
  await writeRandomLlamaModel(b, randomModelOptions("tiny", { tensorType: "q8_0" }));
  assert.deepEqual(await readFile(a), await readFile(b));
});
