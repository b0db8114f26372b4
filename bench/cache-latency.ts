// What a response-cache hit costs beside a miss, on the demo model, through HTTP: the latency of
// a whole greedy chat request answered by the model (miss), from memory (L1 hit) and from the
// SQLite store after a restart emptied memory (L2 hit, which then fills L1). One client, one
// request at a time, so the figures are the request path's own.
//
//   flock /tmp/moltbot-cpu.lock node --import tsx bench/cache-latency.ts [--questions 100] [--tokens 32] [--repeats 5]
import { parseArgs } from "node:util";
import { commandLine, machine, percentile } from "./lib.js";
import { startCacheServer, timedAsk } from "./cache-lib.js";

const { values } = parseArgs({ options: { questions: { type: "string", default: "100" }, tokens: { type: "string", default: "32" }, repeats: { type: "string", default: "5" } } });
const N = Number(values.questions);
const TOKENS = Number(values.tokens);
const REPEATS = Number(values.repeats);
const questions = Array.from({ length: N }, (_, i) => `Question ${i}: what did the committee decide about item ${i}?`);

const CACHE = "{ mode: deterministic, l1: { max_entries: 10000 }, l2: { enabled: true } }";
const fmt = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(2)} ms, p99 ${percentile(xs, 99).toFixed(2)} ms (n=${xs.length})`;

console.log(commandLine());
console.log(machine());
let srv = await startCacheServer(CACHE);
const dataDir = srv.dataDir;
const miss: number[] = [];
const l1: number[] = [];
const l2: number[] = [];
try {
  for (const q of questions.slice(0, 3)) await timedAsk(srv.url, `warm-up ${q}`, TOKENS);
  for (const q of questions) {
    const r = await timedAsk(srv.url, q, TOKENS);
    if (r.cache !== "miss") throw new Error(`expected a miss, got ${r.cache}`);
    miss.push(r.ms);
  }
  for (let k = 0; k < REPEATS; k++) {
    for (const q of questions) {
      const r = await timedAsk(srv.url, q, TOKENS);
      if (r.cache !== "hit-l1") throw new Error(`expected hit-l1, got ${r.cache}`);
      l1.push(r.ms);
    }
  }
  await srv.stop();
  srv = await startCacheServer(CACHE, dataDir);
  for (const q of questions) {
    const r = await timedAsk(srv.url, q, TOKENS);
    if (r.cache !== "hit-l2") throw new Error(`expected hit-l2, got ${r.cache}`);
    l2.push(r.ms);
  }
} finally {
  await srv.stop();
}
console.log(`demo model, whole greedy chat requests of ${TOKENS} tokens, one at a time:`);
console.log(`  miss (the model runs): ${fmt(miss)}`);
console.log(`  L1 hit (memory):       ${fmt(l1)}`);
console.log(`  L2 hit (SQLite store): ${fmt(l2)}`);
