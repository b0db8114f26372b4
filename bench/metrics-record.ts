// What recording costs in the main process, without a server: ServerMetrics.requestFinished
// per finished request (status figures only, and with Prometheus), the pool's queue-wait
// observation, and one scrape of the registry (/metrics) with every series present.
//
//   node --import tsx bench/metrics-record.ts [--requests 200000] [--entries 4]
//
// The entries, workers and ledger are stand-ins with the fields ServerMetrics reads; the
// worker pid is this process, so the /proc reads at scrape time are real.
import { parseArgs } from "node:util";
import type { BudgetLedger } from "../src/ledger/ledger.js";
import { ServerMetrics } from "../src/observe/metrics.js";
import type { PoolEntry } from "../src/pool/model-pool.js";
import { ModelScheduler } from "../src/scheduler/model-scheduler.js";
import { commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({ options: { requests: { type: "string", default: "200000" }, entries: { type: "string", default: "4" } } });
const N = Number(values.requests);

const ledger = { status: () => [], reserve: () => null, settle: () => {}, record: () => {}, reset: () => {}, close: () => {} } as unknown as BudgetLedger;
const entries = Array.from({ length: Number(values.entries) }, (_, i) => ({
  name: `entry${i}`,
  model: { name: `model${i % 2}`, active: { version: "v1.0" } },
  worker: { pid: process.pid, state: "ready", restarts: 0, isReady: () => true },
  scheduler: new ModelScheduler({ slots: 32, maxQueue: 256, maxWaitMs: 30_000 }),
  priority: "normal",
  costLimit: i === 0 ? 50 : undefined,
})) as unknown as PoolEntry[];
const routes = ["/v1/chat/completions", "/v1/completions"];

function perRequestUs(metrics: ServerMetrics): number {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const entry = entries[i % entries.length]!;
    metrics.queueWait(entry, 0.01);
    metrics.requestFinished({
      entry,
      route: routes[i & 1]!,
      status: i % 50 === 0 ? 429 : 200,
      latencyMs: 50 + (i % 100),
      promptTokens: 40,
      completionTokens: 64,
      cachedTokens: i % 3 === 0 ? 32 : 0,
      ttftMs: 8,
      interTokenMs: 1,
    });
  }
  return ((performance.now() - t0) * 1000) / N;
}

console.log(`# bench/metrics-record.ts — ${new Date().toISOString()}`);
console.log(`machine: ${machine()}`);
console.log(`command: ${commandLine()}`);
const off = new ServerMetrics({ entries, ledger, prometheus: false });
const on = new ServerMetrics({ entries, ledger, prometheus: true });
const rounds = { off: [] as number[], on: [] as number[] };
for (let r = 0; r < 5; r++) {
  rounds.off.push(perRequestUs(off));
  rounds.on.push(perRequestUs(on));
}
const scrapes: number[] = [];
let bytes = 0;
for (let r = 0; r < 20; r++) {
  const t0 = performance.now();
  bytes = (await on.prometheusText())!.text.length;
  scrapes.push(performance.now() - t0);
}
const statusMs: number[] = [];
for (let r = 0; r < 20; r++) {
  const t0 = performance.now();
  on.modelStatus(3600);
  statusMs.push(performance.now() - t0);
}
console.log(`| recording per finished request (queue wait + requestFinished), median of 5 x ${N} | us |`);
console.log(`|---|---|`);
console.log(`| status figures only (metrics.enabled: false) | ${median(rounds.off).toFixed(2)} |`);
console.log(`| status figures + Prometheus | ${median(rounds.on).toFixed(2)} |`);
console.log(`scrape: ${median(scrapes).toFixed(2)} ms for ${bytes} bytes (${entries.length} entries, 2 models); /admin/status model figures over a full ring (65,536 requests): ${median(statusMs).toFixed(2)} ms`);
