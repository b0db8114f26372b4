// The llama-architecture GGUF layout: which metadata keys llama.cpp requires and which tensors
// (names and GGUF dims, innermost first) a model of given hyper-parameters has. Callers only
// say what values each tensor holds, so the random model and the demo model share one layout.

import { MoltbotError } from "../errors.js";
import { spmVocabMetadata } from "./spm-vocab.js";
import type { SpmVocab } from "./spm-vocab.js";
import { gv, writeGguf } from "./writer.js";
import type { GgufTensor, GgufValue, TensorChunks, TensorTypeName, WriteGgufResult } from "./writer.js";

export interface LlamaHParams {
  vocabSize: number;
  embeddingLength: number;
  blockCount: number;
  headCount: number;
  headCountKv: number;
  feedForwardLength: number;
  contextLength: number;
  /** Per-head size of K and Q; defaults to embeddingLength / headCount. */
  keyLength?: number;
  /** Per-head size of V; defaults to keyLength. */
  valueLength?: number;
  rmsEpsilon?: number;
}

export interface LlamaTensorSpec {
  name: string;
  dims: number[];
  /** Matrices take the model's tensor type; norm vectors stay F32 as llama.cpp expects. */
  isNorm: boolean;
}

export function llamaTensorSpecs(h: LlamaHParams): LlamaTensorSpec[] {
  const d = h.embeddingLength;
  const kLen = h.keyLength ?? d / h.headCount;
  const vLen = h.valueLength ?? kLen;
  const specs: LlamaTensorSpec[] = [{ name: "token_embd.weight", dims: [d, h.vocabSize], isNorm: false }];
  for (let i = 0; i < h.blockCount; i++) {
    const p = `blk.${i}.`;
    specs.push(
      { name: `${p}attn_norm.weight`, dims: [d], isNorm: true },
      { name: `${p}attn_q.weight`, dims: [d, h.headCount * kLen], isNorm: false },
      { name: `${p}attn_k.weight`, dims: [d, h.headCountKv * kLen], isNorm: false },
      { name: `${p}attn_v.weight`, dims: [d, h.headCountKv * vLen], isNorm: false },
      { name: `${p}attn_output.weight`, dims: [h.headCount * vLen, d], isNorm: false },
      { name: `${p}ffn_norm.weight`, dims: [d], isNorm: true },
      { name: `${p}ffn_gate.weight`, dims: [d, h.feedForwardLength], isNorm: false },
      { name: `${p}ffn_up.weight`, dims: [d, h.feedForwardLength], isNorm: false },
      { name: `${p}ffn_down.weight`, dims: [h.feedForwardLength, d], isNorm: false },
    );
  }
  specs.push({ name: "output_norm.weight", dims: [d], isNorm: true }, { name: "output.weight", dims: [d, h.vocabSize], isNorm: false });
  return specs;
}

/** general.file_type (llama_ftype) for a model whose matrices are `type`. */
const FILE_TYPE: Record<TensorTypeName, number> = { f32: 0, f16: 1, q8_0: 7 };

export function llamaMetadata(h: LlamaHParams, vocab: SpmVocab, name: string, tensorType: TensorTypeName): Array<[string, GgufValue]> {
  const kLen = h.keyLength ?? h.embeddingLength / h.headCount;
  const md: Array<[string, GgufValue]> = [
    ["general.architecture", gv.str("llama")],
    ["general.name", gv.str(name)],
    ["general.alignment", gv.u32(32)],
    ["general.file_type", gv.u32(FILE_TYPE[tensorType])],
    ["llama.vocab_size", gv.u32(h.vocabSize)],
    ["llama.context_length", gv.u32(h.contextLength)],
    ["llama.embedding_length", gv.u32(h.embeddingLength)],
    ["llama.block_count", gv.u32(h.blockCount)],
    ["llama.feed_forward_length", gv.u32(h.feedForwardLength)],
    ["llama.attention.head_count", gv.u32(h.headCount)],
    ["llama.attention.head_count_kv", gv.u32(h.headCountKv)],
    ["llama.rope.dimension_count", gv.u32(kLen)],
    ["llama.rope.freq_base", gv.f32(10000)],
    ["llama.attention.layer_norm_rms_epsilon", gv.f32(h.rmsEpsilon ?? 1e-5)],
  ];
  if (h.keyLength !== undefined) md.push(["llama.attention.key_length", gv.u32(kLen)]);
  if (h.valueLength !== undefined || h.keyLength !== undefined) md.push(["llama.attention.value_length", gv.u32(h.valueLength ?? kLen)]);
  return [...md, ...spmVocabMetadata(vocab)];
}

export interface WriteLlamaModelOptions {
  hparams: LlamaHParams;
  vocab: SpmVocab;
  name: string;
  tensorType: TensorTypeName;
  /** Values of each tensor (ggml order: dims[0] fastest). */
  values: (spec: LlamaTensorSpec) => Float32Array | TensorChunks;
  /** More metadata after the model's own (e.g. `tokenizer.chat_template`). */
  extraMetadata?: Array<[string, GgufValue]>;
}

export function validateLlamaHParams(h: LlamaHParams, tensorType: TensorTypeName): void {
  const kLen = h.keyLength ?? h.embeddingLength / h.headCount;
  const problems: string[] = [];
  if (h.vocabSize !== undefined && h.vocabSize % 256 !== 0) problems.push("vocabSize must be a multiple of 256");
  if (!Number.isInteger(kLen) || kLen <= 0 || kLen % 2 !== 0) problems.push("head size must be an even integer (rope)");
  if (h.headCount % h.headCountKv !== 0) problems.push("headCount must be a multiple of headCountKv");
  const block = tensorType === "q8_0" ? 32 : 1;
  if (h.embeddingLength % block !== 0 || h.feedForwardLength % block !== 0 || (h.headCount * (h.valueLength ?? kLen)) % block !== 0) {
    problems.push(`row lengths must be multiples of ${block} for ${tensorType}`);
  }
  if (problems.length > 0) throw new MoltbotError("invalid_request", `bad llama hyper-parameters: ${problems.join("; ")}`);
}

export async function writeLlamaModel(path: string, opts: WriteLlamaModelOptions): Promise<WriteGgufResult> {
  const h = opts.hparams;
  validateLlamaHParams(h, opts.tensorType);
  if (opts.vocab.tokens.length !== h.vocabSize) {
    throw new MoltbotError("invalid_request", `vocabulary has ${opts.vocab.tokens.length} tokens, hparams say ${h.vocabSize}`);
  }
  const tensors: GgufTensor[] = llamaTensorSpecs(h).map((spec) => ({
    name: spec.name,
    dims: spec.dims,
    type: spec.isNorm ? "f32" : opts.tensorType,
    data: opts.values(spec),
  }));
  return writeGguf(path, { metadata: [...llamaMetadata(h, opts.vocab, opts.name, opts.tensorType), ...(opts.extraMetadata ?? [])], tensors });
}
