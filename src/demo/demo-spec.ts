// What the demo model is, in one place that loads nothing heavy: ensure-demo-model (main
// process) reads these without pulling in node-llama-cpp; the builder (child) uses them too.

import type { TensorTypeName } from "../gguf/writer.js";

/** Bump whenever the builder's output changes: it names the cache directory. */
export const DEMO_BUILDER_VERSION = "1";

export const DEMO_DEFAULTS: { vocabSize: number; tensorType: TensorTypeName; contextLength: number; servedContextSize: number } = {
  // Measured on 5 held-out files: 4096 gives 2.35 bits/char (2048: 2.56) for a 69 MB file.
  vocabSize: 4096,
  // F16 matches F32 within 0.004 logits. Q8_0 is not used: with llama.cpp's CPU kernels in
  // node-llama-cpp 3.22.1 its logits for this model change with the batch length (wrong for
  // batches of ~30+ tokens), although the same writer's Q8_0 is exact on ordinary models.
  tensorType: "f16",
  // A bigram model has no use for long context, but the server's slots do.
  contextLength: 4096,
  servedContextSize: 2048,
};
