// StepThreadTuner on prompt chunks: a 1,077-token prompt is fed as steps of 512, 512 and 53
// tokens. On an idle machine those run on all threads every time (a 1-thread probe there is a
// prompt that takes ~1.7x as long, the p99 of time to first token); under a busy neighbour they
// still find 1 thread when it is faster. Decode-step behaviour is covered in ffi-engine.test.ts.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { StepThreadTuner } from "../src/engine/threads.js";

/** ms for a step of `n` tokens on `threads` threads. */
type Cost = (n: number, threads: number) => number;

/** Feed `prompts` prompts of `chunks` (and `decode` 1-token steps after each); the threads chosen per step. */
function drive(tuner: StepThreadTuner, prompts: number, chunks: number[], cost: Cost, decode = 0): { chunk: number[][]; decode: number[] } {
  const out = { chunk: [] as number[][], decode: [] as number[] };
  for (let p = 0; p < prompts; p++) {
    const chosen: number[] = [];
    for (const n of chunks) {
      const t = tuner.choose(n);
      tuner.record(n, t, cost(n, t));
      chosen.push(t);
    }
    out.chunk.push(chosen);
    for (let i = 0; i < decode; i++) {
      const t = tuner.choose(1);
      tuner.record(1, t, cost(1, t));
      out.decode.push(t);
    }
  }
  return out;
}

const share = (xs: number[], v: number) => xs.filter((x) => x === v).length / xs.length;
const CHUNKS = [512, 512, 53];
// Idle 2-core machine, m100-like: 2 threads 1.8x faster on chunks, 1.6x on decode steps.
const idle: Cost = (n, t) => (n === 1 ? (t === 2 ? 3 : 5) : n * (t === 2 ? 0.6 : 1.1));
// A busy neighbour: 2 threads spin in ggml's barrier waiting for a descheduled thread.
const busy: Cost = (n, t) => (n === 1 ? (t === 2 ? 40 : 5.2) : n * (t === 2 ? 2.5 : 1.15));

describe("step thread tuner on prompt chunks", () => {
  test("an idle machine: every prompt chunk on all threads, decode steps still probed", () => {
    const tuner = new StepThreadTuner(2);
    const r = drive(tuner, 600, CHUNKS, idle, 4);
    // one look at 1 thread per chunk size, in the first prompts, then never again
    assert.deepEqual(r.chunk.slice(0, 5).flat().filter((t) => t !== 2), [1, 1]);
    assert.deepEqual(r.chunk.slice(5).flat().filter((t) => t !== 2), [], "no prompt chunk on 1 thread");
    assert.ok(share(r.decode, 1) > 0 && share(r.decode, 1) < 0.04, `decode on 1 thread ${share(r.decode, 1)}`);
  });

  test("prompts alone (no decode steps): no 1-thread chunk, also when later chunks cost more per token", () => {
    // attention over the cells already filled: later chunks of a prompt cost more per token
    let i = 0;
    const positional: Cost = (n, t) => idle(n, t) * (n === 512 ? [1, 1.3, 1.6][i++ % 3]! : 1);
    const chosen = drive(new StepThreadTuner(2), 600, [512, 512, 512, 53], positional);
    assert.deepEqual(chosen.chunk.slice(5).flat().filter((t) => t !== 2), []);
  });

  test("a busy neighbour seen by decode steps: chunks try 1 thread, take it, and go back once it leaves", () => {
    const tuner = new StepThreadTuner(2);
    drive(tuner, 50, CHUNKS, idle, 8);
    const during = drive(tuner, 300, CHUNKS, busy, 8);
    const late = during.chunk.slice(-200).flat();
    assert.ok(share(late, 1) > 0.95, `chunks on 1 thread under contention: ${share(late, 1)}`);
    assert.ok(share(during.decode.slice(-1000), 1) > 0.95);
    const after = drive(tuner, 300, CHUNKS, idle, 8);
    const back = after.chunk.slice(-200).flat();
    assert.deepEqual(back.filter((t) => t !== 2), [], "all threads again, and no more 1-thread probes");
  });

  test("a busy neighbour and prompts alone: all threads far slower than their best also counts", () => {
    const tuner = new StepThreadTuner(2);
    drive(tuner, 20, CHUNKS, idle);
    const during = drive(tuner, 300, CHUNKS, busy);
    const late = during.chunk.slice(-100).map((c) => c[1]!);
    assert.ok(share(late, 1) > 0.95, `512-token chunks on 1 thread under contention: ${share(late, 1)}`);
  });

  test("a machine busy from the start, prompts alone: the one look at 1 thread finds it", () => {
    const r = drive(new StepThreadTuner(2), 300, CHUNKS, busy);
    assert.ok(share(r.chunk.slice(10).flat(), 1) > 0.95, `chunks on 1 thread ${share(r.chunk.slice(10).flat(), 1)}`);
  });

  test("a slowness 1 thread does not beat is probed once, not again and again", () => {
    const tuner = new StepThreadTuner(2);
    drive(tuner, 20, CHUNKS, idle);
    // all threads 2.2x slower, 1 thread 2.5x: not a neighbour worth yielding to
    const r = drive(tuner, 300, CHUNKS, (n, t) => idle(n, t) * (n === 1 ? 1 : t === 2 ? 2.2 : 2.5));
    // one burst of tries per chunk size (3 steps, and one more on the stale idle sample), then no more
    const ones = r.chunk.flat().filter((t) => t === 1).length;
    assert.ok(ones > 0 && ones <= 8, `${ones} chunks on 1 thread`);
    assert.deepEqual(r.chunk.slice(50).flat().filter((t) => t === 1), []);
  });

  test("a switch before a big step is no reason to discard it: the 53-token tail is judged too", () => {
    // Tail chunks always follow a 512-token chunk, and a 1-thread tail that is faster must win.
    const tuner = new StepThreadTuner(2);
    const tailFaster: Cost = (n, t) => (n === 53 ? (t === 2 ? 40 : 20) : idle(n, t));
    // a decode bucket that prefers 1 thread: the machine counts as contended, so 1 thread is tried
    const cost: Cost = (n, t) => (n === 1 ? (t === 2 ? 6 : 5) : tailFaster(n, t));
    const r = drive(tuner, 400, CHUNKS, cost, 4);
    assert.ok(share(r.chunk.slice(-100).map((c) => c[2]!), 1) > 0.95);
    assert.ok(share(r.chunk.slice(-100).map((c) => c[0]!), 2) > 0.95);
  });
});
