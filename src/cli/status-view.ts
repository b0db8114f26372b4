// What `moltbot status` shows: per-model rates derived from two successive status documents,
// and the text screen (a header, a models table, a pool entries table). Pure functions: the
// command (commands/status-run.ts) owns fetching, timing and the terminal.
import type { ModelStatus, StatusDoc } from "./status-doc.js";

/** One fetched document and when it arrived (performance.now() ms). */
export interface Sample {
  doc: StatusDoc;
  atMs: number;
}

export interface ModelRates {
  /** Worker CPU over the time since the previous sample, in % of one core; null on the first sample or a new worker. */
  cpuPercent: number | null;
  requestsPerS: number | null;
  tokensPerS: number | null;
}

/**
 * Rates of each model (by name) between `prev` and `cur`: deltas of the totals over the elapsed
 * time. Without a usable previous sample (the first refresh, or the server restarted and its
 * totals began again) requests/s and tokens/s come from the server's own window figures.
 */
export function modelRates(cur: Sample, prev: Sample | undefined): Map<string, ModelRates> {
  const out = new Map<string, ModelRates>();
  const sameServer = prev !== undefined && prev.doc.server.pid === cur.doc.server.pid && (cur.doc.server.uptimeS ?? 0) >= (prev.doc.server.uptimeS ?? 0);
  // The server's uptime advances by exactly the time between its two answers; the client's
  // clock adds the request latencies' difference. Fall back to it when uptime is missing.
  const up0 = prev?.doc.server.uptimeS;
  const up1 = cur.doc.server.uptimeS;
  const elapsedS = sameServer && up0 != null && up1 != null && up1 > up0 ? up1 - up0 : prev ? (cur.atMs - prev.atMs) / 1000 : 0;
  for (const m of cur.doc.models) {
    const p = sameServer ? prev.doc.models.find((x) => x.name === m.name) : undefined;
    const windowS = cur.doc.windowS ?? 0;
    const fromWindow = (v: number | null) => (v !== null && windowS > 0 ? v / windowS : null);
    const delta = (a: number | null | undefined, b: number | null) => (p !== undefined && elapsedS > 0 && a != null && b !== null && b >= a ? (b - a) / elapsedS : undefined);
    const requests = delta(p?.totals.requests, m.totals.requests);
    const tokens = delta(p?.totals.completionTokens, m.totals.completionTokens);
    const cpu = p !== undefined && p.pid !== null && p.pid === m.pid ? delta(p.cpuSeconds, m.cpuSeconds) : undefined;
    out.set(m.name, {
      cpuPercent: cpu === undefined ? null : cpu * 100,
      requestsPerS: requests ?? fromWindow(m.window.requests),
      tokensPerS: tokens ?? fromWindow(m.window.completionTokens),
    });
  }
  return out;
}

export interface ScreenOptions {
  url: string;
  now: Date;
  /** Seconds between refreshes; undefined for a single print. */
  intervalS?: number | undefined;
}

/** The status screen, one string per line (not cut to any width). */
export function renderStatus(sample: Sample, rates: Map<string, ModelRates>, opts: ScreenOptions): string[] {
  const { doc } = sample;
  const s = doc.server;
  const lines: string[] = [];
  const every = opts.intervalS === undefined ? "" : `, every ${seconds(opts.intervalS)}`;
  lines.push(`moltbot ${s.version} at ${s.listen ?? opts.url}  pid ${show(s.pid)}  up ${s.uptimeS === null ? "-" : duration(s.uptimeS)}  (${clock(opts.now)}${every})`);
  lines.push("");
  const window = doc.windowS === null ? "window" : `last ${seconds(doc.windowS)}`;
  lines.push(
    ...table(
      ["MODEL", "VERSION", "STATE", "PID", "RSS", "CPU", "SLOTS", "QUEUE h/n/l", "REQ/S", "TOK/S", "P50", "P95", "ERRORS", "RESTARTS"],
      doc.models.map((m) => modelRow(m, rates.get(m.name))),
      3,
    ),
  );
  if (doc.models.length === 0) lines.push("(no models)");
  lines.push(`latency and errors: ${window}; rates: ${opts.intervalS === undefined ? window : "since the previous refresh"}`);
  const limited = doc.models.filter((m) => m.resources !== null);
  if (limited.length > 0) lines.push("", ...limited.map(limitsLine));
  const placed = doc.models.filter((m) => m.placement !== null);
  if (placed.length > 0) {
    lines.push("");
    lines.push(
      ...table(
        ["MODEL", "BACKEND", "DEVICE", "LAYERS ON DEVICE", "DEVICE MEM", "THREADS"],
        placed.map((m) => {
          const p = m.placement!;
          return [m.name, p.backend, `${p.device} (${p.description})`, `${show(p.offloadedLayers)}/${show(p.totalLayers)}`, p.deviceMemoryBytes === null ? "-" : bytes(p.deviceMemoryBytes), show(p.threads)];
        }),
        3,
      ),
    );
  }
  if (doc.entries.length > 0) {
    lines.push("");
    lines.push(
      ...table(
        ["ENTRY", "MODEL", "PRIORITY", "BUDGET SPENT", "LIMIT", "MONTH"],
        doc.entries.map((e) => [e.name, e.model, e.priority, e.budget === null ? "-" : money(e.budget.spent), e.budget === null ? "-" : e.budget.limit === null ? "unlimited" : money(e.budget.limit), e.budget?.month ?? "-"]),
        3,
      ),
    );
  }
  return lines;
}

/** The screen while the server does not answer. */
export function renderUnreachable(url: string, error: string, downForS: number, opts: ScreenOptions, lastSeen: Date | undefined): string[] {
  return [
    `moltbot at ${url}: unreachable for ${duration(downForS)}  (${clock(opts.now)}${opts.intervalS === undefined ? "" : `, retrying every ${seconds(opts.intervalS)}`})`,
    `  ${error}`,
    lastSeen === undefined ? "  no answer since this command started" : `  last answer at ${clock(lastSeen)}`,
  ];
}

function modelRow(m: ModelStatus, r: ModelRates | undefined): string[] {
  const q = m.queue;
  return [
    m.name,
    m.version,
    m.state,
    show(m.pid),
    m.rssBytes === null ? "-" : bytes(m.rssBytes),
    r?.cpuPercent != null ? `${r.cpuPercent.toFixed(1)}%` : "-",
    `${show(m.slots.busy)}/${show(m.slots.total)}`,
    `${show(q.high)}/${show(q.normal)}/${show(q.low)}`,
    rate(r?.requestsPerS),
    rate(r?.tokensPerS),
    ms(m.window.p50Ms),
    ms(m.window.p95Ms),
    show(m.window.errors),
    show(m.restarts),
  ];
}

/** "limits chat v1: cpu.quota 150% (throttled 1.2s), memory.limit 4GiB (now 310M, peak 402M), io.read_bps 10MB/s NOT ENFORCED (why)". */
function limitsLine(m: ModelStatus): string {
  const r = m.resources!;
  const parts = r.limits.map((l) => {
    const use = l.limit === "cpu.quota" && r.cpuThrottledS !== null ? ` (throttled ${r.cpuThrottledS.toFixed(1)}s)` : l.limit === "memory.limit" && r.memoryBytes !== null ? ` (now ${bytes(r.memoryBytes)}${r.memoryPeakBytes === null ? "" : `, peak ${bytes(r.memoryPeakBytes)}`}${r.oomKills ? `, ${r.oomKills} OOM kill(s)` : ""})` : "";
    return `${l.limit} ${l.value}${l.enforced ? use : ` NOT ENFORCED (${l.reason ?? "unknown"})`}`;
  });
  return `limits ${m.name} ${m.version}: ${parts.join(", ") || "none"}`;
}

/** Columns padded to their widest cell: the first `textColumns` left-aligned, the figures after them right-aligned. */
function table(head: string[], rows: string[][], textColumns: number): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < textColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(head), ...rows.map(line)];
}

function show(v: number | null): string {
  return v === null ? "-" : String(v);
}

function rate(v: number | null | undefined): string {
  return v == null ? "-" : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function ms(v: number | null): string {
  return v === null ? "-" : v >= 10_000 ? `${(v / 1000).toFixed(1)}s` : `${Math.round(v)}ms`;
}

function bytes(v: number): string {
  const mib = v / 2 ** 20;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)}G` : `${mib.toFixed(0)}M`;
}

/** The ledger's micro-units, without trailing zeros past the cents: 12.50, 0.000123. */
function money(v: number | null): string {
  return v === null ? "-" : v.toFixed(6).replace(/(\.\d\d\d*?)0+$/, "$1");
}

function seconds(s: number): string {
  return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
}

/** 12s, 5m03s, 1h02m, 3d04h. */
export function duration(totalS: number): string {
  const s = Math.max(0, Math.floor(totalS));
  const two = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${two(Math.floor((s % 86_400) / 3600))}h`;
}

function clock(d: Date): string {
  return d.toTimeString().slice(0, 8);
}
