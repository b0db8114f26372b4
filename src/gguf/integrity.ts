// GGUF integrity without llama.cpp: the header, every tensor info, and whether the file is long
// enough to hold every tensor's data. A copy cut short (interrupted download, full disk) then
// fails at start with one clear line instead of llama.cpp's own error inside a worker.
// Cost: the header is read (the vocabulary dominates), no tensor data (docs/benchmarks.md).
import { stat } from "node:fs/promises";
import { MoltbotError } from "../errors.js";
import { GGUF_DEFAULT_ALIGNMENT, alignUp } from "./format.js";
import { readGgufLayout, type GgufTensorInfo } from "./reader.js";

export interface GgufIntegrity {
  tensorCount: number;
  /** Readable name of `general.file_type` ("Q8_0", "Q4_K_M"); null when the key is absent. */
  quantization: string | null;
  sizeBytes: number;
}

// Block layout of ggml types by ggml_type id: elements per block and bytes per block, as in
// ggml's type_traits (ggml.c); checked against the shipped libggml by test/gguf-integrity.test.ts.
// Hand-written: node-llama-cpp's GGUF reader would load that whole package into the main process.
const GGML_BLOCKS: Record<number, { name: string; blockElems: number; blockBytes: number }> = {
  0: { name: "F32", blockElems: 1, blockBytes: 4 },
  1: { name: "F16", blockElems: 1, blockBytes: 2 },
  2: { name: "Q4_0", blockElems: 32, blockBytes: 18 },
  3: { name: "Q4_1", blockElems: 32, blockBytes: 20 },
  6: { name: "Q5_0", blockElems: 32, blockBytes: 22 },
  7: { name: "Q5_1", blockElems: 32, blockBytes: 24 },
  8: { name: "Q8_0", blockElems: 32, blockBytes: 34 },
  9: { name: "Q8_1", blockElems: 32, blockBytes: 36 },
  10: { name: "Q2_K", blockElems: 256, blockBytes: 84 },
  11: { name: "Q3_K", blockElems: 256, blockBytes: 110 },
  12: { name: "Q4_K", blockElems: 256, blockBytes: 144 },
  13: { name: "Q5_K", blockElems: 256, blockBytes: 176 },
  14: { name: "Q6_K", blockElems: 256, blockBytes: 210 },
  15: { name: "Q8_K", blockElems: 256, blockBytes: 292 },
  16: { name: "IQ2_XXS", blockElems: 256, blockBytes: 66 },
  17: { name: "IQ2_XS", blockElems: 256, blockBytes: 74 },
  18: { name: "IQ3_XXS", blockElems: 256, blockBytes: 98 },
  19: { name: "IQ1_S", blockElems: 256, blockBytes: 50 },
  20: { name: "IQ4_NL", blockElems: 32, blockBytes: 18 },
  21: { name: "IQ3_S", blockElems: 256, blockBytes: 110 },
  22: { name: "IQ2_S", blockElems: 256, blockBytes: 82 },
  23: { name: "IQ4_XS", blockElems: 256, blockBytes: 136 },
  24: { name: "I8", blockElems: 1, blockBytes: 1 },
  25: { name: "I16", blockElems: 1, blockBytes: 2 },
  26: { name: "I32", blockElems: 1, blockBytes: 4 },
  27: { name: "I64", blockElems: 1, blockBytes: 8 },
  28: { name: "F64", blockElems: 1, blockBytes: 8 },
  29: { name: "IQ1_M", blockElems: 256, blockBytes: 56 },
  30: { name: "BF16", blockElems: 1, blockBytes: 2 },
  34: { name: "TQ1_0", blockElems: 256, blockBytes: 54 },
  35: { name: "TQ2_0", blockElems: 256, blockBytes: 66 },
  39: { name: "MXFP4", blockElems: 32, blockBytes: 17 },
  40: { name: "NVFP4", blockElems: 64, blockBytes: 36 },
  41: { name: "Q1_0", blockElems: 128, blockBytes: 18 },
};

/** ggml_type ids whose block layout we know (the rest are skipped by the size check). */
export const KNOWN_GGML_TYPES: ReadonlyMap<number, { name: string; blockElems: number; blockBytes: number }> = new Map(
  Object.entries(GGML_BLOCKS).map(([id, t]) => [Number(id), t]),
);

// llama_ftype, as llama.cpp's `llama_model_ftype_name` spells them (without "MOSTLY_").
const FILE_TYPES: Record<number, string> = {
  0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
  10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
  17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS",
  24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
  31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
};
// llama.cpp sets this bit when it guessed the file type.
const FTYPE_GUESSED = 1024;

export function fileTypeName(fileType: number): string {
  return FILE_TYPES[fileType & ~FTYPE_GUESSED] ?? `file_type ${fileType}`;
}

function bad(path: string, why: string): MoltbotError {
  return new MoltbotError("repository_invalid", `${path}: ${why}`);
}

/** Bytes of a tensor's data; undefined for a ggml type we do not know. */
function tensorBytes(path: string, t: GgufTensorInfo): number | undefined {
  const layout = GGML_BLOCKS[t.type];
  if (layout === undefined) return undefined;
  const [rowLength = 1, ...rest] = t.dims;
  if (rowLength % layout.blockElems !== 0) {
    throw bad(path, `tensor ${t.name}: row length ${rowLength} is not a multiple of ${layout.blockElems} (${layout.name} blocks)`);
  }
  let bytes = (rowLength / layout.blockElems) * layout.blockBytes;
  for (const d of rest) bytes *= d;
  if (!Number.isSafeInteger(bytes)) throw bad(path, `tensor ${t.name}: implausible dimensions [${t.dims.join(", ")}]`);
  return bytes;
}

/**
 * Parse the header and every tensor info and check that the file holds each tensor's data.
 * Throws MoltbotError("repository_invalid") with one line naming the file and the problem.
 */
export async function checkGgufIntegrity(path: string): Promise<GgufIntegrity> {
  const layout = await readGgufLayout(path);
  const { size } = await stat(path);
  if (layout.tensorCount === 0) throw bad(path, "GGUF has no tensors");

  const alignValue = layout.metadata.get("general.alignment");
  const alignment = alignValue === undefined ? GGUF_DEFAULT_ALIGNMENT : Number(alignValue);
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    throw bad(path, `general.alignment must be a power of two, got ${String(alignValue)}`);
  }
  const dataStart = alignUp(layout.infoEnd, alignment);
  if (dataStart > size) throw bad(path, `truncated GGUF: tensor data starts at byte ${dataStart} but the file has ${size} bytes`);

  // The first tensor (by position) that runs past the end is the one named.
  let cut: { name: string; end: number } | undefined;
  for (const t of layout.tensors) {
    if (t.offset % alignment !== 0) throw bad(path, `tensor ${t.name}: data offset ${t.offset} is not a multiple of the alignment ${alignment}`);
    const bytes = tensorBytes(path, t) ?? 0; // an unknown type: its start is still checked
    const end = dataStart + t.offset + bytes;
    if (end > size && (cut === undefined || end < cut.end)) cut = { name: t.name, end };
  }
  if (cut !== undefined) throw bad(path, `truncated GGUF: tensor ${cut.name} ends at byte ${cut.end} but the file has ${size} bytes`);

  const fileType = layout.metadata.get("general.file_type");
  const quantization = typeof fileType === "number" ? fileTypeName(fileType) : null;
  return { tensorCount: layout.tensorCount, quantization, sizeBytes: size };
}
