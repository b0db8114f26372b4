// Token bigram counts and their interpolated Kneser-Ney smoothing. Dense V x V arrays: the
// demo vocabulary is a few thousand tokens, so 4096^2 cells (64 MiB of counts) beats a hash
// map in both speed and code size, and the builder runs in a short-lived child process.

import { MoltbotError } from "../errors.js";

export class BigramCounts {
  readonly counts: Uint32Array;
  total = 0;

  constructor(readonly vocabSize: number) {
    this.counts = new Uint32Array(vocabSize * vocabSize);
  }

  add(prev: number, next: number): void {
    this.counts[prev * this.vocabSize + next]!++;
    this.total++;
  }
}

export interface SmoothingOptions {
  /** Tokens the model may predict (normal, byte, end of text); all others get `floorLogProb`. */
  support: (token: number) => boolean;
  /** Pseudo-count added to every supported token's continuation count, so none has probability 0. */
  continuationPrior?: number;
  floorLogProb?: number;
}

/**
 * Natural-log P(next | prev) as a dense row-major [prev][next] matrix, interpolated
 * Kneser-Ney: discounted bigram counts plus the discounted mass spread over the continuation
 * distribution (how many distinct tokens precede `next`), the usual best choice for bigrams.
 * Contexts never seen use the continuation distribution alone.
 */
export function kneserNeyLogProbs(c: BigramCounts, opts: SmoothingOptions): { logProbs: Float32Array; discount: number } {
  const V = c.vocabSize;
  const prior = opts.continuationPrior ?? 0.5;
  const floor = opts.floorLogProb ?? -30;
  const rowTotal = new Float64Array(V);
  const rowTypes = new Float64Array(V);
  const colTypes = new Float64Array(V);
  let n1 = 0;
  let n2 = 0;
  let types = 0;
  for (let p = 0; p < V; p++) {
    const base = p * V;
    for (let n = 0; n < V; n++) {
      const k = c.counts[base + n]!;
      if (k === 0) continue;
      rowTotal[p]! += k;
      rowTypes[p]!++;
      colTypes[n]!++;
      types++;
      if (k === 1) n1++;
      else if (k === 2) n2++;
    }
  }
  if (types === 0) throw new MoltbotError("internal_error", "no bigrams counted");
  // Ney's estimate of the absolute discount.
  const discount = n1 + 2 * n2 > 0 ? n1 / (n1 + 2 * n2) : 0.75;

  const supported = new Uint8Array(V);
  let supportSize = 0;
  for (let t = 0; t < V; t++) if (opts.support(t)) (supported[t] = 1), supportSize++;
  const continuation = new Float64Array(V);
  const contTotal = types + prior * supportSize;
  for (let t = 0; t < V; t++) if (supported[t]) continuation[t] = (colTypes[t]! + prior) / contTotal;

  const logProbs = new Float32Array(V * V);
  for (let p = 0; p < V; p++) {
    const base = p * V;
    const total = rowTotal[p]!;
    const backoff = total > 0 ? (discount * rowTypes[p]!) / total : 1;
    for (let n = 0; n < V; n++) {
      if (!supported[n]) {
        logProbs[base + n] = floor;
        continue;
      }
      const k = c.counts[base + n]!;
      const direct = total > 0 ? Math.max(k - discount, 0) / total : 0;
      logProbs[base + n] = Math.log(direct + backoff * continuation[n]!);
    }
  }
  return { logProbs, discount };
}
