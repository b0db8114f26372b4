// Soak: steady chat traffic at a fixed concurrency while the model worker is SIGKILLed on a
// schedule. Measures what a client sees of the availability promise: requests that got a
// complete answer, failures by kind and cause, the longest time from a kill to the next
// successful response, and latency.
//
//   node --import tsx bench/soak.ts [--model demo|m100|PATH] [--minutes 10] [--clients 4] [--kill-every 60]
//        [--tokens 32] [--threads N]
//
// Kills fall half a period into each period (30 s, 90 s, ... with --kill-every 60), so the last
// one has time to recover before the run ends. The worker's pid comes from GET /admin/status
// (models[0].pid); after each kill the script waits until the status names another pid, ready.
// A request succeeds when it got a complete answer: a whole one 200 with `usage`, a stream a
// `finish_reason` and `[DONE]` with no error event. Clients alternate streamed and whole
// requests. The server's log goes to a file (path printed) for the failures' details.
import { createWriteStream } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { benchModel, commandLine, freePort, machine, percentile, sleep, sseData, startServed } from "./lib.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    minutes: { type: "string", default: "10" },
    clients: { type: "string", default: "4" },
    "kill-every": { type: "string", default: "60" },
    tokens: { type: "string", default: "32" },
    threads: { type: "string" },
  },
});
const DURATION_MS = Number(values.minutes) * 60_000;
const CLIENTS = Number(values.clients);
const KILL_EVERY_MS = Number(values["kill-every"]) * 1000;
const TOKENS = Number(values.tokens);
// A request still unanswered after this long counts as failed ("client timeout"), so a hang
// cannot stall the run.
const CLIENT_TIMEOUT_MS = 60_000;
const ROOT = path.resolve(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "moltbot");

// Short prompts of the kind a chat front end sends; a counter keeps each one distinct so the
// prefix cache does not turn the run into cache hits.
const PROMPTS = [
  "What is the capital of France?",
  "Write one sentence about the weather today.",
  "Summarize the plot of Hamlet in two sentences.",
  "Give me three ideas for a quick dinner.",
  "How do I reverse a list in Python?",
  "Explain what a mortgage is to a teenager.",
  "Translate 'good morning' into Spanish and German.",
  "What should I pack for a weekend hike?",
  "Suggest a name for a small bakery.",
  "Why is the sky blue?",
  "Draft a polite reply declining a meeting invitation.",
  "List two pros and two cons of remote work.",
];

type Kind = "whole" | "stream";
interface Outcome {
  kind: Kind;
  ok: boolean;
  /** Why it failed: "503 worker_crashed", "stream cut after first event (worker_crashed)", ... */
  cause?: string;
  startMs: number;
  endMs: number;
}

const t0 = performance.now();
const now = () => performance.now() - t0;

interface ErrorBody {
  error?: { code?: string | null; message?: string };
}
const codeOf = (body: ErrorBody | undefined) => body?.error?.code ?? "no code";

async function whole(url: string, body: Record<string, unknown>): Promise<Omit<Outcome, "startMs" | "endMs">> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
  const text = await res.text();
  let json: (ErrorBody & { usage?: unknown; choices?: Array<{ finish_reason?: string | null }> }) | undefined;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.status !== 200) return { kind: "whole", ok: false, cause: `${res.status} ${codeOf(json)}` };
  if (!json?.usage || !json.choices?.[0]?.finish_reason) return { kind: "whole", ok: false, cause: "200 without usage or finish_reason" };
  return { kind: "whole", ok: true };
}

async function stream(url: string, body: Record<string, unknown>): Promise<Omit<Outcome, "startMs" | "endMs">> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }), signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
  if (res.status !== 200 || !res.body) {
    let json: ErrorBody | undefined;
    try {
      json = JSON.parse(await res.text());
    } catch {
      json = undefined;
    }
    return { kind: "stream", ok: false, cause: `${res.status} ${codeOf(json)}` };
  }
  let events = 0;
  let finish = false;
  let done = false;
  let error: string | undefined;
  for await (const event of sseData(res.body)) {
    if (event === "[DONE]") {
      done = true;
      continue;
    }
    const data = JSON.parse(event) as ErrorBody & { choices?: Array<{ finish_reason?: string | null }> };
    if (data.error) {
      error = codeOf(data);
      continue;
    }
    events++;
    if (data.choices?.[0]?.finish_reason) finish = true;
  }
  if (error !== undefined) return { kind: "stream", ok: false, cause: events > 0 ? `stream cut after first event (${error})` : `error event before any other (${error})` };
  if (!done || !finish) return { kind: "stream", ok: false, cause: `stream ended without ${finish ? "" : "finish_reason"}${!finish && !done ? " and " : ""}${done ? "" : "[DONE]"}` };
  return { kind: "stream", ok: true };
}

interface Status {
  models: Array<{ pid: number | null; state: string; restarts: number; totals: { requests: number; errors: number } }>;
}
const status = async (base: string) => (await (await fetch(`${base}/admin/status`)).json()) as Status;

interface Kill {
  atMs: number;
  oldPid: number;
  newPid?: number;
  /** Kill to /admin/status showing another pid, ready. */
  restartMs?: number;
}

async function main(): Promise<void> {
  console.log(`# bench/soak.ts — ${new Date().toISOString()}`);
  console.log(`machine: ${machine()}`);
  console.log(`command: ${commandLine()}`);
  const { modelPath } = await benchModel(values.model!);
  const logFile = path.join(await mkdtemp(path.join(os.tmpdir(), "moltbot-soak-")), "server.log");
  const port = freePort();
  const args = [BIN, "deploy", "--model-path", modelPath, "--port", String(port), "--log-level", "WARNING"];
  if (values.threads) args.push("--threads", values.threads);
  const s = await startServed(process.execPath, args, port, "/readyz");
  const log = createWriteStream(logFile);
  s.proc.stdout!.pipe(log);
  s.proc.stderr!.pipe(log);
  const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  const model = models.data[0]!.id;
  console.log(`model ${values.model} (${model}), ${CLIENTS} clients (alternating streamed / whole chat completions, max_tokens ${TOKENS}), ${values.minutes} min, worker SIGKILLed every ${values["kill-every"]} s; server log: ${logFile}`);

  const url = `${s.url}/v1/chat/completions`;
  const outcomes: Outcome[] = [];
  const startedAt = now();
  const endAt = startedAt + DURATION_MS;
  let n = 0;
  const clients = Array.from({ length: CLIENTS }, async (_, k) => {
    for (let i = 0; now() < endAt; i++) {
      const kind: Kind = (k + i) % 2 === 0 ? "stream" : "whole";
      const no = n++;
      const body = { model, messages: [{ role: "user", content: `${PROMPTS[no % PROMPTS.length]} (#${no})` }], max_tokens: TOKENS, temperature: 0.7 };
      const startMs = now();
      let o: Omit<Outcome, "startMs" | "endMs">;
      try {
        o = kind === "stream" ? await stream(url, body) : await whole(url, body);
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        o = { kind, ok: false, cause: e.name === "TimeoutError" ? "client timeout" : `transport error (${e.cause?.code ?? e.message})` };
      }
      outcomes.push({ ...o, startMs, endMs: now() });
    }
  });

  const kills: Kill[] = [];
  const killer = (async () => {
    for (let k = 0; ; k++) {
      const at = startedAt + KILL_EVERY_MS / 2 + k * KILL_EVERY_MS;
      if (at >= endAt) return;
      await sleep(Math.max(0, at - now()));
      const before = (await status(s.url)).models[0]!;
      if (before.pid === null || before.state !== "ready") {
        console.log(`kill ${k + 1} skipped: worker ${before.state}, pid ${before.pid}`);
        continue;
      }
      const kill: Kill = { atMs: now(), oldPid: before.pid };
      process.kill(before.pid, "SIGKILL");
      kills.push(kill);
      const deadline = now() + 60_000;
      while (now() < deadline) {
        const m = (await status(s.url)).models[0]!;
        if (m.pid !== null && m.pid !== kill.oldPid && m.state === "ready") {
          kill.newPid = m.pid;
          kill.restartMs = now() - kill.atMs;
          break;
        }
        await sleep(20);
      }
      if (kill.newPid === undefined) console.log(`kill ${k + 1}: the worker's pid did not change within 60 s (still ${kill.oldPid}?)`);
    }
  })();

  await Promise.all([...clients, killer]);
  const final = (await status(s.url)).models[0]!;
  await s.stop();
  log.end();

  // Report.
  const ok = outcomes.filter((o) => o.ok);
  const failed = outcomes.filter((o) => !o.ok);
  const byKind = (kind: Kind) => outcomes.filter((o) => o.kind === kind);
  const pct = (a: number, b: number) => (b === 0 ? "-" : `${((a / b) * 100).toFixed(2)}%`);
  console.log(`\nrequests sent ${outcomes.length}, succeeded ${ok.length}, failed ${failed.length}: success rate ${pct(ok.length, outcomes.length)}`);
  for (const kind of ["whole", "stream"] as const) {
    const all = byKind(kind);
    const good = all.filter((o) => o.ok).length;
    console.log(`  ${kind}: sent ${all.length}, succeeded ${good}, failed ${all.length - good} (${pct(good, all.length)})`);
  }
  const causes = new Map<string, number>();
  for (const o of failed) causes.set(`${o.kind}: ${o.cause}`, (causes.get(`${o.kind}: ${o.cause}`) ?? 0) + 1);
  if (causes.size > 0) console.log("failures by kind and cause:");
  for (const [cause, count] of [...causes].sort((a, b) => b[1] - a[1])) console.log(`  ${count} x ${cause}`);

  const restarted = kills.filter((k) => k.newPid !== undefined);
  console.log(`\nkills done ${kills.length}; worker pid changed after ${restarted.length} of them; server counts ${final.restarts} restarts`);
  let worstGap = 0;
  for (const [i, k] of kills.entries()) {
    // The first complete answer that arrived after the kill (in flight at the kill and retried, or sent after it).
    const next = ok.filter((o) => o.endMs > k.atMs).reduce<Outcome | undefined>((a, o) => (a === undefined || o.endMs < a.endMs ? o : a), undefined);
    const gap = next ? next.endMs - k.atMs : Number.NaN;
    if (next) worstGap = Math.max(worstGap, gap);
    const lost = failed.filter((o) => o.endMs >= k.atMs && o.endMs < (kills[i + 1]?.atMs ?? Infinity)).length;
    console.log(
      `  kill ${i + 1} at ${(k.atMs / 1000 - startedAt / 1000).toFixed(1)} s: pid ${k.oldPid} -> ${k.newPid ?? "?"} ready after ${k.restartMs?.toFixed(0) ?? "?"} ms, next success after ${next ? gap.toFixed(0) : "none"} ms, ${lost} failed until the next kill`,
    );
  }
  console.log(`longest time from a kill to the next successful response: ${worstGap.toFixed(0)} ms`);
  const lat = (os: Outcome[]) => os.map((o) => o.endMs - o.startMs);
  const p = (xs: number[]) => (xs.length === 0 ? "-" : `p50 ${percentile(xs, 50).toFixed(0)} ms, p95 ${percentile(xs, 95).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms`);
  console.log(`\nlatency of successful requests: overall ${p(lat(ok))}`);
  for (const kind of ["whole", "stream"] as const) console.log(`  ${kind}: ${p(lat(ok.filter((o) => o.kind === kind)))}`);
  const failedOutsideKills = failed.filter((o) => !kills.some((k) => o.startMs <= k.atMs + (k.restartMs ?? 60_000) && o.endMs >= k.atMs)).length;
  console.log(`failures not overlapping a kill or its restart: ${failedOutsideKills}`);
  console.log(`server /admin/status totals: ${final.totals.requests} requests, ${final.totals.errors} errors`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
