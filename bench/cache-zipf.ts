// A question-answering workload against the response cache: questions drawn from a catalogue
// with Zipf-distributed popularity (question k asked with probability ~ 1/k^s), replayed through
// HTTP against the demo model with the cache on (memory only, capacity K entries, so the
// capacity is exact) and off. Prints the measured hit rate, the throughput with and without the
// cache, and beside them, computed offline on the same request sequence: LRU at capacity K (what
// the server should reach), Belady's optimum at K (evict the entry used farthest in the future:
// no policy of that capacity does better) and the compulsory-miss bound (infinite capacity).
// A grid of other exponents and capacities follows, simulated only.
//
//   flock /tmp/moltbot-cpu.lock node --import tsx bench/cache-zipf.ts [--exponent 1.0] [--catalogue 1000] [--capacity 100] [--requests 3000] [--uncached 300] [--clients 4] [--tokens 16]
import { parseArgs } from "node:util";
import { commandLine, machine } from "./lib.js";
import { startCacheServer, timedAsk } from "./cache-lib.js";
import { mulberry32 } from "../src/gguf/random-model.js";

const { values } = parseArgs({
  options: {
    exponent: { type: "string", default: "1.0" },
    catalogue: { type: "string", default: "1000" },
    capacity: { type: "string", default: "100" },
    requests: { type: "string", default: "3000" },
    uncached: { type: "string", default: "300" },
    clients: { type: "string", default: "4" },
    tokens: { type: "string", default: "16" },
    seed: { type: "string", default: "1" },
  },
});
const S = Number(values.exponent);
const C = Number(values.catalogue);
const K = Number(values.capacity);
const R = Number(values.requests);
const CLIENTS = Number(values.clients);
const TOKENS = Number(values.tokens);

export function zipfSequence(s: number, catalogue: number, n: number, seed: number): number[] {
  const cdf: number[] = [];
  let sum = 0;
  for (let k = 1; k <= catalogue; k++) cdf.push((sum += 1 / k ** s));
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const u = rnd() * sum;
    let lo = 0;
    let hi = catalogue - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  });
}

export function lruHits(seq: number[], capacity: number): number {
  const lru = new Map<number, true>();
  let hits = 0;
  for (const q of seq) {
    if (lru.has(q)) {
      hits++;
      lru.delete(q);
    } else if (lru.size >= capacity) {
      lru.delete(lru.keys().next().value!);
    }
    lru.set(q, true);
  }
  return hits;
}

/** Belady's MIN: on a miss with a full cache, evict the entry whose next request is farthest away. */
export function beladyHits(seq: number[], capacity: number): number {
  const next = new Array<number>(seq.length);
  const seen = new Map<number, number>();
  for (let i = seq.length - 1; i >= 0; i--) {
    next[i] = seen.get(seq[i]!) ?? Infinity;
    seen.set(seq[i]!, i);
  }
  const nextUse = new Map<number, number>();
  let hits = 0;
  for (let i = 0; i < seq.length; i++) {
    const q = seq[i]!;
    if (nextUse.has(q)) hits++;
    else if (nextUse.size >= capacity) {
      let victim = -1;
      let far = -1;
      for (const [k, t] of nextUse) if (t > far) (far = t), (victim = k);
      // Never caching the new one is as good when it comes back later than every cached entry.
      if (next[i]! >= far) continue;
      nextUse.delete(victim);
    }
    nextUse.set(q, next[i]!);
  }
  return hits;
}

const compulsoryHits = (seq: number[]) => seq.length - new Set(seq).size;
const pct = (x: number, n: number) => `${((100 * x) / n).toFixed(1)}%`;
const question = (k: number) => `Question ${k}: what is the answer to catalogue entry number ${k}?`;

/** Replays `seq` with `clients` concurrent clients; requests per second and the cache headers seen. */
async function replay(url: string, seq: number[]): Promise<{ rps: number; headers: Map<string, number> }> {
  const headers = new Map<string, number>();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next < seq.length) {
        const r = await timedAsk(url, question(seq[next++]!), TOKENS);
        headers.set(r.cache, (headers.get(r.cache) ?? 0) + 1);
      }
    }),
  );
  return { rps: (seq.length * 1000) / (performance.now() - t0), headers };
}

console.log(commandLine());
console.log(machine());
const seq = zipfSequence(S, C, R, Number(values.seed));
console.log(`Zipf exponent s=${S}, catalogue ${C} questions, ${R} requests, cache capacity ${K} entries (${pct(K, C)} of the catalogue), ${CLIENTS} clients, demo model, ${TOKENS}-token greedy answers`);

const cached = await startCacheServer(`{ mode: deterministic, l1: { max_entries: ${K} }, l2: { enabled: false } }`);
let withCache;
try {
  withCache = await replay(cached.url, seq);
} finally {
  await cached.stop();
}
const hits = (withCache.headers.get("hit-l1") ?? 0) + (withCache.headers.get("hit-l2") ?? 0);
const plain = await startCacheServer("{ mode: off }");
let without;
try {
  without = await replay(plain.url, seq.slice(0, Number(values.uncached)));
} finally {
  await plain.stop();
}
console.log(`measured hit rate (server, LRU at ${K}): ${pct(hits, R)}  [${[...withCache.headers].map(([h, n]) => `${h} ${n}`).join(", ")}]`);
console.log(`offline on the same sequence: LRU ${pct(lruHits(seq, K), R)}, Belady optimum ${pct(beladyHits(seq, K), R)}, infinite capacity ${pct(compulsoryHits(seq), R)}`);
console.log(`throughput: ${withCache.rps.toFixed(1)} req/s with the cache (all ${R} requests), ${without.rps.toFixed(1)} req/s without (first ${Number(values.uncached)} requests, cache.mode off): x${(withCache.rps / without.rps).toFixed(1)}`);

console.log(`\nsimulated only (same generator, ${R} requests, catalogue ${C}): hit rate LRU / Belady`);
const caps = [0.05, 0.1, 0.2].map((f) => Math.round(f * C));
console.log(`  s     ${caps.map((k) => `K=${k}`.padEnd(16)).join("")}`);
for (const s of [0.8, 1.0, 1.2]) {
  const q = zipfSequence(s, C, R, Number(values.seed));
  console.log(`  ${s.toFixed(1)}   ${caps.map((k) => `${pct(lruHits(q, k), R)} / ${pct(beladyHits(q, k), R)}`.padEnd(16)).join("")}`);
}
