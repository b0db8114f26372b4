// The precisions `moltbot quantize` and the Quantizer take: the seed's names (fp16, int8, int4)
// and llama.cpp's own file types by name, each mapped to its llama_ftype (llama.h). Loads
// nothing heavy: the CLI's definition and usage checks read it.

export interface Precision {
  /** The name as the operator writes it, lower case (`q4_k_m`). */
  name: string;
  /** llama.h's llama_ftype. */
  ftype: number;
  /** llama.cpp's file type name, as `general.file_type` reads back (`Q4_K_M`). */
  fileType: string;
  /** The ggml type most weight matrices get (K-quant mixes keep some at a larger type on purpose). */
  mainType: string;
  describe: string;
}

// Only the types llama.cpp quantizes without an importance matrix: IQ1/IQ2 and Q2_K_S refuse
// to run without one, and an imatrix needs calibration text and a run of the model first.
const TABLE: readonly Precision[] = [
  { name: "f32", ftype: 0, fileType: "F32", mainType: "F32", describe: "32-bit float (no quantization)" },
  { name: "f16", ftype: 1, fileType: "F16", mainType: "F16", describe: "16-bit float" },
  { name: "bf16", ftype: 32, fileType: "BF16", mainType: "BF16", describe: "bfloat16" },
  { name: "q8_0", ftype: 7, fileType: "Q8_0", mainType: "Q8_0", describe: "8-bit, blocks of 32 with one scale" },
  { name: "q6_k", ftype: 18, fileType: "Q6_K", mainType: "Q6_K", describe: "6.6 bits per weight, K-quant" },
  { name: "q5_k_m", ftype: 17, fileType: "Q5_K_M", mainType: "Q5_K", describe: "5-bit K-quant, some tensors at Q6_K" },
  { name: "q5_k_s", ftype: 16, fileType: "Q5_K_S", mainType: "Q5_K", describe: "5-bit K-quant" },
  { name: "q5_1", ftype: 9, fileType: "Q5_1", mainType: "Q5_1", describe: "5-bit, blocks of 32 with scale and minimum" },
  { name: "q5_0", ftype: 8, fileType: "Q5_0", mainType: "Q5_0", describe: "5-bit, blocks of 32 with one scale" },
  { name: "q4_k_m", ftype: 15, fileType: "Q4_K_M", mainType: "Q4_K", describe: "4-bit K-quant, some tensors at Q6_K" },
  { name: "q4_k_s", ftype: 14, fileType: "Q4_K_S", mainType: "Q4_K", describe: "4-bit K-quant" },
  { name: "q4_1", ftype: 3, fileType: "Q4_1", mainType: "Q4_1", describe: "4-bit, blocks of 32 with scale and minimum" },
  { name: "q4_0", ftype: 2, fileType: "Q4_0", mainType: "Q4_0", describe: "4-bit, blocks of 32 with one scale" },
  { name: "iq4_nl", ftype: 25, fileType: "IQ4_NL", mainType: "IQ4_NL", describe: "4-bit non-linear, blocks of 32" },
  { name: "iq4_xs", ftype: 30, fileType: "IQ4_XS", mainType: "IQ4_XS", describe: "4.25-bit non-linear" },
  { name: "q3_k_l", ftype: 13, fileType: "Q3_K_L", mainType: "Q3_K", describe: "3-bit K-quant, more tensors at Q5_K" },
  { name: "q3_k_m", ftype: 12, fileType: "Q3_K_M", mainType: "Q3_K", describe: "3-bit K-quant, some tensors at Q4_K/Q5_K" },
  { name: "q3_k_s", ftype: 11, fileType: "Q3_K_S", mainType: "Q3_K", describe: "3-bit K-quant" },
  { name: "q2_k", ftype: 10, fileType: "Q2_K", mainType: "Q2_K", describe: "2-bit K-quant (large accuracy loss)" },
];

/** The seed's names (PRODUCT.md 3.1). */
export const PRECISION_ALIASES: Readonly<Record<string, string>> = { fp32: "f32", fp16: "f16", int8: "q8_0", int4: "q4_k_m" };

const BY_NAME = new Map(TABLE.map((p) => [p.name, p]));

/** Every accepted name, aliases first, for help texts and the unknown-precision message. */
export function precisionNames(): string[] {
  return [...Object.keys(PRECISION_ALIASES), ...TABLE.map((p) => p.name)];
}

/** The precision a name means (case-insensitive, `-` read as `_`), or undefined. */
export function findPrecision(name: string): Precision | undefined {
  const key = name.trim().toLowerCase().replaceAll("-", "_");
  return BY_NAME.get(PRECISION_ALIASES[key] ?? key);
}

/** Float types that hold unquantized weights: a model made of these is an original to quantize from. */
export const FLOAT_TYPES: ReadonlySet<string> = new Set(["F32", "F16", "BF16", "F64"]);

/** Short name for docs and version names: `int8` for q8_0, else the llama.cpp name. */
export function seedName(p: Precision): string {
  for (const [alias, name] of Object.entries(PRECISION_ALIASES)) if (name === p.name) return alias;
  return p.name;
}
