// Server overhead benchmark: what HTTP, IPC and the worker process cost per token. Moltbot over
// HTTP (streamed /v1/completions) against the same FFI engine in-process, one stream and N
// concurrent clients, rounds interleaved so machine noise hits both alike. With --cpu-prof DIR
// the server (main process and worker) runs under `node --cpu-prof` and the self time of each
// process is summed by function (bench/cpuprofile-summary.ts) over the measured requests (after
// start-up and a warm-up request), per token served.
//
//   node --import tsx bench/server-overhead.ts [--models demo,m100] [--threads 2] [--rounds 3]
//        [--requests 4] [--tokens 64] [--clients 8] [--bin bin/moltbot] [--cpu-prof DIR] [--top 20]
//
// Run timing measurements under `flock /tmp/moltbot-bench.lock`.
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine } from "../src/engine/types.js";
import { formatSummary, summarize } from "./cpuprofile-summary.js";
import { benchModel, commandLine, freePort, machine, median, startServed, timedStream, TokenClock, type StreamTiming } from "./lib.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "demo,m100" },
    threads: { type: "string", default: "2" },
    rounds: { type: "string", default: "3" },
    requests: { type: "string", default: "4" },
    tokens: { type: "string", default: "64" },
    clients: { type: "string", default: "8" },
    bin: { type: "string", default: path.resolve(import.meta.dirname, "..", "bin", "moltbot") },
    "cpu-prof": { type: "string" },
    top: { type: "string", default: "20" },
    help: { type: "boolean" },
  },
});
if (values.help) {
  console.log("usage: node --import tsx bench/server-overhead.ts [--models demo,m100] [--threads 2] [--rounds 3] [--requests 4] [--tokens 64] [--clients 8] [--bin PATH] [--cpu-prof DIR] [--top 20]");
  process.exit(0);
}
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const TOKENS = Number(values.tokens);
const CLIENTS = Number(values.clients);
const PROF_DIR = values["cpu-prof"] ? path.resolve(values["cpu-prof"]) : undefined;
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";
const PARALLEL = 4; // the demo model's config.json and the default batching both give 4 slots

let requestNo = 0;
const nextPrompt = () => `${++requestNo}. ${PROMPT}`;

interface Concurrent {
  /** All clients' tokens over the wall time from the first request to the last token. */
  tps: number;
  ttftMs: number;
}

interface Target {
  name: string;
  single(): Promise<StreamTiming>;
  concurrent(): Promise<Concurrent>;
  close(): Promise<void>;
  /** Tokens served so far. */
  tokens: number;
}

/** CPU time (user + system, all threads) a process has used so far, in ms; Linux /proc. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in USER_HZ (100)
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Context switches (voluntary, involuntary) of every thread of a process so far; Linux /proc. */
function switches(pid: number): { vol: number; invol: number } {
  let vol = 0;
  let invol = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
      vol += Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
      invol += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
    }
  } catch {
    // the process is gone
  }
  return { vol, invol };
}

/** CPU used by the server's main process, its workers, and this (client) process, in ms. */
function cpuSplit(serverPid: number): { main: number; workers: number; client: number; workerInvol: number; mainVol: number } {
  const c = process.cpuUsage();
  const workers = childPids(serverPid);
  return {
    main: cpuMs(serverPid),
    workers: workers.reduce((a, p) => a + cpuMs(p), 0),
    client: (c.user + c.system) / 1000,
    workerInvol: workers.reduce((a, p) => a + switches(p).invol, 0),
    mainVol: switches(serverPid).vol,
  };
}

async function together(run: () => Promise<StreamTiming>): Promise<Concurrent> {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: CLIENTS }, run));
  const wall = performance.now() - t0;
  return { tps: (rs.reduce((a, r) => a + r.tokens, 0) * 1000) / wall, ttftMs: median(rs.map((r) => r.ttftMs)) };
}

async function serverTarget(modelPath: string, threads: number): Promise<Target & { pid: number }> {
  const port = freePort();
  // fork() hands the main process's execArgv on, so the worker is profiled too.
  const prof = PROF_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROF_DIR}`] : [];
  const s = await startServed(process.execPath, [...prof, values.bin!, "deploy", "--model-path", modelPath, "--port", String(port), "--threads", String(threads), "--log-level", "WARNING"], port, "/readyz");
  const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  const model = models.data[0]!.id;
  const t: Target & { pid: number } = {
    name: "moltbot (HTTP)",
    pid: s.proc.pid!,
    tokens: 0,
    single: async () => {
      const r = await timedStream(`${s.url}/v1/completions`, { model, prompt: nextPrompt(), max_tokens: TOKENS, temperature: 0, ignore_eos: true });
      t.tokens += r.tokens;
      return r;
    },
    concurrent: () => together(t.single),
    close: s.stop,
  };
  return t;
}

async function engineTarget(file: string, threads: number): Promise<Target> {
  const engine: Engine = await loadFfiEngine({ modelPath: file, contextSize: 2048, parallel: PARALLEL, threads, embedding: false });
  const params = { temperature: 0, topP: 1, seed: undefined, maxTokens: TOKENS, minTokens: TOKENS, ignoreEos: true, topLogprobs: null, stop: [], cachePrompt: false };
  // Cast: the request's shape has grown fields over time (stop strings, prompt cache, a
  // request-level token cap); this names them all, so it runs on either shape.
  const request = (promptTokens: number[], onToken: (tok: { text: string }) => boolean) =>
    ({ promptTokens, params, maxTokens: TOKENS, onToken }) as unknown as Parameters<Engine["generate"]>[0];
  const t: Target = {
    name: "moltbot engine (in-process)",
    tokens: 0,
    single: async () => {
      const clock = new TokenClock();
      await engine.generate(request(engine.tokenize(nextPrompt(), true), (tok) => (tok.text ? clock.tick() : undefined, true)));
      t.tokens += clock.tokens;
      return clock.result();
    },
    concurrent: () => together(t.single),
    close: () => engine.close(),
  };
  return t;
}

const fmt = (n: number, d = 1) => n.toFixed(d);

async function main(): Promise<void> {
  console.log(`# bench/server-overhead.ts — ${new Date().toISOString()}`);
  console.log(`machine: ${machine()}`);
  console.log(`command: ${commandLine()}`);
  console.log(`server: ${values.bin}`);
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  for (const modelName of values.models!.split(",")) {
    const m = await benchModel(modelName);
    for (const threads of values.threads!.split(",").map(Number)) {
      const before = new Set(PROF_DIR ? readdirSync(PROF_DIR) : []);
      const server = await serverTarget(m.modelPath, threads);
      // Profiling slows the server: comparing it with the engine then means nothing.
      const targets: Target[] = PROF_DIR ? [server] : [server, await engineTarget(m.file, threads)];
      const single = new Map<string, StreamTiming[]>(targets.map((t) => [t.name, []]));
      const conc = new Map<string, Concurrent[]>(targets.map((t) => [t.name, []]));
      for (const t of targets) await t.single(); // warm-up
      const servedBefore = server.tokens;
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      const cpu0 = cpuSplit(server.pid);
      for (let r = 0; r < ROUNDS; r++) {
        for (const t of targets) {
          for (let i = 0; i < REQUESTS; i++) single.get(t.name)!.push(await t.single());
          if (CLIENTS > 0) conc.get(t.name)!.push(await t.concurrent());
        }
      }
      const served = server.tokens - servedBefore;
      const toUs = Number(process.hrtime.bigint() / 1000n);
      const cpu1 = cpuSplit(server.pid);
      for (const t of targets) await t.close();
      console.log(`\n## ${modelName}, ${threads} thread(s), ${TOKENS}-token greedy completions; 1 stream ${ROUNDS}x${REQUESTS} runs, ${CLIENTS} clients ${ROUNDS} runs; medians`);
      console.log(`| target | 1 stream tokens/s | 1 stream TTFT ms | ${CLIENTS} clients tokens/s (all) | ${CLIENTS} clients TTFT ms |`);
      console.log(`|---|---|---|---|---|`);
      const rows = targets.map((t) => {
        const s = single.get(t.name)!;
        const c = conc.get(t.name)!;
        const med = (xs: number[]) => (xs.length > 0 ? median(xs) : NaN);
        return { name: t.name, e2e: med(s.map((x) => (x.tokens * 1000) / x.totalMs)), ttft: med(s.map((x) => x.ttftMs)), ctps: med(c.map((x) => x.tps)), cttft: med(c.map((x) => x.ttftMs)) };
      });
      for (const r of rows) console.log(`| ${r.name} | ${fmt(r.e2e)} | ${fmt(r.ttft, 2)} | ${fmt(r.ctps)} | ${fmt(r.cttft, 1)} |`);
      const us = (k: keyof typeof cpu0) => fmt(((cpu1[k] - cpu0[k]) * 1000) / served, 0);
      console.log(`CPU per token served over HTTP (/proc, whole run${targets.length > 1 ? "; client includes the in-process engine" : ""}): server main ${us("main")} us, worker ${us("workers")} us, client ${us("client")} us`);
      const per = (k: "workerInvol" | "mainVol") => fmt((cpu1[k] - cpu0[k]) / served, 2);
      console.log(`per token: worker threads preempted ${per("workerInvol")} times, main process woke ${per("mainVol")} times`);
      if (rows.length === 2) {
        const [h, e] = rows as [(typeof rows)[0], (typeof rows)[0]];
        console.log(`HTTP / in-process: 1 stream ${fmt((100 * h.e2e) / e.e2e)}% tokens/s (overhead ${fmt(100 - (100 * h.e2e) / e.e2e)}%), TTFT +${fmt(h.ttft - e.ttft, 2)} ms; ${CLIENTS} clients ${fmt((100 * h.ctps) / e.ctps)}% tokens/s (overhead ${fmt(100 - (100 * h.ctps) / e.ctps)}%)`);
      }
      if (PROF_DIR) {
        const fresh = readdirSync(PROF_DIR).filter((f) => f.endsWith(".cpuprofile") && !before.has(f));
        for (const f of fresh) {
          const who = f.split(".")[3] === String(server.pid) ? "main process" : "worker process";
          console.log(`\n### ${who}: ${f}`);
          console.log(formatSummary(summarize(path.join(PROF_DIR, f), { fromUs, toUs }), Number(values.top), served));
        }
      }
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
