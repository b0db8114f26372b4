// Decode thread counts: the "auto" default, and the per-step choice between 1 thread and all
// of them that the FFI engine makes by measured speed.
//
// Why per step: ggml's CPU backend (the shipped one is built without OpenMP) synchronises its
// compute threads with ggml_barrier, a pure spin with no yield or sleep, once per graph node.
// When anything else wants one of the cores (the server's own process, a V8 GC thread,
// another worker), a compute thread is descheduled and the others spin out their time slice,
// so a decode step of a small model goes from ~1 ms to 15-35 ms. bench/engine-loop.ts --only
// ffi,ffi-fixed --hog 1 (one busy process beside it) on a 2-core VM, tok/s, 1 stream / 8:
//   demo: 1 thread 709 / 2525; 2 fixed, no pool 31 / 217; 2 tuned + pool 623 / 2542
//   m100: 1 thread 201 / 456;  2 fixed, no pool 22 / 225;  2 tuned + pool 200 / 418
// and without the busy process (--hog 0), where 2 threads pay:
//   demo: 1 thread 724 / 2563; 2 fixed, no pool 1133 / 4350; 2 tuned + pool 1217 / 4695
//   m100: 1 thread 195 / 461;  2 fixed, no pool 352 / 926;   2 tuned + pool 373 / 875
// No static count is right for both, so the engine times every llama_decode and keeps, per
// step size, whichever of 1 and N threads is faster, re-trying the other now and then.
import os from "node:os";
import type { EngineKind } from "./load-engine.js";

export function resolveThreads(setting: number | "auto", engine: EngineKind): number {
  if (setting !== "auto") return setting;
  const cores = os.availableParallelism();
  // node-llama-cpp's JS thread competes with its own compute threads: leave it a core. The FFI
  // engine can take every core because it falls back to 1 thread per step when that is faster
  // (StepThreadTuner).
  return engine === "node-llama-cpp" ? Math.max(1, cores - 1) : cores;
}

/** Step sizes are grouped by powers of two: 1, 2-3, 4-7, ... tokens. */
const BUCKETS = 16;
const bucketOf = (nTokens: number): number => Math.min(BUCKETS - 1, 31 - Math.clz32(Math.max(1, nTokens)));

/**
 * Chooses, for each decode step, 1 thread or `maxThreads`, whichever has been faster for steps
 * of that size: an exponential moving average of the milliseconds per step for each choice and
 * size bucket; the first step of each choice is not counted (page-in of the weights, graph
 * allocation); every `probeEvery`-th step of a bucket runs the other choice so a change in the
 * machine's load (a busy neighbour arriving or leaving) is seen within a few dozen steps.
 */
export class StepThreadTuner {
  readonly maxThreads: number;
  private readonly probeEvery: number;
  private readonly alpha: number;
  /** [bucket * 2 + arm]: arm 0 is 1 thread, arm 1 is maxThreads. NaN until measured. */
  private readonly msPerStep: Float64Array;
  private readonly samples: Uint32Array;
  private readonly steps: Uint32Array;

  constructor(maxThreads: number, opts: { probeEvery?: number; alpha?: number } = {}) {
    this.maxThreads = Math.max(1, Math.floor(maxThreads));
    this.probeEvery = opts.probeEvery ?? 64;
    this.alpha = opts.alpha ?? 0.3;
    this.msPerStep = new Float64Array(BUCKETS * 2).fill(NaN);
    this.samples = new Uint32Array(BUCKETS * 2);
    this.steps = new Uint32Array(BUCKETS);
  }

  /** Threads for a step of `nTokens` tokens. */
  choose(nTokens: number): number {
    if (this.maxThreads === 1) return 1;
    const b = bucketOf(nTokens);
    // Measure all threads first (the usual winner), then 1 thread, then exploit.
    if (this.samples[b * 2 + 1]! < 2) return this.maxThreads;
    if (this.samples[b * 2]! < 2) return 1;
    const many = this.msPerStep[b * 2 + 1]! <= this.msPerStep[b * 2]!;
    const probe = ++this.steps[b]! % this.probeEvery === 0;
    return many !== probe ? this.maxThreads : 1;
  }

  /** Record how long a step of `nTokens` tokens took on `threads` threads. */
  record(nTokens: number, threads: number, ms: number): void {
    if (this.maxThreads === 1) return;
    const i = bucketOf(nTokens) * 2 + (threads === 1 ? 0 : 1);
    const n = ++this.samples[i]!;
    if (n === 1) return; // warm-up step
    const prev = this.msPerStep[i]!;
    this.msPerStep[i] = n === 2 ? ms : prev + this.alpha * (ms - prev);
  }
}
