// Quantization on this machine: each model's F32 original converted by llama.cpp's quantizer
// (the Quantizer, as `moltbot quantize` runs it) to each precision, and each output measured
// against the F32 original by `moltbot quantize --eval`'s evaluation (size, prompt and
// generation tokens/s through Moltbot's engine, perplexity on held-out Brown Corpus text, mean
// KL divergence, top-1 agreement). Prints one markdown table. Run it under the shared lock:
//
//   flock /tmp/moltbot-cpu.lock node --import tsx bench/quantization.ts [--models demo,m100] [--precisions fp16,int8,int4] [--threads 2]
//
// The F32 originals are built once into ~/.cache/moltbot/bench/: demo-f32.gguf (the demo
// builder with --type f32) and m100-f32.gguf (scripts/make-model.ts --preset m100 --type f32).

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { evaluateQuantization, type EvalReport } from "../src/quantize/evaluate.js";
import { Quantizer } from "../src/quantize/quantizer.js";
import { commandLine, machine } from "./lib.js";

const { values } = parseArgs({
  options: { models: { type: "string", default: "demo,m100" }, precisions: { type: "string", default: "fp16,int8,int4" }, threads: { type: "string", default: "2" } },
});
const threads = Number(values.threads);
const cache = path.join(os.homedir(), ".cache", "moltbot", "bench");
mkdirSync(cache, { recursive: true });

async function original(model: string): Promise<string> {
  const file = path.join(cache, `${model}-f32.gguf`);
  if (existsSync(file)) return file;
  const tmp = `${file}.tmp-${process.pid}`;
  if (model === "demo") {
    const builder = path.join(import.meta.dirname, "..", "src", "demo", "build-demo-main.ts");
    const r = spawnSync(process.execPath, ["--import", "tsx", builder, "--out", tmp, "--type", "f32"], { stdio: "inherit" });
    if (r.status !== 0) throw new Error("building the F32 demo model failed");
  } else if (model === "m100") {
    await writeRandomLlamaModel(tmp, randomModelOptions("m100", { tensorType: "f32" }));
  } else {
    throw new Error(`unknown model ${model} (demo, m100)`);
  }
  spawnSync("mv", [tmp, file]);
  return file;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

console.log(`<!-- ${commandLine()} -->`);
console.log(`<!-- ${machine()}, ${threads} threads, ${new Date().toISOString()} -->`);
console.log("| model | precision | size MiB | smaller | prompt tok/s | 1 stream tok/s | 8 streams tok/s | perplexity | mean KL (nats) | top-1 agree |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
const out = mkdtempSync(path.join(os.tmpdir(), "moltbot-bench-quant-"));
try {
  for (const model of values.models.split(",")) {
    const source = await original(model);
    const reports: [string, string, EvalReport][] = [];
    for (const precision of values.precisions.split(",")) {
      const file = path.join(out, `${model}-${precision}.gguf`);
      const r = await new Quantizer({ modelPath: source }).convert({ precision, outputPath: file, threads });
      process.stderr.write(`${model} ${precision}: quantized in ${r.seconds.toFixed(1)} s\n`);
      reports.push([precision, r.fileType, await evaluateQuantization({ sourcePath: source, outputPath: file, threads })]);
      rmSync(file);
    }
    // F32 figures: the median of its measurements beside each output (one per precision).
    const med = (f: (r: EvalReport) => number) => reports.map(([, , r]) => f(r)).sort((a, b) => a - b)[Math.floor(reports.length / 2)]!;
    const s = { pp: med((r) => r.source.promptTokensPerSecond), t1: med((r) => r.source.tokensPerSecond1), t8: med((r) => r.source.tokensPerSecond8), ppl: reports[0]![2].accuracy.perplexitySource };
    console.log(`| ${model} | F32 | ${mib(reports[0]![2].source.bytes)} | | ${s.pp.toFixed(0)} | ${s.t1.toFixed(1)} | ${s.t8.toFixed(1)} | ${s.ppl.toFixed(3)} | | |`);
    for (const [precision, fileType, r] of reports) {
      const a = r.accuracy;
      console.log(
        `| ${model} | ${precision} (${fileType}) | ${mib(r.output.bytes)} | ${((1 - r.output.bytes / r.source.bytes) * 100).toFixed(1)}% | ` +
          `${r.output.promptTokensPerSecond.toFixed(0)} (${x(r.output.promptTokensPerSecond, r.source.promptTokensPerSecond)}) | ` +
          `${r.output.tokensPerSecond1.toFixed(1)} (${x(r.output.tokensPerSecond1, r.source.tokensPerSecond1)}) | ` +
          `${r.output.tokensPerSecond8.toFixed(1)} (${x(r.output.tokensPerSecond8, r.source.tokensPerSecond8)}) | ` +
          `${a.perplexityOutput.toFixed(3)} (${a.perplexityOutput >= a.perplexitySource ? "+" : ""}${((a.perplexityOutput / a.perplexitySource - 1) * 100).toFixed(2)}%) | ` +
          `${a.meanKl.toExponential(2)} | ${(a.top1Agreement * 100).toFixed(2)}% |`,
      );
    }
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
