// `moltbot status`, the implementation: loaded by commands/status.ts only when the command runs.
// Reads GET /admin/status under a timeout, once or every --interval seconds; then it redraws
// the screen in place (cursor home, each line cleared to its end, the rest of the screen
// cleared; the cursor hidden meanwhile) and rides out an unreachable server.
import type { ArgumentsCamelCase } from "yargs";
import { MoltbotError } from "../../errors.js";
import { readStatusDoc, type StatusDoc } from "../status-doc.js";
import { modelRates, renderStatus, renderUnreachable, type Sample } from "../status-view.js";
import { authHeader, endpoint, requestServer, serverUrl, useCaFile } from "../server-url.js";
import type { StatusArgs } from "./status.js";

const HIDE_CURSOR = "\x1b[?25l";
const SHOW_CURSOR = "\x1b[?25h";
const HOME = "\x1b[H";
const CLEAR_LINE_END = "\x1b[K";
const CLEAR_SCREEN_END = "\x1b[J";

/** The server's answer, or why there was none, in one line. */
type Fetched = { ok: true; doc: StatusDoc; raw: Record<string, unknown>; atMs: number } | { ok: false; error: string };

/** --token / $MOLTBOT_TOKEN as a header, set once per run by status(). */
let auth: Record<string, string> = {};

export async function status(args: ArgumentsCamelCase<StatusArgs>): Promise<void> {
  auth = authHeader(args);
  const base = await serverUrl(args);
  useCaFile(args);
  const intervalS = args.interval;
  // /admin/status takes whole seconds (1..3600); the window matches the refresh interval.
  const windowS = Math.min(3600, Math.max(1, Math.ceil(intervalS ?? 5)));
  const url = endpoint(base, `admin/status?window=${windowS}`);
  // A refresh never waits longer than its interval (nor than 5 s, nor less than 1 s).
  const timeoutMs = Math.round(1000 * Math.min(5, Math.max(1, intervalS ?? 5)));

  if (intervalS === undefined) {
    const r = await fetchStatus(url, timeoutMs);
    if (!r.ok) throw new MoltbotError("server_unreachable", `cannot read the status of ${url}: ${r.error}`);
    const sample: Sample = { doc: r.doc, atMs: r.atMs };
    const rates = modelRates(sample, undefined);
    if (args.json) console.log(JSON.stringify(jsonRecord(base, r.raw, rates)));
    else console.log(renderStatus(sample, rates, { url: base, now: new Date() }).join("\n"));
    return;
  }
  await watch(base, url, intervalS, timeoutMs, args.json === true);
}

async function fetchStatus(url: string, timeoutMs: number, cancel?: AbortSignal): Promise<Fetched> {
  let res: { status: number; body: string };
  try {
    const timeout = AbortSignal.timeout(timeoutMs);
    res = await requestServer(url, { method: "GET", headers: { accept: "application/json", ...auth }, signal: cancel === undefined ? timeout : AbortSignal.any([timeout, cancel]) });
  } catch (err) {
    const timedOut = err instanceof Error && err.name === "AbortError";
    return { ok: false, error: timedOut ? `no answer within ${timeoutMs / 1000} s` : err instanceof Error ? err.message : String(err) };
  }
  if (res.status !== 200) {
    const hint = res.status === 404 ? " (a server without /admin/status: older than this CLI?)" : "";
    return { ok: false, error: `HTTP ${res.status}${hint}: ${res.body.replace(/\s+/g, " ").slice(0, 200)}` };
  }
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    return { ok: false, error: "the answer is not JSON" };
  }
  const doc = readStatusDoc(body);
  if ("invalid" in doc) return { ok: false, error: doc.invalid };
  return { ok: true, doc, raw: body as Record<string, unknown>, atMs: performance.now() };
}

/** The server's document as it sent it, each model with the rates derived here added. */
function jsonRecord(url: string, raw: Record<string, unknown>, rates: ReturnType<typeof modelRates>): Record<string, unknown> {
  const models = (raw.models as unknown[]).map((m) => {
    if (typeof m !== "object" || m === null) return m;
    const r = rates.get(String((m as { name?: unknown }).name));
    return { ...m, cpu_percent: r?.cpuPercent ?? null, requests_per_s: r?.requestsPerS ?? null, tokens_per_s: r?.tokensPerS ?? null };
  });
  return { time: new Date().toISOString(), url, reachable: true, ...raw, models };
}

/** Refresh every `intervalS` until SIGINT/SIGTERM, which end it with exit 0. */
async function watch(base: string, url: string, intervalS: number, timeoutMs: number, json: boolean): Promise<void> {
  const out = process.stdout;
  let stopped = false;
  let wake: (() => void) | undefined;
  // Ctrl-C also cuts a refresh short that waits on a server that does not answer.
  const cancel = new AbortController();
  const stop = () => {
    stopped = true;
    cancel.abort();
    wake?.();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);

  let lines: string[] = [];
  // Drawn whenever stdout is text, even into a pipe: the redraw is what was asked for; --json is the form for logs.
  const draw = () => {
    const width = out.columns || Number(process.env.COLUMNS) || 0;
    // One line short of the screen: writing the last row would scroll it.
    const rows = out.rows ? out.rows - 1 : lines.length;
    const cut = (l: string) => (width > 0 && l.length > width ? l.slice(0, width) : l);
    out.write(HOME + lines.slice(0, rows).map((l) => cut(l) + CLEAR_LINE_END).join("\n") + CLEAR_SCREEN_END);
  };
  const restoreCursor = () => out.write(SHOW_CURSOR);
  if (!json) {
    out.write(HIDE_CURSOR);
    // Also on an exit that skips the normal end (an uncaught error): never leave the cursor hidden.
    process.once("exit", restoreCursor);
    out.on("resize", draw);
  }

  let prev: Sample | undefined;
  let lastSeen: Date | undefined;
  let downSinceMs: number | undefined;
  while (!stopped) {
    const startedMs = performance.now();
    const r = await fetchStatus(url, timeoutMs, cancel.signal);
    if (stopped) break;
    const now = new Date();
    if (r.ok) {
      const sample: Sample = { doc: r.doc, atMs: r.atMs };
      const rates = modelRates(sample, prev);
      prev = sample;
      lastSeen = now;
      downSinceMs = undefined;
      if (json) out.write(JSON.stringify(jsonRecord(base, r.raw, rates)) + "\n");
      else lines = renderStatus(sample, rates, { url: base, now, intervalS });
    } else {
      downSinceMs ??= performance.now();
      const downForS = (performance.now() - downSinceMs) / 1000;
      if (json) out.write(JSON.stringify({ time: now.toISOString(), url: base, reachable: false, error: r.error, unreachable_s: Math.round(downForS * 10) / 10 }) + "\n");
      else lines = renderUnreachable(base, r.error, downForS, { url: base, now, intervalS }, lastSeen);
    }
    if (!json) draw();
    const waitMs = Math.max(0, intervalS * 1000 - (performance.now() - startedMs));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  if (!json) {
    out.off("resize", draw);
    process.off("exit", restoreCursor);
    // Leave the last screen in place and the prompt below it.
    out.write(SHOW_CURSOR + "\n");
  }
  process.off("SIGINT", stop);
  process.off("SIGTERM", stop);
}
