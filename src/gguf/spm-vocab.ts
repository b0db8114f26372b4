// A SentencePiece-style ("llama" tokenizer.ggml.model) vocabulary laid out the way llama.cpp's
// SPM tokenizer expects: <unk>, <s>, </s>, then 256 byte-fallback tokens, then normal pieces.
// llama.cpp merges adjacent symbols by highest piece score and falls back to <0xNN> bytes for
// any symbol that is not a piece, so callers pass pieces in priority order and make sure every
// multi-character piece can be reached by merges (e.g. include all its prefixes).

import { MoltbotError } from "../errors.js";
import { gv } from "./writer.js";
import type { GgufValue } from "./writer.js";

/** llama_token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*). */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The word-boundary mark SentencePiece puts in place of a space. */
export const SPM_SPACE = "\u2581";

export interface SpmVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  unkId: number;
  bosId: number;
  eosId: number;
  /** Pieces that fitted (before padding). */
  usedPieces: number;
}

export const FIRST_BYTE_TOKEN = 3;
export const SPECIAL_AND_BYTE_TOKENS = 3 + 256;

/**
 * Builds a vocabulary of exactly `size` tokens. `pieces` come most-important first: the first
 * gets the highest score. Duplicates and pieces that do not fit are dropped; leftover slots
 * are filled with unused pieces that no text can produce.
 */
export function buildSpmVocab(pieces: Iterable<string>, size: number): SpmVocab {
  if (!Number.isInteger(size) || size < SPECIAL_AND_BYTE_TOKENS + 1) {
    throw new MoltbotError("invalid_request", `vocabulary size ${size} is too small (needs > ${SPECIAL_AND_BYTE_TOKENS})`);
  }
  const tokens: string[] = ["<unk>", "<s>", "</s>"];
  const types: number[] = [TokenType.unknown, TokenType.control, TokenType.control];
  const scores: number[] = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.byte);
    scores.push(0);
  }
  const seen = new Set(tokens);
  let rank = 0;
  for (const p of pieces) {
    if (tokens.length >= size) break;
    if (p.length === 0 || seen.has(p)) continue;
    seen.add(p);
    tokens.push(p);
    types.push(TokenType.normal);
    scores.push(-rank++);
  }
  const usedPieces = rank;
  // Unused filler: the control characters in the name can never appear in tokenized text.
  for (let i = 0; tokens.length < size; i++) {
    tokens.push(`\u0001unused_${i}\u0001`);
    types.push(TokenType.unused);
    scores.push(-1e9);
  }
  return {
    tokens,
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    unkId: 0,
    bosId: 1,
    eosId: 2,
    usedPieces,
  };
}

/** The tokenizer.ggml.* metadata for `vocab`. */
export function spmVocabMetadata(vocab: SpmVocab): Array<[string, GgufValue]> {
  return [
    ["tokenizer.ggml.model", gv.str("llama")],
    ["tokenizer.ggml.tokens", gv.strs(vocab.tokens)],
    ["tokenizer.ggml.scores", gv.f32s(vocab.scores)],
    ["tokenizer.ggml.token_type", gv.i32s(vocab.types)],
    ["tokenizer.ggml.unknown_token_id", gv.u32(vocab.unkId)],
    ["tokenizer.ggml.bos_token_id", gv.u32(vocab.bosId)],
    ["tokenizer.ggml.eos_token_id", gv.u32(vocab.eosId)],
    ["tokenizer.ggml.add_bos_token", gv.bool(true)],
    ["tokenizer.ggml.add_eos_token", gv.bool(false)],
    ["tokenizer.ggml.add_space_prefix", gv.bool(true)],
  ];
}

/** `word` with the SPM boundary mark, plus every prefix of it, shortest first: the merge path. */
export function wordWithPrefixes(word: string): string[] {
  const piece = SPM_SPACE + word;
  const chars = Array.from(piece);
  const out: string[] = [];
  for (let i = 2; i <= chars.length; i++) out.push(chars.slice(0, i).join(""));
  return out;
}
