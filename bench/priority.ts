// Priority under overload: latency of high-priority requests alone, then under a flood of
// low-priority ones on the same model (two pool entries, one scheduler), and with priorities
// switched off (both entries normal) for comparison.
//
//   node --import tsx bench/priority.ts [--model demo|m100] [--high 20] [--flood 24] [--tokens 32] [--threads 2]
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { benchModel, commandLine, freePort, machine, median, percentile, sleep, startServed, timedStream } from "./lib.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    high: { type: "string", default: "20" },
    flood: { type: "string", default: "24" },
    tokens: { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
  },
});
const ROOT = path.resolve(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const TOKENS = Number(values.tokens);

async function run(label: string, lowPriority: "low" | "normal", highPriority: "high" | "normal", flood: number): Promise<void> {
  const { modelPath: mp, modelName: model } = await benchModel(values.model!);
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-bench-"));
  const yaml = path.join(dir, "moltbot.yaml");
  await writeFile(
    yaml,
    [
      `model_path: ${mp}`,
      "model_pool:",
      `  - { name: hi, model: ${model}, type: llm, strategy: { priority: ${highPriority} } }`,
      `  - { name: lo, model: ${model}, type: llm, strategy: { priority: ${lowPriority} } }`,
      "batching: { enabled: true, max_batch_size: 4 }",
      "queue: { max_size: 64, max_wait_ms: 120000 }",
      "log: { level: ERROR }",
    ].join("\n"),
  );
  const port = freePort();
  const s = await startServed(process.execPath, [BIN, "deploy", "--config", yaml, "--port", String(port), "--threads", values.threads!], port, "/readyz");
  const url = `${s.url}/v1/completions`;
  let stop = false;
  let lowDone = 0;
  let lowShed = 0;
  const flooders = Array.from({ length: flood }, async (_, k) => {
    let i = 0;
    while (!stop) {
      try {
        await timedStream(url, { model: "lo", prompt: `${k}-${i++} low`, max_tokens: 64, ignore_eos: true });
        lowDone++;
      } catch {
        lowShed++;
        await sleep(20);
      }
    }
  });
  if (flood > 0) await sleep(1500); // let the queue fill
  const latency: number[] = [];
  const ttft: number[] = [];
  for (let i = 0; i < Number(values.high); i++) {
    const t = await timedStream(url, { model: "hi", prompt: `${i} high`, max_tokens: TOKENS, ignore_eos: true });
    latency.push(t.totalMs);
    ttft.push(t.ttftMs);
  }
  stop = true;
  await Promise.all(flooders);
  await s.stop();
  console.log(
    `${label.padEnd(44)} high: latency p50 ${median(latency).toFixed(0)} / p99 ${percentile(latency, 99).toFixed(0)} ms, TTFT p50 ${median(ttft).toFixed(0)} / p99 ${percentile(ttft, 99).toFixed(0)} ms; low done ${lowDone}, shed ${lowShed}`,
  );
}

console.log(`# bench/priority.ts — ${new Date().toISOString()}\nmachine: ${machine()}\ncommand: ${commandLine()}`);
console.log(`model ${values.model}, ${values.threads} threads, 4 slots, ${values.high} high-priority requests of ${TOKENS} tokens, one after another`);
await run("high alone", "low", "high", 0);
await run(`high + ${values.flood} low clients (priorities on)`, "low", "high", Number(values.flood));
await run(`same flood, priorities off (both normal)`, "normal", "normal", Number(values.flood));
process.exit(0);
