// What the GGUF integrity check (run when a version is opened, so at every start) and the
// sha256 file check of validation cost: the first check in a fresh process (what a start pays,
// module warm-up included), the median of later ones, and sha256 throughput over the weights.
//
//   node --import tsx bench/gguf-integrity.ts [--models m100,demo] [--runs 21] [--sha256]
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { checkGgufIntegrity } from "../src/gguf/integrity.js";
import { benchModel, commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({ options: { models: { type: "string", default: "m100,demo" }, runs: { type: "string", default: "21" }, sha256: { type: "boolean", default: false } } });
console.log(`# ${commandLine()}\n# ${machine()}`);
for (const name of values.models.split(",")) {
  const { file } = await benchModel(name);
  let t0 = performance.now();
  const r = await checkGgufIntegrity(file);
  const first = performance.now() - t0;
  const later: number[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    t0 = performance.now();
    await checkGgufIntegrity(file);
    later.push(performance.now() - t0);
  }
  const mib = r.sizeBytes / 2 ** 20;
  console.log(`${name}: ${r.tensorCount} tensors, ${r.quantization}, ${mib.toFixed(1)} MiB: integrity check first ${first.toFixed(1)} ms, then median ${median(later).toFixed(1)} ms (min ${Math.min(...later).toFixed(1)}, max ${Math.max(...later).toFixed(1)}, ${later.length} runs)`);
  if (values.sha256) {
    t0 = performance.now();
    const hash = createHash("sha256");
    await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), hash);
    const ms = performance.now() - t0;
    console.log(`${name}: sha256 ${ms.toFixed(0)} ms (${(mib / (ms / 1000)).toFixed(0)} MiB/s)`);
  }
}
