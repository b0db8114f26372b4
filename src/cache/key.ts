// The response cache's key: SHA-256 over the canonical JSON of everything that decides a
// generation's output. The prompt and the whole normalized `GenerationParams` go in as they are
// (safe-stable-stringify sorts object keys), so a parameter added later (tools, grammar,
// response_format turned into a grammar) is part of the key without a change here.
import { createHash } from "node:crypto";
import { stringify } from "safe-stable-stringify";
import type { GenerationParams } from "../engine/types.js";
import type { PromptInput } from "../workers/protocol.js";

/** Bump when what a key covers changes, so stored entries of an older layout are never found. */
const KEY_LAYOUT = 1;

export interface KeyParts {
  /** The pool entry that serves (its budget cap and pricing are its own). */
  entry: string;
  /** The repository model and the exact version that runs the request. */
  model: string;
  version: string;
  /**
   * The entry's `budget.max_tokens`: the pool shortens max_tokens to it minus the prompt, so a
   * completion cut by the cap is a different answer from the uncapped one.
   */
  budgetMaxTokens: number | null;
  /** The worker's context per sequence: a null max_tokens runs until it is full. */
  contextSize: number | null;
  prompt: PromptInput;
  params: GenerationParams;
}

export function cacheKey(parts: KeyParts): string {
  // cachePrompt only says whether KV cells may be reused: the output is the same either way.
  const { cachePrompt: _reuse, ...params } = parts.params;
  const canonical = stringify({ layout: KEY_LAYOUT, ...parts, params });
  return createHash("sha256").update(canonical ?? "").digest("hex");
}

/** Greedy, or sampled from an explicit seed: the same request gives the same answer. */
export function isDeterministic(params: GenerationParams): boolean {
  return params.temperature === 0 || params.seed !== undefined;
}
