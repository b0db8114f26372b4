// Shared pieces of the benchmark scripts: process control, streamed requests, statistics.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ensureDemoModel } from "../src/demo/ensure-demo-model.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  return `${os.availableParallelism()} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.platform()} ${os.release()}, node ${process.version}`;
}

export function commandLine(): string {
  return `node --import tsx ${process.argv.slice(1).map((a) => a.replace(process.cwd() + "/", "")).join(" ")}`;
}

export interface StreamTiming {
  ttftMs: number;
  totalMs: number;
  tokens: number;
  /** Tokens per second between the first and the last token. */
  decodeTps: number;
}

/** Times a token stream: call tick() as each token arrives, result() at the end. */
export class TokenClock {
  private readonly t0 = performance.now();
  private first = 0;
  private last = 0;
  tokens = 0;

  tick(): void {
    const now = performance.now();
    if (this.tokens === 0) this.first = now;
    this.last = now;
    this.tokens++;
  }

  result(): StreamTiming {
    const { first, last, tokens } = this;
    return { ttftMs: first - this.t0, totalMs: performance.now() - this.t0, tokens, decodeTps: tokens > 1 ? ((tokens - 1) * 1000) / (last - first) : 0 };
  }
}

/** POST a streamed OpenAI completion and time it; counts one SSE event with text per token. */
export async function timedStream(url: string, body: Record<string, unknown>): Promise<StreamTiming> {
  return await tickedStream(url, body);
}

export interface TickedStream extends StreamTiming {
  /** performance.now() of every SSE event that carried text, in order. */
  ticks: number[];
  /** The server's own counts, when the stream reported `usage` (one event can carry several tokens). */
  usage?: { prompt_tokens?: number; completion_tokens?: number };
  /** The last event's llama-server `timings` (draft_n, draft_n_accepted, ...), when sent. */
  timings?: Record<string, number>;
}

/** timedStream with each event's arrival time and the reported usage; `onTick(n)` runs after the n-th text event. */
export async function tickedStream(url: string, body: Record<string, unknown>, onTick?: (n: number) => void): Promise<TickedStream> {
  const clock = new TokenClock();
  const ticks: number[] = [];
  let usage: TickedStream["usage"];
  let timings: TickedStream["timings"];
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  for await (const event of sseData(res.body)) {
    if (event === "[DONE]") continue;
    const data = JSON.parse(event) as { choices?: Array<{ text?: string; delta?: { content?: string } }>; usage?: TickedStream["usage"]; timings?: Record<string, number> };
    if (data.usage) usage = data.usage;
    if (data.timings) timings = data.timings;
    const c = data.choices?.[0];
    const text = c?.text ?? c?.delta?.content;
    if (text) {
      clock.tick();
      ticks.push(performance.now());
      onTick?.(ticks.length);
    }
  }
  return { ...clock.result(), ticks, usage, timings };
}

/** The `data:` payloads of a server-sent event stream as they arrive ("[DONE]" included). */
export async function* sseData(body: AsyncIterable<unknown>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) !== -1) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (event.startsWith("data: ")) yield event.slice(6);
    }
  }
}

/** Resident memory of a process in KiB (VmRSS from /proc), 0 once it is gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Every live descendant of a process (children, their children, ...), from /proc/<pid>/stat. */
export function descendantPids(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // The command name (field 2) may hold spaces and parentheses: the ppid follows its last ")".
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [child, pp] of parent) if (pp === p) (out.push(child), queue.push(child));
  }
  return out;
}

export interface Served {
  proc: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

/** Start a server process and wait until `readyPath` answers 200. */
export async function startServed(cmd: string, args: string[], port: number, readyPath: string, env: NodeJS.ProcessEnv = {}): Promise<Served & { readyMs: number }> {
  const t0 = performance.now();
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let log = "";
  proc.stdout!.on("data", (d: Buffer) => (log += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (log += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${cmd} exited: ${log.slice(-2000)}`);
    try {
      const r = await fetch(url + readyPath);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (performance.now() - t0 > 120_000) throw new Error(`${cmd} not ready after 120 s: ${log.slice(-2000)}`);
    await sleep(5);
  }
  const readyMs = performance.now() - t0;
  return {
    proc,
    url,
    readyMs,
    stop: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await Promise.race([exited, sleep(10_000)]);
      if (proc.exitCode === null) proc.kill("SIGKILL");
    },
  };
}

let nextPort = 18_000 + Math.floor(Math.random() * 2000);
export const freePort = () => nextPort++;

export interface BenchModel {
  /** The GGUF file. */
  file: string;
  /** What `moltbot deploy --model-path` takes (the demo's version folder, else the file). */
  modelPath: string;
  /** The model's name in the repository (what a pool entry's `model` names). */
  modelName: string;
}

/** "demo", a random-weight preset ("tiny", "m100", generated once into the cache) or a GGUF path. */
export async function benchModel(name: string): Promise<BenchModel> {
  if (name === "demo") {
    const file = await ensureDemoModel({ log: (m) => console.error(m) });
    return { file, modelPath: path.dirname(file), modelName: "demo" };
  }
  if (name === "m100" || name === "tiny") {
    const dir = path.join(process.env.MOLTBOT_CACHE_DIR ?? path.join(os.homedir(), ".cache", "moltbot"), "bench");
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `${name}.gguf`);
    if (!existsSync(file)) await writeRandomLlamaModel(file, randomModelOptions(name));
    return { file, modelPath: file, modelName: name };
  }
  const file = path.resolve(name);
  return { file, modelPath: file, modelName: path.basename(file).replace(/\.(gguf|bin)$/i, "") };
}

/** A tool of the peer build (../shared/peer/build-llama-server.sh caches it under ~/.cache/moltbot-peer), or null. */
export function findPeerTool(tool: "llama-bench" | "llama-server"): string | null {
  const base = path.join(os.homedir(), ".cache", "moltbot-peer");
  if (!existsSync(base)) return null;
  for (const d of readdirSync(base)) {
    const exe = path.join(base, d, "bin", tool);
    if (existsSync(exe)) return exe;
  }
  return null;
}
