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

/**
 * Step sizes are grouped by powers of two: 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, ... tokens. A
 * decode step carries one token per generating sequence (1-32 tokens for up to 32 streams:
 * buckets 0-5); larger steps are prompt chunks (buckets from BIG_BUCKET up).
 */
const BUCKETS = 16;
const BIG_BUCKET = 6;
const bucketOf = (nTokens: number): number => (nTokens <= 1 ? 0 : Math.min(BUCKETS - 1, 32 - Math.clz32(nTokens - 1)));
/**
 * A prompt chunk on all threads this many times slower per token than their reference means
 * something else is taking the cores: about the speed-up that all threads give over one on a
 * prompt chunk (m100, 2 threads: 1.8-1.9x), so below it all threads still win without asking.
 */
const DEGRADED = 2;
/** Big steps between probes of all threads while 1 thread wins but the decode steps find all threads faster. */
const EARLY_PROBE = 8;

/**
 * Chooses, for each decode step, 1 thread or `maxThreads`, whichever has been faster for steps
 * of that size: the median of the last `window` per-token step times of each choice and size
 * bucket. Every `probeEvery`-th step of a bucket starts a burst of `probeBurst` steps on the
 * other choice, so a change in the machine's load (a busy neighbour arriving or leaving) is
 * seen. A small step (decode) that switched thread counts is not counted: its time includes
 * waking the pool (or the page-in of the weights on the very first step), which would make
 * every probe of the losing choice look worse than it is. A median, not a mean: the server
 * process preempting a compute thread now and then must not flip the choice (measured: with a
 * mean, the server at 2 threads settled on 1 thread and lost 25% on the demo model).
 *
 * Prompt chunks (33 tokens and up) are different: all threads win by 1.8-1.9x on an idle
 * machine, and a chunk is hundreds of milliseconds, so a 1-thread probe there is a prompt that
 * takes up to twice as long, which is what the p99 of time to first token measured (m100,
 * cold 1,077-token prompts, bench/prefill.ts). So a big step runs on all threads, after one
 * look at 1 thread per size bucket (the machine may be busy from the start), and probes
 * 1 thread only on evidence of contention: at once when all threads have become DEGRADED
 * times slower per token than their reference, or at the usual period while a decode bucket
 * finds 1 thread faster. Once 1 thread wins, all threads are probed at the usual period, or
 * every EARLY_PROBE big steps once the decode buckets find all threads faster again. A big step costs so much more than waking the pool that it counts even
 * right after a switch (which also lets a 53-token tail chunk, always preceded by a chunk of
 * another size, be measured at all).
 */
export class StepThreadTuner {
  readonly maxThreads: number;
  private readonly probeEvery: number;
  private readonly probeBurst: number;
  private readonly window: number;
  /** [(bucket * 2 + arm) * window + k]: recent ms per token; arm 0 is 1 thread, arm 1 maxThreads. */
  private readonly times: Float64Array;
  private readonly counts: Uint32Array;
  private readonly steps: Uint32Array;
  private readonly probing: Uint32Array;
  /**
   * Per big bucket: the reference ms per token on all threads, the lowest median seen (raised
   * by a probe that found 1 thread no faster).
   */
  private readonly ref: Float64Array;
  private readonly scratch: Float64Array;
  private lastThreads = 0;

  constructor(maxThreads: number, opts: { probeEvery?: number; probeBurst?: number; window?: number } = {}) {
    this.maxThreads = Math.max(1, Math.floor(maxThreads));
    this.probeEvery = opts.probeEvery ?? 160;
    this.probeBurst = opts.probeBurst ?? 4;
    this.window = opts.window ?? 5;
    this.times = new Float64Array(BUCKETS * 2 * this.window);
    this.counts = new Uint32Array(BUCKETS * 2);
    this.steps = new Uint32Array(BUCKETS);
    this.probing = new Uint32Array(BUCKETS);
    this.ref = new Float64Array(BUCKETS).fill(Infinity);
    this.scratch = new Float64Array(this.window);
  }

  private median(i: number): number {
    const n = Math.min(this.counts[i]!, this.window);
    const s = this.scratch.subarray(0, n);
    s.set(this.times.subarray(i * this.window, i * this.window + n));
    s.sort();
    return n % 2 ? s[n >> 1]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  }

  /**
   * What the decode buckets with both choices measured currently find faster: 1 thread if any
   * does (something else wants the cores), `maxThreads` if all do, 0 without any measured.
   */
  private decodeVerdict(): number {
    let verdict = 0;
    for (let d = 0; d < BIG_BUCKET; d++) {
      if (this.counts[d * 2]! < 2 || this.counts[d * 2 + 1]! < 2) continue;
      if (this.median(d * 2) < this.median(d * 2 + 1)) return 1;
      verdict = this.maxThreads;
    }
    return verdict;
  }

  /** Threads for a step of `nTokens` tokens. */
  choose(nTokens: number): number {
    if (this.maxThreads === 1) return 1;
    const b = bucketOf(nTokens);
    // Measure all threads first (the usual winner), then 1 thread, then exploit.
    if (this.counts[b * 2 + 1]! < 2) return this.maxThreads;
    if (b >= BIG_BUCKET) return this.chooseBig(b);
    if (this.counts[b * 2]! < 2) return 1;
    const many = this.median(b * 2 + 1) <= this.median(b * 2);
    if (this.probing[b]! > 0) {
      this.probing[b]!--;
      return many ? 1 : this.maxThreads;
    }
    if (++this.steps[b]! % this.probeEvery === 0) {
      this.probing[b] = this.probeBurst - 1;
      return many ? 1 : this.maxThreads;
    }
    return many ? this.maxThreads : 1;
  }

  /** A prompt chunk: all threads unless 1 thread was measured faster (see the class comment). */
  private chooseBig(b: number): number {
    const manyMs = this.median(b * 2 + 1);
    // One look at 1 thread, in case the machine was busy from the start.
    if (this.counts[b * 2]! === 0) return 1;
    const many = manyMs <= this.median(b * 2);
    if (this.probing[b]! > 0) {
      this.probing[b]!--;
      return many ? 1 : this.maxThreads;
    }
    const step = ++this.steps[b]!;
    const periodic = step % this.probeEvery === 0;
    let probe: boolean;
    if (!many) {
      // Has the neighbour left? Ask soon once the decode steps say so, else at the usual period.
      probe = periodic || (step % EARLY_PROBE === 0 && this.decodeVerdict() === this.maxThreads);
    } else if (manyMs > DEGRADED * this.ref[b]!) {
      // Much slower than before: try 1 thread now. The reference moves up to this level, so a
      // slowness that 1 thread does not beat (attention over a long prompt) is not probed again.
      probe = true;
      this.ref[b] = manyMs;
    } else {
      probe = periodic && this.decodeVerdict() === 1;
    }
    if (!probe) return many ? this.maxThreads : 1;
    // Every step of a big burst counts (no switch to discount), so one step fewer does.
    this.probing[b] = Math.max(1, this.probeBurst - 1) - 1;
    return many ? 1 : this.maxThreads;
  }

  /** Record how long a step of `nTokens` tokens took on `threads` threads. */
  record(nTokens: number, threads: number, ms: number): void {
    if (this.maxThreads === 1) return;
    const b = bucketOf(nTokens);
    const switched = threads !== this.lastThreads;
    const first = this.lastThreads === 0;
    this.lastThreads = threads;
    // a switch (or the very first step, the page-in): not representative of a small step
    if (first || (switched && b < BIG_BUCKET)) return;
    const i = b * 2 + (threads === 1 ? 0 : 1);
    const n = this.counts[i]!++;
    this.times[i * this.window + (n % this.window)] = ms / nTokens;
    if (threads !== 1 && b >= BIG_BUCKET && this.counts[i]! >= 3) this.ref[b] = Math.min(this.ref[b]!, this.median(i));
  }
}
