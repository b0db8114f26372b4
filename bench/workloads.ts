// Workloads: Moltbot against llama.cpp's own llama-server on the same GGUF, the same CPU kernels
// (the peer build runs the libggml-cpu variants node-llama-cpp ships) and the same thread count,
// in one run. Every round runs each workload on both servers back to back (the order alternates
// between rounds), so machine noise hits both alike. Both servers run on their defaults except
// llama-server's -np, which equals the workload's client count (one llama-server per -np, kept
// up for the whole run), and its context, which is Moltbot's context per sequence times -np.
//
//   node --import tsx bench/workloads.ts [--model m100|demo|FILE.gguf] [--threads 2] [--rounds 2]
//        [--requests 6] [--tokens 64] [--workloads short1,short8,...] [--llama-server DIR_OR_BINARY]
//        [--moltbot-yaml '<yaml merged into the generated moltbot.yaml>'] [--spec-type auto|ngram-...]
//        [--llama-bench]
//
// Workloads (streamed /v1/completions, greedy, ignore_eos; TTFT = first non-empty token):
//   short1      1 client, unique ~40-token prompts, --requests one after another
//   short8      8 concurrent clients, unique ~40-token prompts, 3 requests each
//   prefix1077  1 client, one ~1,077-token text shared by every request but for its last word;
//               each round's first request is a warm-up (both servers then hold the prefix)
//   cold1077    1 client, ~1,077-token prompts sharing nothing (distinct first token and text)
//   c32         32 concurrent clients, unique ~40-token prompts, 2 requests each
//   interleave  4 clients stream 128 tokens; once each has 16 tokens one client sends a
//               ~1,000-token prompt; the streams' inter-token gaps during its admission window
//               (send to its first token) and overall
//   repeat      a paragraph, then its first half again (the greedy continuation can copy the
//               context): Moltbot as is, llama-server plain and with n-gram speculation
//   memory      RSS after start-up, idle: Moltbot's workers (children of `moltbot deploy`) and
//               llama-server -np 32
//
// Progress goes to stderr, the report (command, machine, one table) to stdout.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import YAML from "yaml";
import { loadBrownCorpus } from "../src/demo/brown.js";
import { benchModel, commandLine, descendantPids, freePort, machine, median, percentile, rssKiB, sleep, startServed, tickedStream, type BenchModel, type Served, type TickedStream } from "./lib.js";

const ALL = ["short1", "short8", "prefix1077", "cold1077", "c32", "interleave", "repeat", "memory"] as const;
type Workload = (typeof ALL)[number];

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "m100" },
    threads: { type: "string", default: "2" },
    rounds: { type: "string", default: "2" },
    requests: { type: "string", default: "6" },
    tokens: { type: "string", default: "64" },
    workloads: { type: "string", default: ALL.join(",") },
    "llama-server": { type: "string" },
    "moltbot-yaml": { type: "string", default: "" },
    "spec-type": { type: "string", default: "auto" },
    "llama-bench": { type: "boolean", default: false },
  },
});
const ROOT = path.resolve(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const THREADS = Number(values.threads);
const ROUNDS = Number(values.rounds);
const N = Number(values.requests);
const TOKENS = Number(values.tokens);
const SELECTED = values.workloads!.split(",").map((w) => w.trim()) as Workload[];
for (const w of SELECTED) if (!ALL.includes(w)) throw new Error(`unknown workload '${w}' (${ALL.join(", ")})`);
const INTERLEAVE_TRIALS = Math.max(1, Math.ceil(N / 4));
const SPEC_TYPES = ["ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache"];

// Speculative decoding in Moltbot is on by default once it lands. When a body field turns it
// off, put it here: the repeat workload then also runs Moltbot without it, as its own row.
// e.g. const MOLTBOT_NO_SPEC_BODY: Record<string, unknown> | undefined = { speculative: false };
const MOLTBOT_NO_SPEC_BODY: Record<string, unknown> | undefined = undefined;

const log = (m: string) => console.error(m);

// ---------------------------------------------------------------------------------------------
// The peer

/** The peer's bin folder: --llama-server (a folder, or llama-server itself), else the build script's output. */
function peerBinDir(): string {
  const given = values["llama-server"];
  if (given) return statSync(given).isDirectory() ? path.resolve(given) : path.dirname(path.resolve(given));
  const script = path.join(ROOT, "..", "shared", "peer", "build-llama-server.sh");
  log(`llama-server: ${script} (builds once, about 10 min on 2 cores)`);
  const out = execFileSync(script, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  return out.trim().split("\n").at(-1)!;
}

function peerServerBin(dir: string): string {
  const given = values["llama-server"];
  if (given && !statSync(given).isDirectory()) return path.resolve(given);
  const bin = path.join(dir, "llama-server");
  if (!existsSync(bin)) throw new Error(`no llama-server in ${dir}`);
  return bin;
}

/** The --spec-type names this build accepts, from its --help. */
function specTypesOf(bin: string): string[] {
  const help = execFileSync(bin, ["--help"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const line = help.split("\n").find((l) => l.includes("--spec-type")) ?? "";
  const names = [...new Set(line.match(/ngram-[a-z0-9-]+/g) ?? [])];
  return names.length > 0 ? names : SPEC_TYPES;
}

// ---------------------------------------------------------------------------------------------
// Servers

interface Server {
  name: string;
  url: string;
  pid: number;
  body(prompt: string, maxTokens: number): Record<string, unknown>;
  stop(): Promise<void>;
}

const sampling = (prompt: string, maxTokens: number) => ({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream_options: { include_usage: true } });

/** Objects merge key by key, arrays element by element (so `model_pool: [{...}]` amends the first entry). */
function merge(base: unknown, over: unknown): unknown {
  if (Array.isArray(base) && Array.isArray(over)) return Array.from({ length: Math.max(base.length, over.length) }, (_, i) => (i < over.length ? merge(base[i], over[i]) : base[i]));
  if (base && over && typeof base === "object" && typeof over === "object" && !Array.isArray(base) && !Array.isArray(over)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [k, v] of Object.entries(over)) out[k] = merge(out[k], v);
    return out;
  }
  return over === undefined ? base : over;
}

function moltbotYaml(m: BenchModel): string {
  // The response cache is off: these workloads measure the engine and the serving path, as the
  // peer (which has no response cache) is measured; a repeated greedy request would be a hit.
  const base = { model_path: m.modelPath, threads: THREADS, model_pool: [{ name: m.modelName, type: "llm" }], log: { level: "WARNING" }, cache: { mode: "off" } };
  const extra: unknown = YAML.parse(values["moltbot-yaml"]!) ?? {};
  return YAML.stringify(merge(base, extra));
}

async function startMoltbot(m: BenchModel, name = "moltbot"): Promise<Server & { contextSize: number }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-workloads-"));
  const yaml = path.join(dir, "moltbot.yaml");
  await writeFile(yaml, moltbotYaml(m));
  const port = freePort();
  const s = await startServed(process.execPath, [BIN, "deploy", "--config", yaml, "--port", String(port)], port, "/readyz");
  const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string; context_length: number | null }> };
  const model = models.data[0]!;
  return {
    name,
    url: s.url,
    pid: s.proc.pid!,
    contextSize: model.context_length ?? 2048,
    body: (prompt, maxTokens) => ({ model: model.id, ...sampling(prompt, maxTokens) }),
    stop: async () => {
      await s.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function llamaServerArgs(file: string, np: number, ctxPerSlot: number, extra: string[]): string[] {
  return ["-m", file, "--host", "127.0.0.1", "-t", String(THREADS), "-tb", String(THREADS), "-c", String(np * ctxPerSlot), "-np", String(np), ...extra];
}

async function startLlamaServer(bin: string, file: string, np: number, ctxPerSlot: number, extra: string[] = []): Promise<Server> {
  const port = freePort();
  const args = llamaServerArgs(file, np, ctxPerSlot, extra);
  const s: Served = await startServed(bin, [...args, "--port", String(port)], port, "/health");
  return { name: `llama-server ${[`-np ${np}`, ...extra].join(" ")}`, url: s.url, pid: s.proc.pid!, body: sampling, stop: s.stop };
}

// ---------------------------------------------------------------------------------------------
// Prompts: Brown Corpus text, fitted to a token count with llama-server's /tokenize (same GGUF).

class Prompts {
  private cursor = 0;
  private leadNo = 0;
  private readonly firstToken = new Map<string, number>();

  constructor(
    private readonly words: string[],
    /** Distinct corpus words that start prompts and end prefix prompts, in corpus order. */
    private readonly leads: string[],
    private readonly tokenizeUrl: string,
  ) {}

  static async create(tokenizeUrl: string): Promise<Prompts> {
    const { train, heldOut } = await loadBrownCorpus();
    const words = [...heldOut, ...train].flatMap((f) => f.sentences).join(" ").split(" ");
    const seen = new Set<string>();
    const leads: string[] = [];
    // Lower case: capitalised words start with one of a few dozen tokens in a small vocabulary.
    for (const w of words) if (/^[a-z]{4,12}$/.test(w) && !seen.has(w)) (seen.add(w), leads.push(w));
    return new Prompts(words, leads, tokenizeUrl);
  }

  async tokenize(text: string): Promise<number[]> {
    const r = await fetch(`${this.tokenizeUrl}/tokenize`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ content: text, add_special: false }) });
    return ((await r.json()) as { tokens: number[] }).tokens;
  }

  /** Prompt tokens as the model sees them: the text's tokens and BOS. */
  async count(text: string): Promise<number> {
    return (await this.tokenize(text)).length + 1;
  }

  /** The next lead word (each used once until the list wraps), or the next whose first token is not in `avoid`. */
  private async nextLead(avoid?: Set<number>): Promise<string> {
    for (let tries = 0; tries < this.leads.length; tries++) {
      const w = this.leads[this.leadNo++ % this.leads.length]!;
      if (!avoid) return w;
      let first = this.firstToken.get(w);
      if (first === undefined) this.firstToken.set(w, (first = (await this.tokenize(`${w}:`))[0]!));
      if (avoid.has(first)) continue;
      avoid.add(first);
      return w;
    }
    throw new Error(`no lead word left whose first token differs from ${avoid?.size} others`);
  }

  /** The next n words of the corpus (the cursor moves on, so no two prompts share text). */
  private slice(n: number): string {
    if (this.cursor + n > this.words.length) this.cursor = 0;
    const s = this.words.slice(this.cursor, this.cursor + n).join(" ");
    this.cursor += n;
    return s;
  }

  /** The fewest words from the cursor whose `make(text)` has at least `target` tokens. */
  private async fit(target: number, make: (text: string) => string): Promise<string> {
    let lo = 1;
    let hi = Math.max(4, Math.ceil(target * 1.5));
    if (this.cursor + hi * 4 > this.words.length) this.cursor = 0;
    const at = (n: number) => make(this.words.slice(this.cursor, this.cursor + n).join(" "));
    while ((await this.count(at(hi))) < target) hi *= 2;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((await this.count(at(mid))) >= target) hi = mid;
      else lo = mid + 1;
    }
    return make(this.slice(lo));
  }

  /**
   * "word: text..." of about `target` tokens, its text used by no other prompt. With `distinct`,
   * its first token is also none of the set's (which it joins): such prompts share no prefix.
   */
  async unique(target: number, distinct?: Set<number>): Promise<string> {
    const lead = await this.nextLead(distinct);
    return await this.fit(target, (t) => `${lead}: ${t}`);
  }

  /** A fixed text of about `target` tokens with a last word appended (lastWord()). */
  async prefix(target: number): Promise<string> {
    return await this.fit(target - 2, (t) => t);
  }

  lastWord(): string {
    return this.leads[this.leadNo++ % this.leads.length]!;
  }

  /** A ~`target`-token paragraph, then its first half again: the greedy continuation can copy. */
  async echo(target: number): Promise<string> {
    const p = await this.unique(target);
    const words = p.split(" ");
    return `${p}\n\n${words.slice(0, words.length >> 1).join(" ")}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/** An error and its cause (fetch's own message is only "fetch failed"). */
const describe = (err: unknown) => `${String(err)}${err instanceof Error && err.cause ? ` (${String(err.cause)})` : ""}`.slice(0, 300);

interface Done extends TickedStream {
  sentAt: number;
  completionTokens: number;
  promptTokens?: number;
}

async function request(s: Server, prompt: string, maxTokens: number, onTick?: (n: number) => void): Promise<Done> {
  const sentAt = performance.now();
  const r = await tickedStream(`${s.url}/v1/completions`, s.body(prompt, maxTokens), onTick);
  return { ...r, sentAt, completionTokens: r.usage?.completion_tokens ?? r.tokens, promptTokens: r.usage?.prompt_tokens };
}

/** One figure set per (workload, server), pooled over the rounds. */
class Tally {
  tokens = 0;
  wallMs = 0;
  ttft: number[] = [];
  promptTokens: number[] = [];
  errors: string[] = [];
  windowGaps: number[] = [];
  gaps: number[] = [];
  longTtft: number[] = [];
  rss: number[] = [];
  mainRss: number[] = [];
  drafted = 0;
  accepted = 0;

  add(d: Done): void {
    this.ttft.push(d.ttftMs);
    if (d.promptTokens !== undefined) this.promptTokens.push(d.promptTokens);
    if (d.timings?.draft_n !== undefined) {
      this.drafted += d.timings.draft_n;
      this.accepted += d.timings.draft_n_accepted ?? 0;
    }
  }

  get tps(): number {
    return this.wallMs > 0 ? (this.tokens * 1000) / this.wallMs : NaN;
  }
}

/** Closed-loop clients: each sends its prompts one after another; tokens over the wall time. */
async function clients(s: Server, perClient: string[][], maxTokens: number, t: Tally): Promise<void> {
  const t0 = performance.now();
  await Promise.all(
    perClient.map(async (prompts) => {
      for (const p of prompts) {
        try {
          const d = await request(s, p, maxTokens);
          t.tokens += d.completionTokens;
          t.add(d);
        } catch (err) {
          t.errors.push(describe(err));
        }
      }
    }),
  );
  t.wallMs += performance.now() - t0;
}

/** 4 streams of 128 tokens; once each has 16, a long prompt; gaps in its admission window. */
async function interleaveTrial(s: Server, streamPrompts: string[], longPrompt: string, t: Tally): Promise<void> {
  const STREAM_TOKENS = 128;
  let started = 0;
  let release!: () => void;
  const allStarted = new Promise<void>((r) => (release = r));
  const t0 = performance.now();
  const streams = streamPrompts.map((p) =>
    request(s, p, STREAM_TOKENS, (n) => {
      if (n === 16 && ++started === streamPrompts.length) release();
    }),
  );
  // A stream that fails never reaches 16 tokens: stop waiting for it.
  const settled = Promise.allSettled(streams);
  await Promise.race([allStarted, settled]);
  const long = await request(s, longPrompt, 16).catch((err: unknown) => (t.errors.push(describe(err)), undefined));
  const results = await settled;
  t.wallMs += performance.now() - t0;
  if (!long) return;
  t.longTtft.push(long.ttftMs);
  if (long.promptTokens !== undefined) t.promptTokens.push(long.promptTokens);
  const from = long.sentAt;
  const to = long.sentAt + long.ttftMs;
  for (const r of results) {
    if (r.status === "rejected") {
      t.errors.push(describe(r.reason));
      continue;
    }
    t.tokens += r.value.completionTokens;
    t.ttft.push(r.value.ttftMs);
    const ticks = r.value.ticks;
    for (let i = 1; i < ticks.length; i++) {
      const gap = ticks[i]! - ticks[i - 1]!;
      t.gaps.push(gap);
      if (ticks[i]! > from && ticks[i - 1]! < to) t.windowGaps.push(gap);
    }
  }
}

/** RSS once it holds still (two samples 200 ms apart within 1%), at most 5 s after start-up. */
async function settledRss(read: () => number): Promise<number> {
  let prev = read();
  for (let i = 0; i < 25; i++) {
    await sleep(200);
    const now = read();
    if (Math.abs(now - prev) <= prev * 0.01) return now;
    prev = now;
  }
  return prev;
}

// ---------------------------------------------------------------------------------------------
// The run

interface Side {
  key: "moltbot" | "llama";
  /** The server this workload runs on; llama-server's -np depends on the workload. */
  server(np: number, extra?: string[]): Promise<Server>;
}

/** Which Moltbot ran: bin/moltbot runs dist/, built from the working tree. */
function moltbotVersion(): string {
  const git = (...args: string[]) => execFileSync("git", ["-C", ROOT, ...args], { encoding: "utf8" }).trim();
  const dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src").length > 0;
  const built = statSync(path.join(ROOT, "dist", "src", "cli", "main.js")).mtime.toISOString();
  return `HEAD ${git("rev-parse", "--short", "HEAD")}${dirty ? " (src/ with uncommitted changes)" : ""}, dist/ built ${built}`;
}

const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "n/a");
const MiB = (kib: number) => kib / 1024;

async function main(): Promise<void> {
  const started = performance.now();
  // Read now: others may rebuild dist/ while this runs (the servers started keep what they loaded).
  const version = moltbotVersion();
  const m = await benchModel(values.model!);
  const binDir = peerBinDir();
  const peerBin = peerServerBin(binDir);
  log(`model ${m.file}; llama-server ${peerBin}`);

  const moltbot = await startMoltbot(m);
  const ctx = moltbot.contextSize;
  const peers = new Map<string, Server>();
  const peerFlags = new Set<string>();
  const peer = async (np: number, extra: string[] = []): Promise<Server> => {
    const key = [np, ...extra].join(" ");
    let s = peers.get(key);
    if (!s) {
      s = await startLlamaServer(peerBin, m.file, np, ctx, extra);
      peerFlags.add(llamaServerArgs(path.basename(m.file), np, ctx, extra).join(" "));
      await request(s, "Warm-up: the first request of a server is not measured.", 8);
      peers.set(key, s);
    }
    return s;
  };
  await request(moltbot, "Warm-up: the first request of a server is not measured.", 8);
  const tokenizer = await peer(1);
  const prompts = await Prompts.create(tokenizer.url);

  const sides: Side[] = [
    { key: "moltbot", server: async () => moltbot },
    { key: "llama", server: peer },
  ];
  const tallies = new Map<string, Tally>();
  const tally = (workload: string, side: string) => {
    const k = `${workload}/${side}`;
    if (!tallies.has(k)) tallies.set(k, new Tally());
    return tallies.get(k)!;
  };

  // The repeat workload's speculation: the build's best n-gram type on a few echo prompts.
  let specType = values["spec-type"]!;
  const specProbe: string[] = [];
  if (SELECTED.includes("repeat") && specType === "auto") {
    const probePrompts = [await prompts.echo(200), await prompts.echo(200), await prompts.echo(200)];
    let best = 0;
    for (const type of specTypesOf(peerBin)) {
      let s: Server | undefined;
      try {
        s = await startLlamaServer(peerBin, m.file, 1, ctx, ["--spec-type", type]);
        await request(s, "Warm-up: the first request of a server is not measured.", 8);
        const t = new Tally();
        await clients(s, [probePrompts], 2 * TOKENS, t);
        specProbe.push(`${type} ${fmt(t.tps)} tok/s`);
        log(`spec probe: ${type}: ${fmt(t.tps)} tok/s${t.errors.length ? ` (${t.errors[0]})` : ""}`);
        if (t.errors.length === 0 && t.tps > best) (best = t.tps, (specType = type));
      } catch (err) {
        specProbe.push(`${type} failed`);
        log(`spec probe: ${type}: ${String(err).slice(0, 300)}`);
      } finally {
        await s?.stop();
      }
    }
    if (specType === "auto") throw new Error("no --spec-type of this llama-server works");
  }

  // Prompts per workload and round, the same for both servers.
  // One after another: each prompt takes the corpus text after the previous one's.
  const seq = async <T>(n: number, make: () => Promise<T>) => {
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(await make());
    return out;
  };
  const short = (clientsN: number, each: number) => seq(clientsN, () => seq(each, () => prompts.unique(40)));
  const prefixText = SELECTED.includes("prefix1077") ? await prompts.prefix(1077) : "";

  // Each workload makes its round's prompts once, then runs them on either server.
  const workload =
    <P>(prompts: () => Promise<P>, run: (side: Side, p: P) => Promise<void>) =>
    async () => {
      const p = await prompts();
      return (side: Side) => run(side, p);
    };
  const workloads: Record<Workload, () => Promise<(side: Side) => Promise<void>>> = {
    short1: workload(
      () => short(1, N),
      async (side, p) => await clients(await side.server(1), p, TOKENS, tally("short1", side.key)),
    ),
    short8: workload(
      () => short(8, 3),
      async (side, p) => await clients(await side.server(8), p, TOKENS, tally("short8", side.key)),
    ),
    prefix1077: workload(
      async () => Array.from({ length: N + 1 }, () => `${prefixText} ${prompts.lastWord()}`),
      async (side, [warm, ...rest]) => {
        const s = await side.server(1);
        await request(s, warm!, TOKENS);
        await clients(s, [rest], TOKENS, tally("prefix1077", side.key));
      },
    ),
    cold1077: workload(
      async () => {
        const firsts = new Set<number>();
        return [await seq(N, () => prompts.unique(1077, firsts))];
      },
      async (side, p) => await clients(await side.server(1), p, TOKENS, tally("cold1077", side.key)),
    ),
    c32: workload(
      () => short(32, 2),
      async (side, p) => await clients(await side.server(32), p, TOKENS, tally("c32", side.key)),
    ),
    interleave: workload(
      () => seq(INTERLEAVE_TRIALS, async () => ({ streams: await seq(4, () => prompts.unique(40)), long: await prompts.unique(1000) })),
      async (side, trials) => {
        const s = await side.server(5);
        for (const trial of trials) await interleaveTrial(s, trial.streams, trial.long, tally("interleave", side.key));
      },
    ),
    repeat: workload(
      async () => [await seq(N, () => prompts.echo(200))],
      async (side, p) => {
        if (side.key === "moltbot") {
          await clients(moltbot, p, 2 * TOKENS, tally("repeat", "moltbot"));
          if (MOLTBOT_NO_SPEC_BODY) {
            const plain: Server = { ...moltbot, body: (prompt, maxTokens) => ({ ...moltbot.body(prompt, maxTokens), ...MOLTBOT_NO_SPEC_BODY }) };
            await clients(plain, p, 2 * TOKENS, tally("repeat", "moltbot-nospec"));
          }
        } else {
          await clients(await side.server(1), p, 2 * TOKENS, tally("repeat", "llama"));
          await clients(await side.server(1, ["--spec-type", specType]), p, 2 * TOKENS, tally("repeat", "llama-spec"));
        }
      },
    ),
    memory: workload(
      async () => undefined,
      async (side) => {
        const t = tally("memory", side.key);
        if (side.key === "moltbot") {
          const s = await startMoltbot(m, "moltbot (idle)");
          try {
            t.rss.push(await settledRss(() => descendantPids(s.pid).reduce((n, pid) => n + rssKiB(pid), 0)));
            t.mainRss.push(rssKiB(s.pid));
          } finally {
            await s.stop();
          }
        } else {
          const s = await startLlamaServer(peerBin, m.file, 32, ctx);
          try {
            t.rss.push(await settledRss(() => [s.pid, ...descendantPids(s.pid)].reduce((n, pid) => n + rssKiB(pid), 0)));
          } finally {
            await s.stop();
          }
        }
      },
    ),
  };

  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const w of SELECTED) {
      const runOn = await workloads[w]();
      for (const side of order) {
        const t0 = performance.now();
        await runOn(side);
        const t = tally(w, side.key);
        const what = w === "memory" ? `${fmt(MiB(t.rss.at(-1) ?? NaN))} MiB` : `${fmt(t.tps)} tok/s so far, TTFT p50 ${fmt(median(t.ttft))} ms`;
        log(`[round ${r + 1}/${ROUNDS}] ${w} ${side.key}: ${what} (${fmt((performance.now() - t0) / 1000)} s)${t.errors.length ? `, ${t.errors.length} errors: ${t.errors.at(-1)}` : ""}`);
      }
    }
  }

  await moltbot.stop();
  for (const s of peers.values()) await s.stop();

  let bench = "";
  if (values["llama-bench"]) {
    const lb = path.join(binDir, "llama-bench");
    const exec = promisify(execFile);
    for (const args of [["-m", m.file, "-t", "1,2", "-p", "0", "-n", "64"], ["-m", m.file, "-t", "1,2", "-p", "512", "-n", "0"]]) {
      log(`llama-bench ${args.join(" ")}`);
      const { stdout } = await exec(lb, args, { maxBuffer: 1 << 20 });
      bench += `\n\`llama-bench ${args.join(" ").replace(m.file, path.basename(m.file))}\`\n\n${stdout.trim()}\n`;
    }
  }

  // The report.
  const out: string[] = [];
  out.push(`# bench/workloads.ts — ${new Date().toISOString()}`);
  out.push(`machine: ${machine()}`);
  out.push(`command: ${commandLine()}`);
  out.push(`moltbot: ${version}`);
  out.push(`model: ${values.model} (${path.basename(m.file)}); ${THREADS} threads both; ${ROUNDS} rounds; ${TOKENS}-token completions unless said; context per sequence ${ctx}`);
  out.push(`moltbot.yaml: ${JSON.stringify(YAML.parse(moltbotYaml(m)))}`);
  out.push(`llama-server (${peerBin}): ${[...peerFlags].map((f) => `\`${f}\``).join("; ")}`);
  out.push("");
  out.push("| workload | metric | Moltbot | llama-server | Moltbot / llama-server |");
  out.push("|---|---|---|---|---|");
  const row = (w: string, metric: string, a: string, b: string, ratio: string) => out.push(`| ${w} | ${metric} | ${a} | ${b} | ${ratio} |`);
  const ratio = (a: number, b: number) => fmt(a / b, 2);
  const label: Record<Workload, string> = {
    short1: `short1: 1 client, ${N} req/round`,
    short8: "short8: 8 clients x 3 req",
    prefix1077: `prefix1077: 1 client, shared prefix, ${N} req/round + 1 warm-up`,
    cold1077: `cold1077: 1 client, ${N} req/round`,
    c32: "c32: 32 clients x 2 req (llama-server -np 32)",
    interleave: `interleave: 4 x 128-token streams + 1 long prompt, ${INTERLEAVE_TRIALS} trial(s)/round`,
    repeat: `repeat: echo prompts, ${2 * TOKENS}-token completions, ${N} req/round`,
    memory: "memory: idle after start-up",
  };
  const promptNote = (a: Tally) => (a.promptTokens.length ? `, ~${fmt(median(a.promptTokens), 0)}-token prompts` : "");
  for (const w of SELECTED) {
    const a = tally(w, "moltbot");
    const b = tally(w, "llama");
    const errs = a.errors.length + b.errors.length ? ` (errors: Moltbot ${a.errors.length}, llama-server ${b.errors.length})` : "";
    const name = `${label[w]}${w === "interleave" ? "" : promptNote(b)}${errs}`;
    if (w === "memory") {
      const ra = median(a.rss);
      const rb = median(b.rss);
      row(name, "RSS MiB (Moltbot: its workers; + main process)", `${fmt(MiB(ra))} (+ ${fmt(MiB(median(a.mainRss)))})`, `${fmt(MiB(rb))} (-np 32)`, ratio(ra, rb));
      continue;
    }
    if (w === "interleave") {
      row(name, "tok/s of the 4 streams", fmt(a.tps), fmt(b.tps), ratio(a.tps, b.tps));
      row("", `long prompt${promptNote(b)}: TTFT p50 / p99 ms`, `${fmt(median(a.longTtft))} / ${fmt(percentile(a.longTtft, 99))}`, `${fmt(median(b.longTtft))} / ${fmt(percentile(b.longTtft, 99))}`, ratio(median(a.longTtft), median(b.longTtft)));
      const wa = a.windowGaps.length ? percentile(a.windowGaps, 99) : NaN;
      const wb = b.windowGaps.length ? percentile(b.windowGaps, 99) : NaN;
      row("", "streams' gap p99 ms, admission window", `${fmt(wa)} (${a.windowGaps.length} gaps)`, `${fmt(wb)} (${b.windowGaps.length} gaps)`, ratio(wa, wb));
      row("", "streams' gap p99 ms, overall", fmt(percentile(a.gaps, 99)), fmt(percentile(b.gaps, 99)), ratio(percentile(a.gaps, 99), percentile(b.gaps, 99)));
      continue;
    }
    row(name, "tok/s", fmt(a.tps), fmt(b.tps), ratio(a.tps, b.tps));
    row("", "TTFT p50 / p99 ms", `${fmt(median(a.ttft))} / ${fmt(percentile(a.ttft, 99))}`, `${fmt(median(b.ttft))} / ${fmt(percentile(b.ttft, 99))}`, `${ratio(median(a.ttft), median(b.ttft))} / ${ratio(percentile(a.ttft, 99), percentile(b.ttft, 99))}`);
    if (w === "repeat") {
      const spec = tally("repeat", "llama-spec");
      const acc = spec.drafted > 0 ? `, ${fmt((100 * spec.accepted) / spec.drafted, 0)}% of ${spec.drafted} drafted accepted` : "";
      row("", `tok/s, llama-server --spec-type ${specType}${acc}`, "", fmt(spec.tps), ratio(a.tps, spec.tps));
      if (MOLTBOT_NO_SPEC_BODY) {
        const plain = tally("repeat", "moltbot-nospec");
        row("", `tok/s, Moltbot ${JSON.stringify(MOLTBOT_NO_SPEC_BODY)}`, fmt(plain.tps), "", ratio(plain.tps, b.tps));
      }
    }
  }
  if (specProbe.length) out.push(`\nllama-server --spec-type probe (3 echo prompts each, ${2 * TOKENS} tokens): ${specProbe.join(", ")}; used: ${specType}`);
  for (const w of SELECTED) {
    for (const side of ["moltbot", "llama", "llama-spec"]) {
      const t = tallies.get(`${w}/${side}`);
      if (t?.errors.length) out.push(`errors, ${w} ${side}: ${t.errors.length}, first: ${t.errors[0]}`);
    }
  }
  out.push(`\nrun time ${fmt((performance.now() - started) / 1000, 0)} s`);
  console.log(out.join("\n") + bench);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
