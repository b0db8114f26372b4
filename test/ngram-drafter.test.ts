import { test } from "node:test";
import assert from "node:assert/strict";
import { NGRAM_DRAFT_POLICY, NgramDrafter, ngramKey } from "../src/engine/ngram-drafter.js";
import type { NgramDrafterOptions } from "../src/engine/ngram-drafter.js";

/** Deterministic PRNG (mulberry32) so every run sees the same sequences. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomTokens(n: number, vocab: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

/**
 * The specification, by brute force: the longest suffix (maxN down to minN) that occurred
 * earlier inside the window, its most recent earlier occurrence, and the k tokens after it
 * (continuing cyclically when the copy runs into the present).
 */
function reference(seq: readonly number[], k: number, minN: number, maxN: number, window: number): number[] {
  const total = seq.length;
  const lo = Math.max(0, total - window);
  for (let n = maxN; n >= minN; n--) {
    for (let end = total - 1; end - n >= lo; end--) {
      let same = true;
      for (let j = 0; j < n && same; j++) same = seq[end - n + j] === seq[total - n + j];
      if (!same) continue;
      const out: number[] = [];
      for (let j = 0; j < k; j++) out.push(end + j < total ? seq[end + j]! : out[j - (total - end)]!);
      return out;
    }
  }
  return [];
}

/** Pushes tokens until draft() proposes something; returns how many pushes that took. */
function pushesUntilDraft(d: NgramDrafter, source: () => number, limit: number): number {
  for (let i = 0; i < limit; i++) {
    if (d.draft(8).length > 0) return i;
    d.push(source());
  }
  return -1;
}

test("a repeating cycle of 5 drafts its exact continuation", () => {
  const cycle = [11, 22, 33, 44, 55];
  const prompt = [...cycle, ...cycle, ...cycle, 11, 22];
  const d = new NgramDrafter({ maxDraft: 8 });
  d.reset(prompt);
  assert.deepEqual(d.draft(4), [33, 44, 55, 11]);
  // The copy runs past the present by repeating the period.
  d.feedback(4, 4);
  assert.deepEqual(d.draft(8), [33, 44, 55, 11, 22, 33, 44, 55]);
  assert.deepEqual(d.draft(3), [33, 44, 55], "the caller's max caps the draft");
  for (const t of [33, 44, 55]) d.push(t);
  assert.deepEqual(d.draft(8), [11, 22, 33, 44, 55, 11, 22, 33]);
});

test("a run of one token drafts more of it", () => {
  const d = new NgramDrafter();
  d.reset([7, 7, 7]);
  assert.deepEqual(d.draft(4), [7, 7, 7, 7]);
});

test("random text over a large vocabulary drafts nothing", () => {
  const d = new NgramDrafter();
  const seq = randomTokens(5000, 50000, 1);
  d.reset(seq.slice(0, 1000));
  let drafted = 0;
  for (const t of seq.slice(1000)) {
    if (d.draft(8).length > 0) drafted++;
    d.push(t);
  }
  assert.equal(drafted, 0);
});

test("the longest matching suffix wins over a more recent shorter one", () => {
  const d = new NgramDrafter({ minNgram: 2, maxNgram: 3 });
  // "1 2 3" was followed by 100; the more recent "2 3" (after 9) by 200.
  d.reset([1, 2, 3, 100, 5, 6, 9, 2, 3, 200, 8, 1, 2, 3]);
  assert.deepEqual(d.draft(1), [100]);
  // With a suffix that only matches as a 2-gram, the 2-gram's continuation is used.
  d.reset([1, 2, 3, 100, 5, 6, 9, 2, 3, 200, 8, 4, 2, 3]);
  assert.deepEqual(d.draft(1), [200]);
});

test("the most recent earlier occurrence wins", () => {
  const d = new NgramDrafter({ minNgram: 2, maxNgram: 4 });
  d.reset([1, 2, 3, 4, 100, 9, 1, 2, 3, 4, 200, 9, 1, 2, 3, 4]);
  assert.deepEqual(d.draft(2), [200, 9]);
  d.push(300); // now "2 3 4 300" is new; the suffix "3 4 300" never occurred
  assert.deepEqual(d.draft(2), []);
});

test("drafts match a brute-force lookup on every step of small-vocabulary text", () => {
  for (const [opts, window, seed] of [
    [{ minNgram: 2, maxNgram: 4 }, 32768, 2],
    [{ minNgram: 1, maxNgram: 3 }, 32768, 3],
    // A small window: occurrences older than 64 tokens must be forgotten, and the index
    // rebuilds many times as entries go stale.
    [{ minNgram: 2, maxNgram: 4, window: 64 }, 64, 4],
  ] as [NgramDrafterOptions, number, number][]) {
    const seq = randomTokens(3000, 6, seed);
    const d = new NgramDrafter({ ...opts, maxDraft: 4 });
    d.reset(seq.slice(0, 100));
    let nonEmpty = 0;
    for (let i = 100; i < seq.length; i++) {
      const got = d.draft(4);
      const want = reference(seq.slice(0, i), 4, opts.minNgram!, opts.maxNgram!, window);
      assert.deepEqual(got, want, `step ${i} (window ${window})`);
      if (got.length > 0) nonEmpty++;
      d.push(seq[i]!);
    }
    assert.ok(nonEmpty > 2000, `the test exercised drafts (${nonEmpty})`);
  }
});

test("a window forgets what slid out of it", () => {
  const d = new NgramDrafter({ window: 64 });
  const filler = randomTokens(200, 1_000_000, 5).map((t) => t + 1000);
  d.reset([1, 2, 3, 4, 5, ...filler, 1, 2, 3]);
  assert.deepEqual(d.draft(4), []);
  d.reset([1, 2, 3, 4, 5, ...filler.slice(0, 40), 1, 2, 3]);
  assert.deepEqual(d.draft(2), [4, 5]);
});

test("two n-grams with the same key never draft each other's continuation", () => {
  // Birthday search for two different 2-grams whose keys collide in all 32 bits: they then
  // start probing at the same slot of any index size.
  const r = rng(6);
  const seen = new Map<number, [number, number]>();
  let pair: [[number, number], [number, number]] | undefined;
  for (let i = 0; i < 2_000_000 && pair === undefined; i++) {
    const g: [number, number] = [Math.floor(r() * 1e9), Math.floor(r() * 1e9)];
    const key = ngramKey(g, 2, 2);
    const prev = seen.get(key);
    if (prev !== undefined && (prev[0] !== g[0] || prev[1] !== g[1])) pair = [prev, g];
    else seen.set(key, g);
  }
  assert.ok(pair !== undefined, "found a colliding pair");
  const [a, b] = pair;
  assert.equal(ngramKey(a, 2, 2), ngramKey(b, 2, 2));
  const d = new NgramDrafter({ minNgram: 2, maxNgram: 2 });
  d.reset([...a, 42, 43, 7, ...b]);
  assert.deepEqual(d.draft(2), [], "b never occurred before: no draft");
  d.reset([...a, 42, 43, 7, ...b, 44, 8, ...a]);
  assert.deepEqual(d.draft(2), [42, 43], "a's own continuation, not b's");
  d.reset([...a, 42, 43, 7, ...b, 44, 8, ...b]);
  assert.deepEqual(d.draft(2), [44, 8]);
});

test("draft length grows on full acceptance and shrinks to the accepted run", () => {
  const cycle = [1, 2, 3, 4, 5, 6, 7];
  const d = new NgramDrafter({ maxDraft: 16 });
  d.reset([...cycle, ...cycle]);
  assert.equal(d.draft(100).length, NGRAM_DRAFT_POLICY.startLength);
  d.feedback(4, 4);
  assert.equal(d.draft(100).length, 8);
  d.feedback(8, 8);
  assert.equal(d.draft(100).length, 16);
  d.feedback(16, 16);
  assert.equal(d.draft(100).length, 16, "capped at maxDraft");
  d.feedback(16, 3);
  assert.equal(d.draft(100).length, 4, "accepted + 1");
  d.feedback(2, 2); // a draft cut short by the caller does not shrink the length
  assert.equal(d.draft(100).length, 4);
  d.feedback(4, 0);
  assert.equal(d.draft(100).length, 2, "halved on a total miss");
  assert.deepEqual(d.stats, { proposed: 50, accepted: 33, drafts: 6 });
  d.reset([...cycle, ...cycle]);
  assert.deepEqual(d.stats, { proposed: 0, accepted: 0, drafts: 0 }, "stats are per sequence");
});

test("repeated failures back off for a growing stretch, and a success recovers", () => {
  const P = NGRAM_DRAFT_POLICY;
  const cycle = [1, 2, 3, 4, 5];
  let at = 0;
  const next = () => cycle[at++ % cycle.length]!;
  const d = new NgramDrafter();
  const prompt = Array.from({ length: 20 }, next);
  d.reset(prompt);
  // Drafts are available (the text repeats), but the model rejects them.
  for (let i = 0; i < P.failsBeforeBackoff; i++) {
    const g = d.draft(8);
    assert.ok(g.length > 0);
    d.feedback(g.length, 0);
  }
  assert.equal(pushesUntilDraft(d, next, 10_000), P.backoffStart);
  let probe = d.draft(8);
  assert.equal(probe.length, P.probeLength);
  d.feedback(probe.length, 0); // a failed probe backs off twice as long
  assert.equal(pushesUntilDraft(d, next, 10_000), 2 * P.backoffStart);
  d.feedback(d.draft(8).length, 0);
  assert.equal(pushesUntilDraft(d, next, 10_000), 4 * P.backoffStart);
  // The back-off is capped.
  for (let i = 0; i < 12; i++) {
    d.feedback(d.draft(8).length, 0);
    assert.ok(pushesUntilDraft(d, next, 10_000) <= P.backoffMax);
  }
  d.feedback(d.draft(8).length, 0);
  assert.equal(pushesUntilDraft(d, next, 10_000), P.backoffMax);
  // A probe that is accepted ends the back-off: drafts come every step and grow again.
  probe = d.draft(8);
  d.feedback(probe.length, probe.length);
  assert.equal(d.draft(8).length, 2 * P.probeLength);
  d.push(next());
  assert.ok(d.draft(8).length > 0, "no back-off after a success");
  // And the next back-off starts short again.
  for (let i = 0; i < P.failsBeforeBackoff; i++) d.feedback(d.draft(8).length, 0);
  assert.equal(pushesUntilDraft(d, next, 10_000), P.backoffStart);
});

test("a sequence whose drafts always fail costs few draft tokens", () => {
  // Text that repeats (so drafts exist) but a model that never agrees.
  const seq = randomTokens(20_000, 4, 7);
  const d = new NgramDrafter();
  d.reset(seq.slice(0, 100));
  for (let i = 100; i < seq.length; i++) {
    const g = d.draft(8);
    if (g.length > 0) d.feedback(g.length, 0);
    d.push(seq[i]!);
  }
  assert.ok(d.stats.proposed < 150, `proposed ${d.stats.proposed} tokens over 20k steps`);
});

/** CPU milliseconds of fn: wall time on a shared 2-core box measures the neighbours too. */
function cpuMs(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

test("push and draft over 100k tokens run well under a second", (t) => {
  for (const vocab of [4, 50, 50000]) {
    const seq = randomTokens(100_000, vocab, 8);
    const d = new NgramDrafter({ window: 32768 });
    const ms = cpuMs(() => {
      d.reset(seq.slice(0, 4096));
      for (let i = 4096; i < seq.length; i++) {
        const g = d.draft(8);
        if (g.length > 0) {
          let acc = 0;
          while (acc < g.length && g[acc] === seq[i + acc]) acc++;
          d.feedback(g.length, acc);
        }
        d.push(seq[i]!);
      }
    });
    t.diagnostic(`vocab ${vocab}: ${ms.toFixed(0)} ms cpu, ${JSON.stringify(d.stats)}`);
    assert.ok(ms < 1000, `vocab ${vocab}: ${ms.toFixed(0)} ms`);
  }
  // Highly repetitive text: every lookup hits, drafts are long.
  const cycle = randomTokens(37, 50000, 9);
  const d = new NgramDrafter();
  const ms = cpuMs(() => {
    d.reset(cycle);
    for (let i = 0; i < 100_000; i++) {
      const g = d.draft(8);
      if (g.length > 0) d.feedback(g.length, g.length);
      d.push(cycle[i % cycle.length]!);
    }
  });
  t.diagnostic(`repetitive: ${ms.toFixed(0)} ms cpu, ${JSON.stringify(d.stats)}`);
  assert.ok(ms < 1000, `repetitive: ${ms.toFixed(0)} ms`);
  assert.ok(d.stats.accepted > 90_000);
});

test("bad options are rejected", () => {
  assert.throws(() => new NgramDrafter({ minNgram: 0 }), /minNgram/);
  assert.throws(() => new NgramDrafter({ minNgram: 4, maxNgram: 2 }), /maxNgram/);
  assert.throws(() => new NgramDrafter({ maxDraft: 1.5 }), /maxDraft/);
});
