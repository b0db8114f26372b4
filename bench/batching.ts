// Continuous batching: aggregate tokens/s and time to first token at concurrency 1, 4, 8, 16,
// on the demo model and the ~100M model: Moltbot with its defaults (batching on, 32 slots,
// speculative decoding on), Moltbot with batching off, and llama.cpp's own llama-server (same
// threads) started per level with -np = clients, 2048 context cells per slot, in the same run.
//
//   node --import tsx bench/batching.ts [--models demo,m100] [--concurrency 1,4,8,16] [--requests 3]
//        [--tokens 64] [--threads 2] [--llama-server PATH]
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { benchModel, commandLine, freePort, machine, median, percentile, startServed, timedStream, type Served, type StreamTiming } from "./lib.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "demo,m100" },
    concurrency: { type: "string", default: "1,4,8,16" },
    requests: { type: "string", default: "3" },
    tokens: { type: "string", default: "64" },
    threads: { type: "string", default: "2" },
    "llama-server": { type: "string" },
  },
});
const ROOT = path.resolve(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const TOKENS = Number(values.tokens);
const REQUESTS = Number(values.requests);
const THREADS = Number(values.threads);
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";

function peerServer(): string | undefined {
  if (values["llama-server"]) return values["llama-server"];
  const base = path.join(os.homedir(), ".cache", "moltbot-peer");
  if (!existsSync(base)) return undefined;
  for (const v of readdirSync(base)) if (existsSync(path.join(base, v, "bin", "llama-server"))) return path.join(base, v, "bin", "llama-server");
  return undefined;
}

interface Target {
  name: string;
  served: Served;
  body: (i: number) => Record<string, unknown>;
}

let requestNo = 0;

// Servers still running when the script ends (an error mid-run) would keep their ports and
// cores: later runs then collide with them (EADDRINUSE) or measure on a busier machine.
const running = new Set<Served>();
process.on("exit", () => {
  for (const s of running) if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
});
const tracked = (s: Served): Served => {
  running.add(s);
  s.proc.once("exit", () => running.delete(s));
  return s;
};

async function moltbot(modelPath: string, modelName: string, batching: boolean): Promise<Target> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-bench-"));
  const yaml = path.join(dir, "moltbot.yaml");
  await writeFile(
    yaml,
    [
      `model_path: ${modelPath}`,
      "model_pool:",
      `  - name: ${modelName}`,
      "    type: llm",
      // Defaults: no batching key at all, so what a deployment gets is what is measured.
      ...(batching ? [] : ["    batching: { enabled: false }"]),
      "log: { level: WARNING }",
    ].join("\n"),
  );
  const port = freePort();
  const served = tracked(await startServed(process.execPath, [BIN, "deploy", "--config", yaml, "--port", String(port), "--threads", String(THREADS)], port, "/readyz"));
  return {
    name: `moltbot ${batching ? "defaults" : "batching off"}`,
    served,
    body: () => ({ model: modelName, prompt: `${++requestNo}. ${PROMPT}`, max_tokens: TOKENS, temperature: 0, ignore_eos: true }),
  };
}

// One slot per client: llama-server's slots each hold their own context, so -np is sized to
// the load, as an operator would.
async function llamaServer(bin: string, file: string, slots: number): Promise<Target> {
  const port = freePort();
  const served = tracked(await startServed(bin, ["-m", file, "--port", String(port), "--host", "127.0.0.1", "-t", String(THREADS), "-tb", String(THREADS), "-c", String(slots * 2048), "-np", String(slots), "--no-webui", "-lv", "0"], port, "/health"));
  return { name: "llama-server -np = clients", served, body: () => ({ prompt: `${++requestNo}. ${PROMPT}`, max_tokens: TOKENS, temperature: 0, ignore_eos: true, cache_prompt: false }) };
}

async function load(t: Target, concurrency: number): Promise<{ tps: number; ttft: number[]; dropped: number }> {
  const timings: StreamTiming[] = [];
  let dropped = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = 0; i < REQUESTS; i++) {
        // llama-server now and then closes a streamed connection under full load ("other side
        // closed", the server still up); such a request is sent again once and counted.
        const send = () => timedStream(`${t.served.url}/v1/completions`, t.body(i));
        const timing = await send()
          .catch((err: unknown) => {
            if ((err as { cause?: { code?: string } }).cause?.code !== "UND_ERR_SOCKET" || t.served.proc.exitCode !== null) throw err;
            dropped++;
            return send();
          })
          .catch((err: unknown) => {
            throw new Error(`${t.name}, ${concurrency} clients (server exit code ${t.served.proc.exitCode}, signal ${t.served.proc.signalCode})`, { cause: err });
          });
        timings.push(timing);
      }
    }),
  );
  const wall = performance.now() - t0;
  return { tps: (timings.reduce((n, x) => n + x.tokens, 0) * 1000) / wall, ttft: timings.map((x) => x.ttftMs), dropped };
}

async function main(): Promise<void> {
  console.log(`# bench/batching.ts — ${new Date().toISOString()}\nmachine: ${machine()}\ncommand: ${commandLine()}`);
  const levels = values.concurrency!.split(",").map(Number);
  const peer = peerServer();
  for (const name of values.models!.split(",")) {
    const m = await benchModel(name);
    const targets = [await moltbot(m.modelPath, m.modelName, true), await moltbot(m.modelPath, m.modelName, false)];
    for (const t of targets) await load(t, 1); // warm-up
    const rows = new Map<string, string[]>();
    const base = new Map<string, number>();
    for (const c of levels) {
      // Interleaved: every target at this concurrency before the next level. llama-server is
      // started and warmed up right before its turn: a keep-alive connection left idle while
      // the other targets run gets closed under the next request ("other side closed").
      const measure = async (t: Target) => {
        const r = await load(t, c);
        if (c === levels[0]) base.set(t.name, r.tps);
        const row = rows.get(t.name) ?? [];
        row.push(`c=${c}: ${r.tps.toFixed(1)} tok/s (x${(r.tps / base.get(t.name)!).toFixed(2)}), TTFT p50 ${median(r.ttft).toFixed(1)} / p99 ${percentile(r.ttft, 99).toFixed(1)} ms${r.dropped ? `, ${r.dropped} dropped connection(s) resent` : ""}`);
        rows.set(t.name, row);
      };
      for (const t of targets) await measure(t);
      if (peer) {
        const peerTarget = await llamaServer(peer, m.file, c);
        await load(peerTarget, 1); // warm-up
        await measure(peerTarget);
        await peerTarget.served.stop();
      }
    }
    for (const t of targets) await t.served.stop();
    console.log(`\n## ${name}, ${THREADS} threads, ${TOKENS}-token completions, ${REQUESTS} per client`);
    for (const [t, row] of rows) console.log(`${t}\n  ${row.join("\n  ")}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
