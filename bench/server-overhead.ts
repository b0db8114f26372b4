// Server overhead benchmark: what HTTP, IPC and the worker process cost per token. Moltbot over
// HTTP (streamed /v1/completions) against the same FFI engine in-process, one stream and N
// concurrent clients. Several server builds can run side by side (--servers), e.g. before and
// after a change; every target takes its turn request by request, round after round, so a
// noisy neighbour on the machine hits all of them alike and the ratios come from one run.
//
//   node --import tsx bench/server-overhead.ts [--models demo,m100] [--threads 2] [--rounds 3]
//        [--requests 4] [--tokens 64] [--clients 8] [--parallel 8] [--servers label=BIN[;VAR=value...],...]
//        [--cpu-prof DIR] [--no-engine] [--top 20]
//
// --servers defaults to this checkout's bin/moltbot; a `;VAR=value` suffix sets environment
// variables for that server only, `;@batch` or `;@nice=N` runs its main thread SCHED_BATCH or
// at that nice level (Linux: chrt, renice). With --cpu-prof DIR every server (main process and worker)
// runs under `node --cpu-prof`, there is no in-process target, and each process's self time
// is summed by function (bench/cpuprofile-summary.ts) over the measured requests (after
// start-up and a warm-up request), per token it served. CPU time and context switches per
// token come from /proc (Linux). Run timing measurements under `flock /tmp/moltbot-bench.lock`.
import { execFileSync } from "node:child_process";
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
    parallel: { type: "string", default: "8" },
    servers: { type: "string", default: `moltbot=${path.resolve(import.meta.dirname, "..", "bin", "moltbot")}` },
    "cpu-prof": { type: "string" },
    // Leave the in-process engine out: the client line then shows what this process's HTTP
    // client alone costs per token (it shares the cores with the server under test).
    "no-engine": { type: "boolean" },
    top: { type: "string", default: "20" },
    help: { type: "boolean" },
  },
});
if (values.help) {
  console.log(
    "usage: node --import tsx bench/server-overhead.ts [--models demo,m100] [--threads 2] [--rounds 3] [--requests 4] [--tokens 64] [--clients 8] [--parallel 8] [--servers label=BIN[;VAR=value...],...] [--cpu-prof DIR] [--no-engine] [--top 20]",
  );
  process.exit(0);
}
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const TOKENS = Number(values.tokens);
const CLIENTS = Number(values.clients);
const PROF_DIR = values["cpu-prof"] ? path.resolve(values["cpu-prof"]) : undefined;
const PROMPT = "The history of the United States began with the arrival of the first people in the Americas. In the";
// Sequences the in-process engine decodes together: match the servers' slots (the default
// batching has 32, so 8 clients all run at once; builds before it had 4: pass --parallel 4).
const PARALLEL = Number(values.parallel);

interface ServerSpec {
  label: string;
  bin: string;
  env: NodeJS.ProcessEnv;
  /** `@batch`: the main process's JS thread runs SCHED_BATCH; `@nice=N`: at nice N (workers keep theirs). */
  sched?: string;
}

const SERVERS: ServerSpec[] = values.servers!.split(",").map((s) => {
  const [head, ...vars] = s.split(";");
  const eq = head!.indexOf("=");
  if (eq < 1) throw new Error(`--servers: expected label=BIN, got ${head}`);
  const sched = vars.find((v) => v.startsWith("@"));
  const env = Object.fromEntries(vars.filter((v) => !v.startsWith("@")).map((v) => [v.slice(0, v.indexOf("=")), v.slice(v.indexOf("=") + 1)]));
  return { label: head!.slice(0, eq), bin: path.resolve(head!.slice(eq + 1)), env, sched };
});

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
  close(): Promise<void>;
  /** Tokens served so far. */
  tokens: number;
  /** The server's main process (absent in-process). */
  pid?: number;
}

/** CPU time (user + system, all threads) a process has used so far, in ms; Linux /proc. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in USER_HZ (100)
  } catch {
    return 0; // the process is gone
  }
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
      vol += Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
      invol += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
    }
  } catch {
    // the process is gone
  }
  return { vol, invol };
}

interface ProcStats {
  main: number;
  workers: number;
  workerInvol: number;
  mainVol: number;
}

/** CPU (ms) and context switches of a server's main process and its workers so far. */
function procStats(pid: number): ProcStats {
  const workers = childPids(pid);
  return {
    main: cpuMs(pid),
    workers: workers.reduce((a, p) => a + cpuMs(p), 0),
    workerInvol: workers.reduce((a, p) => a + switches(p).invol, 0),
    mainVol: switches(pid).vol,
  };
}

async function together(run: () => Promise<StreamTiming>): Promise<Concurrent> {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: CLIENTS }, run));
  const wall = performance.now() - t0;
  return { tps: (rs.reduce((a, r) => a + r.tokens, 0) * 1000) / wall, ttftMs: median(rs.map((r) => r.ttftMs)) };
}

async function serverTarget(spec: ServerSpec, modelPath: string, threads: number): Promise<Target> {
  const port = freePort();
  // fork() hands the main process's execArgv on, so the worker is profiled too.
  const prof = PROF_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROF_DIR}`] : [];
  const args = [...prof, spec.bin, "deploy", "--model-path", modelPath, "--port", String(port), "--threads", String(threads), "--log-level", "WARNING"];
  const s = await startServed(process.execPath, args, port, "/readyz", spec.env);
  // A failed run must not leave servers behind (they would load the machine for the next one).
  process.once("exit", () => s.proc.kill("SIGKILL"));
  // Scheduling experiments on the main thread only (the thread id is the pid); the worker was
  // forked before and keeps the default policy.
  if (spec.sched === "@batch") execFileSync("chrt", ["-b", "-p", "0", String(s.proc.pid)]);
  else if (spec.sched?.startsWith("@nice=")) execFileSync("renice", ["-n", spec.sched.slice(6), "-p", String(s.proc.pid)], { stdio: "ignore" });
  else if (spec.sched) throw new Error(`--servers: unknown ${spec.sched} (@batch or @nice=N)`);
  const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  const model = models.data[0]!.id;
  const t: Target = {
    name: `${spec.label} (HTTP)`,
    pid: s.proc.pid!,
    tokens: 0,
    single: async () => {
      const r = await timedStream(`${s.url}/v1/completions`, { model, prompt: nextPrompt(), max_tokens: TOKENS, temperature: 0, ignore_eos: true });
      t.tokens += r.tokens;
      return r;
    },
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
    name: "engine (in-process)",
    tokens: 0,
    single: async () => {
      const clock = new TokenClock();
      await engine.generate(request(engine.tokenize(nextPrompt(), true), (tok) => (tok.text ? clock.tick() : undefined, true)));
      t.tokens += clock.tokens;
      return clock.result();
    },
    close: () => engine.close(),
  };
  return t;
}

const fmt = (n: number, d = 1) => n.toFixed(d);
const med = (xs: number[]) => (xs.length > 0 ? median(xs) : NaN);

async function main(): Promise<void> {
  console.log(`# bench/server-overhead.ts — ${new Date().toISOString()}`);
  console.log(`machine: ${machine()}`);
  console.log(`command: ${commandLine()}`);
  for (const s of SERVERS) console.log(`server ${s.label}: ${s.bin}${Object.keys(s.env).length ? ` with ${JSON.stringify(s.env)}` : ""}`);
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  for (const modelName of values.models!.split(",")) {
    const m = await benchModel(modelName);
    for (const threads of values.threads!.split(",").map(Number)) {
      const before = new Set(PROF_DIR ? readdirSync(PROF_DIR) : []);
      const targets: Target[] = [];
      for (const s of SERVERS) targets.push(await serverTarget(s, m.modelPath, threads));
      // Profiling slows the servers: comparing them with the engine then means nothing.
      if (!PROF_DIR && !values["no-engine"]) targets.push(await engineTarget(m.file, threads));
      const single = new Map<Target, StreamTiming[]>(targets.map((t) => [t, []]));
      const conc = new Map<Target, Concurrent[]>(targets.map((t) => [t, []]));
      for (const t of targets) await t.single(); // warm-up
      const served0 = new Map(targets.map((t) => [t, t.tokens]));
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      const stats0 = new Map(targets.map((t) => [t, t.pid ? procStats(t.pid) : undefined]));
      const workerPids = new Map(targets.map((t) => [t, t.pid ? childPids(t.pid) : []]));
      const client0 = process.cpuUsage();
      for (let r = 0; r < ROUNDS; r++) {
        for (let i = 0; i < REQUESTS; i++) for (const t of targets) single.get(t)!.push(await t.single());
        if (CLIENTS > 0) for (const t of targets) conc.get(t)!.push(await together(t.single));
      }
      const toUs = Number(process.hrtime.bigint() / 1000n);
      const client = process.cpuUsage(client0);
      const stats1 = new Map(targets.map((t) => [t, t.pid ? procStats(t.pid) : undefined]));
      for (const t of targets) await t.close();

      console.log(`\n## ${modelName}, ${threads} thread(s), ${TOKENS}-token greedy completions; 1 stream ${ROUNDS}x${REQUESTS} runs, ${CLIENTS} clients ${ROUNDS} runs; medians`);
      console.log(`| target | 1 stream tokens/s | 1 stream TTFT ms | ${CLIENTS} clients tokens/s (all) | ${CLIENTS} clients TTFT ms | main CPU us/token | worker CPU us/token | worker preemptions/token | main wake-ups/token |`);
      console.log(`|---|---|---|---|---|---|---|---|---|`);
      const rows = targets.map((t) => {
        const s = single.get(t)!;
        const c = conc.get(t)!;
        return { t, e2e: med(s.map((x) => (x.tokens * 1000) / x.totalMs)), ttft: med(s.map((x) => x.ttftMs)), ctps: med(c.map((x) => x.tps)), cttft: med(c.map((x) => x.ttftMs)) };
      });
      for (const r of rows) {
        const a = stats0.get(r.t);
        const b = stats1.get(r.t);
        const n = r.t.tokens - served0.get(r.t)!;
        const per = (k: keyof ProcStats, scale: number, d: number) => (a && b ? fmt(((b[k] - a[k]) * scale) / n, d) : "");
        console.log(
          `| ${r.t.name} | ${fmt(r.e2e)} | ${fmt(r.ttft, 2)} | ${fmt(r.ctps)} | ${fmt(r.cttft, 1)} | ${per("main", 1000, 0)} | ${per("workers", 1000, 0)} | ${per("workerInvol", 1, 2)} | ${per("mainVol", 1, 2)} |`,
        );
      }
      const servedAll = targets.reduce((a, t) => a + t.tokens - served0.get(t)!, 0);
      const withEngine = targets.some((t) => !t.pid);
      console.log(`client (this process, all targets${withEngine ? " and the in-process engine" : ""}): ${fmt(((client.user + client.system) / servedAll), 0)} us CPU per token`);
      const eng = rows.find((r) => !r.t.pid);
      if (eng) {
        for (const h of rows.filter((r) => r.t.pid)) {
          console.log(
            `${h.t.name} / in-process: 1 stream ${fmt((100 * h.e2e) / eng.e2e)}% tokens/s (overhead ${fmt(100 - (100 * h.e2e) / eng.e2e)}%), TTFT +${fmt(h.ttft - eng.ttft, 2)} ms; ` +
              `${CLIENTS} clients ${fmt((100 * h.ctps) / eng.ctps)}% tokens/s (overhead ${fmt(100 - (100 * h.ctps) / eng.ctps)}%)`,
          );
        }
      }
      if (PROF_DIR) {
        const fresh = readdirSync(PROF_DIR).filter((f) => f.endsWith(".cpuprofile") && !before.has(f));
        for (const t of targets) {
          const n = t.tokens - served0.get(t)!;
          for (const f of fresh) {
            const pid = Number(f.split(".")[3]);
            const who = pid === t.pid ? "main process" : workerPids.get(t)!.includes(pid) ? "worker process" : undefined;
            if (!who) continue;
            console.log(`\n### ${t.name}, ${who}: ${f}`);
            console.log(formatSummary(summarize(path.join(PROF_DIR, f), { fromUs, toUs }), Number(values.top), n));
          }
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
