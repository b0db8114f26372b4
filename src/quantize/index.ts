// The `moltbot/quantization` library (package.json "exports"): the Quantizer of PRODUCT.md 3.1.
//   import { Quantizer } from "moltbot/quantization";
//   await new Quantizer({ modelPath: "v2.0/weights.bin" }).convert({ precision: "int8", outputPath: "v2.0-int8/weights.bin" });
// Nothing here loads llama.cpp: the conversion runs in a child process.
export { Quantizer, sha256File } from "./quantizer.js";
export type { ConvertOptions, ConvertResult, QuantizeProgress, QuantizerOptions, TensorFallback } from "./quantizer.js";
export { findPrecision, precisionNames, PRECISION_ALIASES } from "./precisions.js";
export type { Precision } from "./precisions.js";
