// The KV prefix cache's bookkeeping against a model of llama.cpp's cells: every operation it
// asks of the memory is replayed on a simulated cell table, and the cache's own count of used
// cells must always equal the table's.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { KvPrefixCache, type KvMemoryOps } from "../src/engine/kv-prefix-cache.js";

/** llama.cpp's unified KV cells in miniature: cell -> set of (seq, pos) that hold it. */
class SimulatedCells implements KvMemoryOps {
  /** seq -> position -> cell id */
  readonly seqs = new Map<number, Map<number, number>>();
  private nextCell = 0;
  readonly log: string[] = [];

  copyPrefix(src: number, dst: number, length: number): void {
    this.log.push(`cp ${src}->${dst} ${length}`);
    const from = this.seqs.get(src)!;
    const to = this.map(dst);
    for (let p = 0; p < length; p++) {
      assert.ok(from.has(p), `seq ${src} has no cell at ${p} to share`);
      to.set(p, from.get(p)!);
    }
  }

  removeFrom(seq: number, from: number): void {
    this.log.push(`rm ${seq} ${from}`);
    const m = this.map(seq);
    for (const p of [...m.keys()]) if (p >= from) m.delete(p);
  }

  /** What a decode does: a new cell for each new position. */
  decode(seq: number, pos: number): void {
    const m = this.map(seq);
    assert.ok(!m.has(pos), `seq ${seq} already has position ${pos}`);
    m.set(pos, this.nextCell++);
  }

  used(): number {
    const cells = new Set<number>();
    for (const m of this.seqs.values()) for (const c of m.values()) cells.add(c);
    return cells.size;
  }

  private map(seq: number): Map<number, number> {
    let m = this.seqs.get(seq);
    if (!m) this.seqs.set(seq, (m = new Map()));
    return m;
  }
}

/** Feed `tokens` after a lease, as the engine does: decode then record. */
function feed(cache: KvPrefixCache, cells: SimulatedCells, seq: number, tokens: number[]): void {
  for (const t of tokens) {
    cells.decode(seq, cache.lengthOf(seq));
    cache.append(seq, t);
  }
}

function run(cache: KvPrefixCache, cells: SimulatedCells, prompt: number[], generated: number[] = [], reuse = true): number {
  const lease = cache.acquire(prompt, reuse)!;
  assert.ok(lease, "a sequence id is free");
  feed(cache, cells, lease.seq, [...prompt.slice(lease.reused), ...generated]);
  assert.equal(cache.usedCells, cells.used(), "the cache counts exactly the cells llama.cpp holds");
  return lease.seq;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("KV prefix cache", () => {
  test("a prompt that reuses most of a finished sequence takes it over; its unreused tail goes", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 4, cells);
    const system = range(1, 50);
    const a = run(cache, cells, [...system, 100, 101], [7, 8]);
    cache.release(a, true);
    assert.equal(cache.peek([...system, 200]), 50);
    const lease = cache.acquire([...system, 200, 201], true)!;
    assert.equal(lease.reused, 50);
    assert.equal(lease.seq, a, "the same id, cut to the match");
    assert.ok(cells.log.includes(`rm ${a} 50`));
    feed(cache, cells, lease.seq, [200, 201]);
    assert.equal(cache.usedCells, 52);
    assert.equal(cache.usedCells, cells.used());
  });

  test("the last prompt token is always evaluated, even when the whole prompt is cached", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(100, 2, cells);
    const prompt = range(1, 10);
    cache.release(run(cache, cells, prompt), true);
    assert.equal(cache.acquire(prompt, true)!.reused, 9);
  });

  test("cache_prompt false reuses nothing", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(100, 2, cells);
    cache.release(run(cache, cells, range(1, 10)), true);
    assert.equal(cache.acquire(range(1, 12), false)!.reused, 0);
  });

  test("many running sequences share one prefix; ending one never frees cells another uses", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 8, cells);
    const prefix = range(1, 40);
    const first = run(cache, cells, [...prefix, 500]);
    const others = [501, 502, 503].map((t) => run(cache, cells, [...prefix, t], [t, t]));
    assert.equal(cache.usedCells, 40 + 1 + 3 * 3);
    // The first (running) sequence is cancelled and dropped: the prefix stays with the others.
    cache.release(first, false);
    assert.equal(cache.usedCells, cells.used());
    assert.equal(cache.usedCells, 40 + 3 * 3);
    for (const s of others) assert.equal(cells.seqs.get(s)!.size, 43, "each other sequence keeps all its cells");
  });

  test("an idle sequence the next prompt does not reuse is evicted, unless it was reused before", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 6, cells);
    const turn1 = range(1, 30);
    cache.release(run(cache, cells, turn1, [90]), true);
    // The next turn of the conversation reuses it: it is a hit and stays.
    const turn2 = run(cache, cells, [...turn1, 90, 91, 92]);
    cache.release(turn2, true);
    const unrelated = range(500, 20);
    cache.release(run(cache, cells, unrelated), true);
    // A third, unrelated prompt: the unrelated idle one (never reused) goes, the reused one stays.
    run(cache, cells, range(700, 10));
    assert.equal(cache.peek([...unrelated, 1]), 0);
    assert.equal(cache.peek([...turn1, 90, 0]), 31);
    assert.equal(cache.usedCells, cells.used());
  });

  test("eviction takes idle sequences least recently used first, never a running one", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(100, 6, cells);
    // Two idle sequences, each reused once (so they are kept), the older one used first.
    const old = range(1000, 30);
    cache.release(run(cache, cells, old), true);
    cache.release(run(cache, cells, [...old, 1]), true);
    const recent = range(2000, 30);
    cache.release(run(cache, cells, recent), true);
    cache.release(run(cache, cells, [...recent, 1]), true);
    const running = run(cache, cells, [...range(2000, 10), 3000]);
    assert.ok(cache.makeRoom(cache.freeCells + 20));
    assert.equal(cache.peek([...old, 1, 0]), 0, "the older idle sequence went first");
    assert.equal(cache.peek([...recent, 1, 0]), 31, "the recent one is still cached");
    assert.ok(!cache.makeRoom(95), "running cells are not evictable");
    assert.equal(cells.seqs.get(running)!.size, 11);
    assert.equal(cache.usedCells, cells.used());
  });

  test("limitIdle keeps at most a budget of cells that only idle sequences hold", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 8, cells);
    const shared = range(1, 20);
    const running = run(cache, cells, [...shared, 5]);
    for (const t of [100, 200, 300]) {
      // Reused once, so each stays cached after later unrelated prompts.
      cache.release(run(cache, cells, [...shared, ...range(t, 30)]), true);
      cache.release(run(cache, cells, [...shared, ...range(t, 30), 1]), true);
    }
    run(cache, cells, range(900, 5));
    assert.equal(cache.evictableCells(), 93);
    cache.limitIdle(62);
    assert.equal(cache.evictableCells(), 62);
    assert.equal(cache.peek([...shared, ...range(100, 30), 1, 0]), 20, "the oldest went: only the running sequence's prefix matches");
    assert.equal(cache.peek([...shared, ...range(300, 30), 1, 0]), 51, "the newest stays");
    assert.equal(cells.seqs.get(running)!.size, 21);
    assert.equal(cache.usedCells, cells.used());
  });

  test("evictable cells exclude those a running sequence shares", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 4, cells);
    cache.release(run(cache, cells, range(1, 20), [50, 51]), true);
    // The conversation goes on (a hit: it takes the id over and stays cached after), then a
    // prompt shares only its first 19 tokens.
    cache.release(run(cache, cells, [...range(1, 20), 50, 51], range(300, 20)), true);
    run(cache, cells, [...range(1, 20), 60]);
    assert.equal(cache.evictableCells(), 22, "only the idle sequence's own tail");
    assert.equal(cache.usedCells, cells.used());
  });

  test("with every id taken, a prompt takes over an idle sequence it shares a little with, cut to the match", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 2, cells);
    const p = range(1, 30);
    cache.release(run(cache, cells, p), true);
    const a = run(cache, cells, [...p, 1]);
    cache.release(a, true);
    const b = run(cache, cells, range(500, 10));
    assert.notEqual(b, a);
    cache.release(b, true);
    // 10 shared tokens of a 31-token sequence: not a hit, but the only way to an id.
    const lease = cache.acquire([...range(1, 10), 77], true)!;
    assert.equal(lease.seq, a);
    assert.equal(lease.reused, 10);
    assert.equal(cache.lengthOf(a), 10);
    assert.equal(cache.usedCells, cells.used());
  });

  test("truncate keeps a shared run intact for the other holders", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(1000, 3, cells);
    const a = run(cache, cells, range(1, 30));
    const b = run(cache, cells, [...range(1, 30), 99], [98]);
    cache.truncate(b, 10);
    assert.equal(cache.lengthOf(b), 10);
    assert.equal(cache.lengthOf(a), 30);
    assert.equal(cache.usedCells, cells.used());
    feed(cache, cells, b, [5, 6]);
    assert.equal(cache.usedCells, cells.used());
    cache.release(a, false);
    assert.equal(cache.usedCells, 12);
    assert.equal(cache.usedCells, cells.used());
  });

  test("a long random workload keeps the count exact", () => {
    const cells = new SimulatedCells();
    const cache = new KvPrefixCache(400, 6, cells);
    let rnd = 1;
    const next = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const running: number[] = [];
    for (let i = 0; i < 400; i++) {
      if (running.length > 0 && (running.length >= 3 || next() < 0.4)) {
        const s = running.splice(Math.floor(next() * running.length), 1)[0]!;
        cache.release(s, next() < 0.8);
      } else {
        const base = Math.floor(next() * 3) * 100;
        const prompt = [...range(base, 5 + Math.floor(next() * 30)), Math.floor(next() * 5)];
        const lease = cache.acquire(prompt, next() < 0.9);
        if (!lease) continue;
        if (!cache.makeRoom(prompt.length - lease.reused + 5)) {
          cache.release(lease.seq, false);
          continue;
        }
        feed(cache, cells, lease.seq, [...prompt.slice(lease.reused), 1, 2, 3]);
        if (next() < 0.2) cache.truncate(lease.seq, Math.floor(cache.lengthOf(lease.seq) / 2));
        running.push(lease.seq);
      }
      assert.equal(cache.usedCells, cells.used(), `step ${i}`);
      assert.ok(cache.usedCells <= 400);
    }
  });
});

describe("KV prefix cache saving idle sequences elsewhere", () => {
  /** Cells plus a store of saved sequences, as the engine's host memory cache does. */
  class SavingCells extends SimulatedCells {
    readonly saved: { seq: number; tokens: number[] }[] = [];
    saveIdle(seq: number, tokens: number[]): void {
      assert.equal(tokens.length, this.seqs.get(seq)!.size, "the tokens are the sequence's whole cells");
      this.saved.push({ seq, tokens });
    }
    /** What llama_state_seq_set_data does: new cells for positions 0..n-1. */
    load(seq: number, n: number): void {
      this.removeFrom(seq, 0);
      for (let p = 0; p < n; p++) this.decode(seq, p);
    }
  }

  test("an idle sequence the next prompt does not take over leaves the buffer, saved with its tokens", () => {
    const cells = new SavingCells();
    const cache = new KvPrefixCache(1000, 8, cells);
    const a = range(0, 100);
    run(cache, cells, a, [500, 501]);
    cache.release(0, true);
    run(cache, cells, range(1000, 50));
    assert.deepEqual(cells.saved.map((s) => s.tokens), [[...a, 500, 501]]);
    assert.equal(cache.usedCells, 50, "only the running sequence's cells remain");
  });

  test("restore puts a saved sequence back, cut to what the prompt shares, and the prompt takes it over", () => {
    const cells = new SavingCells();
    const cache = new KvPrefixCache(1000, 8, cells);
    const saved = range(0, 120);
    const prompt = [...range(0, 80), 9999];
    const seq = cache.restore(saved, 80, (s) => (cells.load(s, saved.length), true));
    assert.ok(seq >= 0);
    assert.equal(cache.usedCells, cells.used());
    assert.equal(cache.usedCells, 80, "the unshared tail was dropped");
    assert.equal(cache.peek(prompt), 80);
    const lease = cache.acquire(prompt, true)!;
    assert.deepEqual(lease, { seq, reused: 80 });
    feed(cache, cells, seq, [9999]);
    assert.equal(cache.usedCells, cells.used());
  });

  test("a failed load or a full buffer restores nothing and leaks no cell", () => {
    const cells = new SavingCells();
    const cache = new KvPrefixCache(100, 4, cells);
    assert.equal(cache.restore(range(0, 50), 50, () => false), -1);
    assert.equal(cache.usedCells, 0);
    run(cache, cells, range(0, 80));
    assert.equal(cache.restore(range(500, 50), 50, () => assert.fail("no room: must not load")), -1);
    assert.equal(cache.usedCells, 80);
  });
});
