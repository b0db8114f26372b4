// The model of the GPU check, as a Moltbot repository: a random-weight llama written with the
// project's GGUF writer. `1b` is the shape the H200 anchor was measured on (TinyLlama's: d 2048,
// 22 layers, ff 5632, 32 heads, 4 KV heads, vocab 32000; ~1.1B parameters, 2.2 GB as F16);
// `small` runs the same script on a CPU in seconds.
//   node dist/bench/gpu/make-model.js --size 1b|small --repo DIR --parallel 32 --context 512
// Prints one JSON line: file, bytes, parameters, seconds.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { writeRandomLlamaModel, type RandomLlamaOptions } from "../../src/gguf/random-model.js";

const SIZES: Record<string, RandomLlamaOptions> = {
  "1b": { vocabSize: 32000, embeddingLength: 2048, blockCount: 22, headCount: 32, headCountKv: 4, feedForwardLength: 5632, contextLength: 2048, tensorType: "f16", seed: 1 },
  small: { vocabSize: 8192, embeddingLength: 256, blockCount: 4, headCount: 8, headCountKv: 4, feedForwardLength: 704, contextLength: 2048, tensorType: "f16", seed: 1 },
};

const { values } = parseArgs({ options: { size: { type: "string", default: "1b" }, repo: { type: "string" }, parallel: { type: "string", default: "32" }, context: { type: "string", default: "512" } } });
const opts = SIZES[values.size!];
if (opts === undefined || values.repo === undefined) throw new Error("usage: make-model.js --size 1b|small --repo DIR [--parallel N] [--context N]");
const dir = path.join(values.repo, "gpu-bench", "v1");
await mkdir(dir, { recursive: true });
const t0 = performance.now();
const file = path.join(dir, "weights.bin");
const r = await writeRandomLlamaModel(file, opts);
await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "gpu-bench", type: "llm", parallel: Number(values.parallel), context_size: Number(values.context) }, null, 2));
console.log(JSON.stringify({ file, size: values.size, bytes: r.bytes, parameters: r.parameters, seconds: +((performance.now() - t0) / 1000).toFixed(1) }));
