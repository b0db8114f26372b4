// Random-weight llama models for tests (`tiny`: loads in milliseconds) and benchmarks (`m100`:
// ~98M parameters, the cost of a real small model). The weights are noise but the file is a
// complete llama GGUF with a real SentencePiece vocabulary, so everything from tokenization
// to sampling runs exactly as it would on a downloaded model.

import { MoltbotError } from "../errors.js";
import { writeLlamaModel } from "./llama-model.js";
import type { LlamaHParams } from "./llama-model.js";
import { SPM_SPACE, buildSpmVocab, wordWithPrefixes } from "./spm-vocab.js";
import type { SpmVocab } from "./spm-vocab.js";
import { gv, type TensorTypeName, type WriteGgufResult } from "./writer.js";

export type RandomLlamaOptions = Required<Omit<LlamaHParams, "keyLength" | "valueLength" | "rmsEpsilon">> & {
  tensorType: TensorTypeName;
  seed: number;
  /**
   * Half-range of the uniform weights, over sqrt(3) (their std). Default 0.02 (GPT-2's init):
   * near-uniform next-token distributions. Larger values give decisive logits, for tests that
   * compare greedy outputs across batch layouts (near-ties flip on float rounding).
   */
  weightStd?: number;
  /** A Jinja chat template for `tokenizer.chat_template` (none by default). */
  chatTemplate?: string;
};

export type RandomModelPreset = "tiny" | "m100";

export const RANDOM_MODEL_PRESETS: Readonly<Record<RandomModelPreset, Readonly<RandomLlamaOptions>>> = {
  // 139,584 parameters, 571 KB as F32.
  tiny: { vocabSize: 512, embeddingLength: 64, blockCount: 2, headCount: 4, headCountKv: 2, feedForwardLength: 128, contextLength: 512, tensorType: "f32", seed: 1 },
  // 97,536,768 parameters: 12 x 7,079,424 (blocks) + 2 x 8192 x 768 (embeddings, output) + 768; ~104 MB as Q8_0.
  m100: { vocabSize: 8192, embeddingLength: 768, blockCount: 12, headCount: 12, headCountKv: 12, feedForwardLength: 2048, contextLength: 2048, tensorType: "q8_0", seed: 1 },
};

export function randomModelOptions(preset: RandomModelPreset, overrides: Partial<RandomLlamaOptions> = {}): RandomLlamaOptions {
  const base = RANDOM_MODEL_PRESETS[preset];
  if (base === undefined) throw new MoltbotError("invalid_request", `unknown model preset '${String(preset)}' (tiny, m100)`);
  return { ...base, ...overrides };
}

export async function writeRandomLlamaModel(path: string, opts: RandomLlamaOptions): Promise<WriteGgufResult> {
  const hparams: LlamaHParams = { ...opts };
  const vocab = englishVocab(opts.vocabSize);
  const rng = mulberry32(opts.seed);
  // Small uniform noise (std ~0.02, GPT-2's init) keeps activations finite through any depth.
  const scale = (opts.weightStd ?? 0.02) * Math.sqrt(3);
  return writeLlamaModel(path, {
    hparams,
    vocab,
    name: `random-llama-${opts.vocabSize}v-${opts.embeddingLength}d-${opts.blockCount}l`,
    tensorType: opts.tensorType,
    ...(opts.chatTemplate === undefined ? {} : { extraMetadata: [["tokenizer.chat_template", gv.str(opts.chatTemplate)]] }),
    values: (spec) => {
      const n = spec.dims.reduce((a, b) => a * b, 1);
      if (spec.isNorm) return new Float32Array(n).fill(1);
      // Streamed in 64K-value chunks: m100 never holds a whole matrix twice.
      return function* chunks() {
        const size = 1 << 16;
        for (let done = 0; done < n; done += size) {
          const chunk = new Float32Array(Math.min(size, n - done));
          for (let i = 0; i < chunk.length; i++) chunk[i] = (rng() * 2 - 1) * scale;
          yield chunk;
        }
      };
    },
  });
}

/** Deterministic 32-bit PRNG in [0, 1): same seed, same model bytes. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Frequent English words; each enters with all its "▁"-prefixes so SPM merges can reach it.
const COMMON_WORDS = (
  "the of and to a in is that for it as was with be by on not he I this are or his from at which " +
  "but have an they you were her she there been one all we their has would when if so no will more " +
  "can who out up about them some could into its time than two other may then do first any like my " +
  "now over such our man me even most made after also did many before must through back years where " +
  "much your way well down should because each just those people how too little state good very make " +
  "world still own see men work long get here between both life being under never day same another " +
  "know while last might us great old year off come since against go came right used take three " +
  "The It In He A But This And There They We I'm said what new only these"
).split(" ");

function englishVocab(size: number): SpmVocab {
  const pieces: string[] = [SPM_SPACE];
  for (let c = 0x20; c < 0x7f; c++) if (c !== 0x20) pieces.push(String.fromCharCode(c));
  for (const w of COMMON_WORDS) pieces.push(...wordWithPrefixes(w));
  // Filler that text can still produce (unused-type tokens detokenize to nothing, which would
  // make a big random model "generate" empty strings): "▁x", "▁xy", "xy", then "▁xyz", each
  // reachable by SPM merges from its prefix.
  const lower = Array.from("abcdefghijklmnopqrstuvwxyz");
  const upper = lower.map((c) => c.toUpperCase());
  for (const c of [...lower, ...upper]) pieces.push(SPM_SPACE + c);
  for (const a of lower) for (const b of lower) pieces.push(SPM_SPACE + a + b);
  for (const a of lower) for (const b of lower) pieces.push(a + b);
  for (const a of lower) for (const b of lower) for (const c of lower) pieces.push(SPM_SPACE + a + b + c);
  return buildSpmVocab(pieces, size);
}
