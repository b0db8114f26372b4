// `moltbot models`: reads the admin API's documents (GET /admin/models, a ValidationReport, an
// activation) and draws them as text. Read leniently by hand, like status-doc.ts: the CLI does not
// load TypeBox (a test checks the modules it loads), and a field this CLI does not know, or one a
// newer server left out, shows as "-" instead of failing the command.
import { isObject, num, str } from "./lenient-json.js";


export interface Check {
  name: string;
  passed: boolean;
  detail: string;
  ms: number | null;
}
export interface ValidationReport {
  model: string;
  version: string;
  passed: boolean;
  at: string | null;
  durationMs: number | null;
  checks: Check[];
}
export interface VersionInfo {
  version: string;
  state: string;
  sizeBytes: number | null;
  quantization: string | null;
  error: string | null;
  validation: ValidationReport | null;
}
export interface ModelInfo {
  name: string;
  active: string | null;
  previous: string | null;
  switching: { to: string; since: string | null } | null;
  versions: VersionInfo[];
}
export interface Activation {
  model: string;
  version: string;
  previous: string | null;
  switchMs: number | null;
  validation: ValidationReport | null;
}

export function readModels(body: unknown): ModelInfo[] | { invalid: string } {
  if (!isObject(body) || !Array.isArray(body.models)) return { invalid: "not a models document (expected {models: [...]})" };
  return body.models.filter(isObject).map((m) => ({
    name: str(m.name) ?? "?",
    active: str(m.active_version),
    previous: str(m.previous_version),
    switching: isObject(m.switching) ? { to: str(m.switching.to) ?? "?", since: str(m.switching.since) } : null,
    versions: (Array.isArray(m.versions) ? m.versions : []).filter(isObject).map((v) => ({
      version: str(v.version) ?? "?",
      state: str(v.state) ?? "?",
      sizeBytes: num(v.size_bytes),
      quantization: str(v.quantization),
      error: str(v.error),
      validation: reportOrNull(v.validation),
    })),
  }));
}

export function readReport(body: unknown): ValidationReport | { invalid: string } {
  if (!isObject(body) || typeof body.passed !== "boolean" || !Array.isArray(body.checks)) return { invalid: "not a validation report (expected {passed, checks: [...]})" };
  return {
    model: str(body.model) ?? "?",
    version: str(body.version) ?? "?",
    passed: body.passed,
    at: str(body.at),
    durationMs: num(body.duration_ms),
    checks: body.checks.filter(isObject).map((c) => ({ name: str(c.name) ?? "?", passed: c.passed === true, detail: str(c.detail) ?? "", ms: num(c.ms) })),
  };
}

export function readActivation(body: unknown): Activation | { invalid: string } {
  if (!isObject(body) || typeof body.version !== "string") return { invalid: "not an activation result (expected {model, version, previous, switch_ms})" };
  return {
    model: str(body.model) ?? "?",
    version: body.version,
    previous: str(body.previous),
    switchMs: num(body.switch_ms),
    validation: reportOrNull(body.validation),
  };
}

/** An embedded report, or null where there is none (or none this CLI can read). */
function reportOrNull(v: unknown): ValidationReport | null {
  const r = isObject(v) ? readReport(v) : null;
  return r === null || "invalid" in r ? null : r;
}

/** A table per model; `*` marks the active version, a failed version's error follows its row. */
export function renderModels(models: ModelInfo[], now: Date): string[] {
  if (models.length === 0) return ["no models"];
  const out: string[] = [];
  for (const m of models) {
    if (out.length > 0) out.push("");
    out.push(`${m.name}: active ${m.active ?? "-"}, previous ${m.previous ?? "-"}`);
    if (m.switching !== null) {
      const since = m.switching.since === null ? "" : ` since ${when(m.switching.since, now)}`;
      out.push(`  switching to ${m.switching.to}${since}`);
    }
    const rows = m.versions.map((v) => [
      v.version === m.active || v.state === "active" ? "*" : "",
      v.version,
      v.state,
      v.sizeBytes === null ? "-" : bytes(v.sizeBytes),
      v.quantization ?? "-",
      lastValidation(v.validation, now),
    ]);
    const lines = table(["", "VERSION", "STATE", "SIZE", "QUANT", "LAST VALIDATION"], rows);
    out.push(`  ${lines[0]}`.trimEnd());
    m.versions.forEach((v, i) => {
      out.push(`  ${lines[i + 1]}`);
      if (v.error !== null) out.push(`       error: ${oneLine(v.error)}`);
    });
  }
  return out;
}

/** The checks, then one summary line. */
export function renderReport(r: ValidationReport): string[] {
  const rows = r.checks.map((c) => [c.name, c.passed ? "PASS" : "FAIL", c.ms === null ? "-" : String(Math.round(c.ms)), oneLine(c.detail)]);
  const lines = r.checks.length === 0 ? [] : table(["CHECK", "RESULT", "MS", "DETAIL"], rows, [2]);
  return [...lines, summary(r)];
}

function summary(r: ValidationReport): string {
  const failed = r.checks.filter((c) => !c.passed).length;
  const took = r.durationMs === null ? "" : ` in ${secs(r.durationMs)}`;
  if (r.passed) return `${r.model} ${r.version}: validation passed, ${r.checks.length}/${r.checks.length} checks${took}`;
  return `${r.model} ${r.version}: validation FAILED, ${failed} of ${r.checks.length} checks failed${took}`;
}

/** `demo: v1.0 -> v2.0 in 1.2 s (validation: 3/3 checks passed)` */
export function renderActivation(a: Activation): string {
  const took = a.switchMs === null ? "" : ` in ${secs(a.switchMs)}`;
  const v = a.validation;
  const checks = v === null ? "" : ` (validation: ${v.checks.filter((c) => c.passed).length}/${v.checks.length} checks passed)`;
  return `${a.model}: ${a.previous ?? "(none)"} -> ${a.version}${took}${checks}`;
}

function lastValidation(v: ValidationReport | null, now: Date): string {
  if (v === null) return "never";
  const passed = v.checks.filter((c) => c.passed).length;
  return `${v.passed ? "passed" : "failed"} ${passed}/${v.checks.length}${v.at === null ? "" : `, ${when(v.at, now)}`}`;
}

/** `2026-11-30 05:12:03Z (3m ago)`: the UTC time as logged, and how long ago. */
function when(iso: string, now: Date): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const stamp = new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  return `${stamp} (${ago((now.getTime() - t) / 1000)})`;
}

function ago(s: number): string {
  if (s < 60) return `${Math.max(0, Math.floor(s))}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** 512 B, 1.2 KiB, 4.0 GiB. */
export function bytes(v: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = v;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** A server's detail or error on one line: newlines would break the table. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/** Columns padded to their widest cell, left-aligned but for the `right` ones. */
function table(head: string[], rows: string[][], right: number[] = []): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(head), ...rows.map(line)];
}



