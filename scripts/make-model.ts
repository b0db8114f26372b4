// Writes a random-weight llama GGUF for tests and benchmarks:
//   node --import tsx scripts/make-model.ts --preset tiny|m100 --out FILE [--type f32|f16|q8_0] [--seed N]
// Prints one JSON line: path, bytes, parameters, seconds.

import { parseArgs } from "node:util";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import type { RandomModelPreset } from "../src/gguf/random-model.js";

const usage = "usage: make-model.ts --preset tiny|m100 --out FILE [--type f32|f16|q8_0] [--seed N]";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { preset: { type: "string" }, out: { type: "string" }, type: { type: "string" }, seed: { type: "string" }, help: { type: "boolean" } },
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  const preset = values.preset;
  if ((preset !== "tiny" && preset !== "m100") || values.out === undefined) throw new Error(usage);
  const type = values.type;
  if (type !== undefined && type !== "f32" && type !== "f16" && type !== "q8_0") throw new Error(`--type must be f32, f16 or q8_0`);
  const opts = randomModelOptions(preset as RandomModelPreset, {
    ...(type !== undefined ? { tensorType: type } : {}),
    ...(values.seed !== undefined ? { seed: Number(values.seed) } : {}),
  });
  const t0 = performance.now();
  const r = await writeRandomLlamaModel(values.out, opts);
  console.log(JSON.stringify({ path: values.out, preset, tensorType: opts.tensorType, bytes: r.bytes, parameters: r.parameters, seconds: +((performance.now() - t0) / 1000).toFixed(2) }));
}

main().catch((err: unknown) => {
  console.error(`make-model: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
