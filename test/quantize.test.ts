// The Quantizer (moltbot/quantization) on real files: llama.cpp's own quantizer converts a tiny
// random-weight model in a child process; the output is read back with our GGUF reader. Bad
// inputs get one clear line each and leave no file behind: a missing or non-GGUF input, an
// unknown precision, an existing output, an already quantized model, a file size limit and a
// full disk (a real 256 KiB tmpfs, where mounting one is allowed) hit mid-write, an abort.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { MoltbotError } from "../src/errors.js";
import { checkGgufIntegrity, KNOWN_GGML_TYPES } from "../src/gguf/integrity.js";
import { readGgufLayout } from "../src/gguf/reader.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { Quantizer, sha256File, type QuantizeProgress } from "../src/quantize/index.js";
import { evaluateQuantization, renderEvaluation } from "../src/quantize/evaluate.js";
import { ROOT } from "./helpers/cli.js";
import { rejectsWithLine, tempDir } from "./helpers/fixtures.js";

let dir: string;
let f32: string;
let q8: string;

before(async () => {
  dir = await tempDir("moltbot-quant-");
  f32 = path.join(dir, "tiny-f32.gguf");
  q8 = path.join(dir, "tiny-q8.gguf");
  await writeRandomLlamaModel(f32, randomModelOptions("tiny"));
  await writeRandomLlamaModel(q8, randomModelOptions("tiny", { tensorType: "q8_0" }));
});
after(() => rm(dir, { recursive: true, force: true }));

/** Files in `d` other than the named ones: a partial output would show here. */
async function strays(d: string, expected: string[]): Promise<string[]> {
  return (await readdir(d)).filter((n) => !expected.includes(n));
}

test("int8: llama.cpp's Q8_0, read back whole, with progress per tensor and the output's own figures", async () => {
  const out = path.join(dir, "int8.gguf");
  const progress: QuantizeProgress[] = [];
  const r = await new Quantizer({ modelPath: f32 }).convert({ precision: "int8", outputPath: out, threads: 1, onProgress: (p) => progress.push(p) });
  const back = await checkGgufIntegrity(out);
  assert.equal(back.quantization, "Q8_0");
  assert.equal(r.fileType, "Q8_0");
  assert.equal(r.precision, "q8_0");
  assert.equal(r.outputBytes, (await stat(out)).size);
  assert.equal(r.inputBytes, (await stat(f32)).size);
  assert.ok(r.reduction > 0.65 && r.reduction < 0.75, `Q8_0 of F32 is ~72% smaller, got ${r.reduction}`);
  assert.equal(r.sha256, await sha256File(out));
  assert.equal(r.tensorCount, back.tensorCount);
  // Every matrix is Q8_0; the 1-D norms stay F32 (llama.cpp never quantizes them).
  assert.deepEqual(r.tensorTypes, { Q8_0: 16, F32: 5 });
  assert.deepEqual(r.fallbacks, []);
  assert.equal(progress.length, r.tensorCount);
  assert.deepEqual(progress.map((p) => p.index), Array.from({ length: r.tensorCount }, (_, i) => i + 1));
  assert.ok(progress.some((p) => p.name === "blk.0.attn_q.weight" && p.from === "F32" && p.to === "Q8_0"));
  assert.deepEqual(await strays(dir, ["tiny-f32.gguf", "tiny-q8.gguf", "int8.gguf"]), []);
  await rm(out);
});

test("fp16 and the llama.cpp names (q5_k_m) are accepted; the file type reads back", async () => {
  for (const [precision, fileType] of [["fp16", "F16"], ["Q5_K_M", "Q5_K_M"]] as const) {
    const out = path.join(dir, `${precision}.gguf`);
    const r = await new Quantizer({ modelPath: f32 }).convert({ precision, outputPath: out });
    assert.equal(r.fileType, fileType);
    assert.equal((await checkGgufIntegrity(out)).quantization, fileType);
    await rm(out);
  }
});

test("int4 on rows a K-quant cannot take: llama.cpp's fallbacks are reported, and agree with the file", async () => {
  const out = path.join(dir, "int4.gguf");
  const r = await new Quantizer({ modelPath: f32 }).convert({ precision: "int4", outputPath: out });
  assert.equal(r.fileType, "Q4_K_M");
  // tiny's rows are 64 and 128 wide; Q4_K/Q6_K blocks are 256.
  assert.ok(r.fallbacks.length > 0);
  const byName = new Map((await readGgufLayout(out)).tensors.map((t) => [t.name, KNOWN_GGML_TYPES.get(t.type)?.name]));
  for (const f of r.fallbacks) {
    assert.match(f.reason, /not divisible by 256/);
    assert.ok(["Q4_K", "Q6_K"].includes(f.wanted), f.wanted);
    assert.equal(byName.get(f.name), f.used, `${f.name} holds the type the fallback named`);
  }
  await rm(out);
});

test("bad inputs: one line each, code quantization_failed, nothing written", async () => {
  const out = path.join(dir, "bad.gguf");
  const q = (modelPath: string) => new Quantizer({ modelPath });
  await rejectsWithLine(q(path.join(dir, "nope.gguf")).convert({ precision: "int8", outputPath: out }), /nope\.gguf: input model does not exist/, "quantization_failed");
  const text = path.join(dir, "notes.txt");
  await writeFile(text, "not a model\n");
  await rejectsWithLine(q(text).convert({ precision: "int8", outputPath: out }), /notes\.txt: not a GGUF file/, "quantization_failed");
  await rejectsWithLine(q(f32).convert({ precision: "int7", outputPath: out }), /unknown precision 'int7' \(valid: fp32, fp16, int8, int4, .*q4_k_m.*\)/, "quantization_failed");
  // An existing output is kept as it was.
  await writeFile(out, "keep me");
  await rejectsWithLine(q(f32).convert({ precision: "int8", outputPath: out }), /bad\.gguf: output exists \(pass --force to replace it\)/, "quantization_failed");
  assert.equal(await readFile(out, "utf8"), "keep me");
  await q(f32).convert({ precision: "int8", outputPath: out, force: true });
  assert.equal((await checkGgufIntegrity(out)).quantization, "Q8_0");
  await rm(out);
  // Requantizing is refused unless asked for.
  await rejectsWithLine(q(q8).convert({ precision: "int4", outputPath: out }), /already quantized \(Q8_0\).*--allow-requantize/, "quantization_failed");
  const r = await q(q8).convert({ precision: "q4_0", outputPath: out, allowRequantize: true });
  assert.equal(r.fileType, "Q4_0");
  await rm(out);
  await rejectsWithLine(q(f32).convert({ precision: "int8", outputPath: f32, force: true }), /would overwrite the input/, "quantization_failed");
  assert.deepEqual(await strays(dir, ["tiny-f32.gguf", "tiny-q8.gguf", "notes.txt"]), []);
});

test("an abort kills the quantizer and removes its partial output", async () => {
  const out = path.join(dir, "aborted.gguf");
  const controller = new AbortController();
  await assert.rejects(
    new Quantizer({ modelPath: f32 }).convert({ precision: "q6_k", outputPath: out, signal: controller.signal, onProgress: () => controller.abort() }),
    (err: unknown) => err instanceof MoltbotError && err.code === "quantization_failed" && /aborted; no output written/.test(err.message),
  );
  assert.deepEqual(await strays(dir, ["tiny-f32.gguf", "tiny-q8.gguf", "notes.txt"]), []);
});

/** Runs the Quantizer in a shell with `prefix` (a ulimit), returning its error line or "ok". */
function convertUnder(prefix: string, input: string, output: string): Promise<string> {
  const lib = path.join(ROOT, "dist/src/quantize/index.js");
  const script = `import(${JSON.stringify(lib)}).then(({ Quantizer }) => new Quantizer({ modelPath: ${JSON.stringify(input)} }).convert({ precision: "f16", outputPath: ${JSON.stringify(output)} })).then(() => console.log("ok"), (e) => console.log(e.code + ": " + e.message))`;
  return new Promise((resolve) => {
    const child = spawn("bash", ["-c", `${prefix}; exec "${process.execPath}" -e '${script.replaceAll("'", "'\\''")}'`]);
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.on("close", () => resolve(stdout.trim()));
  });
}

test("a file size limit hit mid-write: one line, no partial output", async () => {
  // F16 of tiny is ~290 KB; 128 blocks of 1 KiB stop it halfway.
  const sub = path.join(dir, "limited");
  await mkdir(sub);
  const line = await convertUnder("ulimit -f 128", f32, path.join(sub, "f16.gguf"));
  assert.match(line, /^quantization_failed: the output .*f16\.gguf grew past this process's file size limit \(ulimit -f: 131072 bytes\); no output written$/);
  assert.deepEqual(await readdir(sub), []);
});

const canMount = process.getuid?.() === 0 && spawnSync("mount", ["--version"]).status === 0;

test("a full disk mid-write: one line naming the device's folder, no partial output", { skip: canMount ? false : "needs root to mount a small tmpfs" }, async (t) => {
  const mnt = path.join(dir, "small-disk");
  await mkdir(mnt);
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]);
  if (m.status !== 0) return t.skip(`mount refused: ${m.stderr.toString().trim()}`);
  try {
    const line = await convertUnder("true", f32, path.join(mnt, "f16.gguf"));
    assert.match(line, /^quantization_failed: no space left on the device of .*small-disk \(\d+ bytes free\) while writing the quantized model; no output written$/);
    assert.deepEqual(await readdir(mnt), []);
  } finally {
    spawnSync("umount", [mnt]);
  }
});

test("--eval's evaluation: both files through the engine; an F16 copy agrees with its F32 source", async () => {
  const out = path.join(dir, "eval-f16.gguf");
  await new Quantizer({ modelPath: f32 }).convert({ precision: "fp16", outputPath: out });
  const r = await evaluateQuantization({ sourcePath: f32, outputPath: out, threads: 1, tokens: 512 });
  await rm(out);
  assert.equal(r.source.bytes, (await stat(f32)).size);
  assert.ok(r.output.bytes < r.source.bytes * 0.6);
  for (const s of [r.source, r.output]) {
    for (const v of [s.promptTokensPerSecond, s.tokensPerSecond1, s.tokensPerSecond8]) assert.ok(Number.isFinite(v) && v > 0, JSON.stringify(s));
  }
  const a = r.accuracy;
  assert.equal(a.tokens, 511); // one window of 512 held-out tokens: 511 next-token predictions
  assert.ok(a.meanKl >= 0 && a.meanKl < 1e-3, `mean KL ${a.meanKl}`);
  assert.ok(a.top1Agreement > 0.97, `top-1 ${a.top1Agreement}`);
  assert.ok(Math.abs(a.perplexityOutput / a.perplexitySource - 1) < 0.01);
  const table = renderEvaluation(r).join("\n");
  for (const row of ["size", "prompt tokens/s", "tokens/s, 1 stream", "tokens/s, 8 streams", "perplexity", "mean KL", "top-1 agreement"]) assert.match(table, new RegExp(`^${row}`, "m"));
});
