// GGUF integrity without llama.cpp: truncated and corrupt files fail with one line naming the
// problem; the ggml block table agrees with the shipped libggml.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { copyFile, readFile, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import koffi from "koffi";
import { checkGgufIntegrity, fileTypeName, KNOWN_GGML_TYPES } from "../src/gguf/integrity.js";
import { readGgufLayout } from "../src/gguf/reader.js";
import { gv, writeGguf } from "../src/gguf/writer.js";
import { locateLlamaBinaries } from "../src/engine/libllama.js";
import { tempDir, tinyModelPath, rejectsWithLine } from "./helpers/fixtures.js";

test("a whole file passes with its tensor count, quantization and size", async () => {
  const tiny = await tinyModelPath();
  const r = await checkGgufIntegrity(tiny);
  const layout = await readGgufLayout(tiny);
  assert.equal(r.tensorCount, layout.tensors.length);
  assert.ok(r.tensorCount > 0);
  assert.equal(r.quantization, "F32");
  assert.equal(r.sizeBytes, (await readFile(tiny)).length);
  assert.equal(fileTypeName(7), "Q8_0");
  assert.equal(fileTypeName(15), "Q4_K_M");
  assert.equal(fileTypeName(15 | 1024), "Q4_K_M", "the 'guessed' bit is ignored");
});

test("a truncated copy names the tensor cut short and the sizes", async () => {
  const dir = await tempDir();
  const tiny = await tinyModelPath();
  const cut = path.join(dir, "cut.gguf");
  await copyFile(tiny, cut);
  const full = (await readFile(tiny)).length;
  await truncate(cut, full - 1000);
  const last = (await readGgufLayout(tiny)).tensors.reduce((a, b) => (b.offset > a.offset ? b : a));
  await rejectsWithLine(checkGgufIntegrity(cut), new RegExp(`cut\\.gguf: truncated GGUF: tensor ${last.name.replaceAll(".", "\\.")} ends at byte ${full} but the file has ${full - 1000} bytes$`));

  // Cut inside the header (the vocabulary): the header itself is short.
  await truncate(cut, 2000);
  await rejectsWithLine(checkGgufIntegrity(cut), /cut\.gguf: truncated GGUF header/);
});

test("bad magic, an unsupported version and a file without tensors are one line each", async () => {
  const dir = await tempDir();
  const tiny = await readFile(await tinyModelPath());
  const magic = path.join(dir, "magic.gguf");
  await writeFile(magic, Buffer.concat([Buffer.from("GGML"), tiny.subarray(4)]));
  await rejectsWithLine(checkGgufIntegrity(magic), /magic\.gguf: not a GGUF file \(bad magic\)/);

  const v9 = Buffer.from(tiny);
  v9.writeUInt32LE(9, 4);
  await writeFile(path.join(dir, "v9.gguf"), v9);
  await rejectsWithLine(checkGgufIntegrity(path.join(dir, "v9.gguf")), /v9\.gguf: unsupported GGUF version 9/);

  const empty = path.join(dir, "empty.gguf");
  await writeGguf(empty, { metadata: [["general.architecture", gv.str("llama")]], tensors: [] });
  await rejectsWithLine(checkGgufIntegrity(empty), /empty\.gguf: GGUF has no tensors/);
});

test("the block sizes of ggml types match the shipped libggml", () => {
  const { binsDir } = locateLlamaBinaries();
  const base = readdirSync(binsDir).find((f) => /^libggml-base(\.v[\d.]+)?\.(so|dylib)$/.test(f));
  assert.ok(base !== undefined, `libggml-base in ${binsDir}`);
  const ggml = koffi.load(path.join(binsDir, base));
  const blockSize = ggml.func("int64_t ggml_blck_size(int type)");
  const typeSize = ggml.func("size_t ggml_type_size(int type)");
  const typeName = ggml.func("const char *ggml_type_name(int type)");
  for (const [id, t] of KNOWN_GGML_TYPES) {
    assert.deepEqual([Number(blockSize(id)), Number(typeSize(id))], [t.blockElems, t.blockBytes], `${t.name} (ggml ${typeName(id)})`);
    assert.equal(t.name.toLowerCase(), String(typeName(id)).toLowerCase());
  }
  for (const common of ["Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "BF16", "IQ4_XS"]) {
    assert.ok([...KNOWN_GGML_TYPES.values()].some((t) => t.name === common), common);
  }
});
