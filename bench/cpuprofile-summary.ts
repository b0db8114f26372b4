// Sums the self time of a V8 .cpuprofile (node --cpu-prof) by function and file, to see where
// a process's CPU goes. Busy time excludes "(idle)"; per-token figures divide by the tokens the
// caller says the process served.
//
//   node --import tsx bench/cpuprofile-summary.ts FILE.cpuprofile [--top 25] [--tokens N]
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  ms: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  rows: SelfTime[];
}

function frameName(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const fn = functionName || "(anonymous)";
  if (!url) return fn;
  // Keep the part of the path that says which package or source file it is.
  const u = url.replace(/^file:\/\//, "");
  const nm = u.lastIndexOf("node_modules/");
  const where = nm >= 0 ? u.slice(nm + "node_modules/".length) : u.startsWith("node:") ? u : path.relative(process.cwd(), u) || u;
  return `${fn} ${where}:${lineNumber + 1}`;
}

/**
 * `window`: only samples between these two times, in microseconds of the monotonic clock
 * (process.hrtime), the clock V8 stamps its samples with; e.g. the steady state after start-up.
 */
export function summarize(file: string, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let totalUs = 0;
  let at = p.startTime;
  // timeDeltas[i] is the time between sample i-1 and sample i: charge it to sample i-1.
  for (let i = 0; i < p.samples.length; i++) {
    at += p.timeDeltas[i] ?? 0;
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const node = byId.get(p.samples[i]!);
    if (!node) continue;
    const name = frameName(node);
    self.set(name, (self.get(name) ?? 0) + dt);
    totalUs += dt;
  }
  const idleMs = (self.get("(idle)") ?? 0) / 1000;
  const totalMs = totalUs / 1000;
  const rows = [...self].map(([name, us]) => ({ name, ms: us / 1000 })).filter((r) => r.name !== "(idle)").sort((a, b) => b.ms - a.ms);
  return { totalMs, idleMs, busyMs: totalMs - idleMs, rows };
}

/** A text table of the top self-time rows; `tokens` adds microseconds per token. */
export function formatSummary(s: ProfileSummary, top: number, tokens?: number): string {
  const perTok = (ms: number) => (tokens ? ` | ${((ms * 1000) / tokens).toFixed(1)}` : "");
  const lines = [
    `profiled ${s.totalMs.toFixed(0)} ms, busy ${s.busyMs.toFixed(0)} ms (${((100 * s.busyMs) / s.totalMs).toFixed(1)}%)` +
      (tokens ? `, ${tokens} tokens: ${((s.busyMs * 1000) / tokens).toFixed(1)} us busy per token` : ""),
    `| self ms | % of busy${tokens ? " | us/token" : ""} | function |`,
    `|---|---|${tokens ? "---|" : ""}---|`,
  ];
  for (const r of s.rows.slice(0, top)) lines.push(`| ${r.ms.toFixed(1)} | ${((100 * r.ms) / s.busyMs).toFixed(1)}${perTok(r.ms)} | ${r.name} |`);
  return lines.join("\n");
}

if (process.argv[1]?.endsWith("cpuprofile-summary.ts")) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: "string", default: "25" }, tokens: { type: "string" } } });
  for (const f of positionals) {
    console.log(`\n# ${f}`);
    console.log(formatSummary(summarize(f), Number(values.top), values.tokens ? Number(values.tokens) : undefined));
  }
}
