// Config reload on SIGHUP: re-read the config file with the same sources as at start (file <
// env < the deploy's flags), check it as a start would (schema, then the pool plan against the
// repository), then apply what can change under a running server and name what cannot:
//   applied:  log.level; per pool entry budget.max_tokens, budget.cost_limit,
//             strategy.priority and pricing (each has one owner: the logger, the pool)
//   restart:  everything else (pool entries added, removed or reordered, their model, batching,
//             queue, fallback; server.*, threads, data_dir, log.format/file, ...)
// A file that would not start a server is rejected whole and the running settings stay.
// security.tls's certificate and key are re-read too (same paths), whatever the config file
// holds: new handshakes use them, open connections keep theirs; files that would not start a
// server are refused and the current certificate stays.
// Applied values are compared with what is live; the rest with the config the server started
// with, so a restart-only change is named again at every reload until the restart.
import { Value, ValuePointer } from "@sinclair/typebox/value";
import type { AuditSink } from "../audit/events.js";
import { loadConfig, type LoadOptions } from "../config/load.js";
import type { MoltbotConfig } from "../config/schema.js";
import type { Logger } from "../observe/logger.js";
import type { EntrySettings, ModelPool } from "../pool/model-pool.js";
import { planPool } from "../pool/plan.js";
import type { RepositoryModel } from "../repository/repository.js";

export interface ReloadOptions {
  /** The options the running config was loaded with; `file` is the file to re-read. */
  load: LoadOptions;
  /** The config the server started with. */
  started: MoltbotConfig;
  pool: ModelPool;
  repository: readonly RepositoryModel[];
  /** The root logger: its level is the one reloaded. */
  log: Logger;
  /** The HTTPS listener, when security.tls is set: its certificate is re-read at each reload. */
  certificates?: { reloadCertificates(): string } | undefined;
  /** Where the reload is recorded (src/audit). */
  audit?: AuditSink | undefined;
}

/** What one reload did: a line per change, or the reason the file was rejected. */
export interface ReloadResult {
  applied: string[];
  needsRestart: string[];
  rejected?: string;
  /** The certificate reload's line, or why it was refused (certificateError). */
  certificate?: string;
  certificateError?: string;
}

// Keys of a pool entry that a reload applies; the pool plan resolves them (pricing falls back
// to the model's config.json), so they are compared as the pool holds them, not as written.
const ENTRY_APPLIED = ["budget", "pricing"] as const;

export class ConfigReloader {
  constructor(private readonly opts: ReloadOptions) {}

  /** Re-read, apply and log (and record in the audit log, by `user`: SIGHUP has no sender we know); never throws. */
  reload(user = "SIGHUP"): ReloadResult {
    const cert = this.reloadCertificates();
    const result = this.reloadConfig();
    const changes = result.applied.length + result.needsRestart.length;
    this.opts.audit?.record({
      action: "config.reload",
      user,
      target: this.opts.load.file,
      outcome: result.rejected === undefined ? "ok" : "rejected",
      detail: result.rejected ?? `${result.applied.length} applied, ${result.needsRestart.length} need a restart${changes > 0 ? `: ${[...result.applied, ...result.needsRestart].join("; ")}` : ""}`,
    });
    return { ...result, ...cert };
  }

  private reloadCertificates(): Pick<ReloadResult, "certificate" | "certificateError"> {
    if (this.opts.certificates === undefined) return {};
    const log = this.opts.log.child("server");
    try {
      const line = this.opts.certificates.reloadCertificates();
      log.info(`Reloaded ${line}`);
      return { certificate: line };
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      log.error(`Certificate reload refused, the current certificate stays: ${reason}`);
      return { certificateError: reason };
    }
  }

  private reloadConfig(): ReloadResult {
    const log = this.opts.log.child("config");
    const file = this.opts.load.file;
    if (file === undefined) {
      const reason = "no config file to re-read (start with --config or $MOLTBOT_CONFIG)";
      log.warning(`Reload skipped: ${reason}`);
      return { applied: [], needsRestart: [], rejected: reason };
    }
    let next: MoltbotConfig;
    let settings: EntrySettings[];
    try {
      next = loadConfig(this.opts.load).config;
      settings = planPool(next, [...this.opts.repository], file).entries;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      log.error(`Reload rejected, the running settings stay: ${reason}`);
      return { applied: [], needsRestart: [], rejected: reason };
    }

    const needsRestart = this.restartOnly(next);
    const { applied, entries } = this.appliable(next, settings);
    this.opts.pool.applySettings(entries);
    const root = this.opts.log;
    const level = next.log.level;
    const report = () => {
      for (const line of applied) log.info(`Reloaded ${line}`);
      for (const line of needsRestart) log.warning(`${line}: needs a restart, not applied`);
      if (applied.length === 0 && needsRestart.length === 0) log.info(`Reloaded ${file}: no changes`);
    };
    // The report is written at the more verbose of the old and new levels, so that raising
    // the level to WARNING still records that it was raised.
    const moreVerbose = !root.isLevelEnabled(level);
    if (moreVerbose) root.setLevel(level);
    report();
    root.setLevel(level);
    return { applied, needsRestart };
  }

  /** Changes against the start config outside the applied keys, as "key: old -> new". */
  private restartOnly(next: MoltbotConfig): string[] {
    const strip = (cfg: MoltbotConfig) => {
      const { model_pool: _pool, log: { level: _level, ...log }, ...rest } = cfg;
      return { ...rest, log };
    };
    const before = strip(this.opts.started);
    const lines = Value.Diff(before, strip(next)).map((edit) => {
      const key = keyPath(edit.path);
      return `${key}: ${show(ValuePointer.Get(before, edit.path), key)} -> ${show(edit.type === "delete" ? undefined : edit.value, key)}`;
    });

    const names = (cfg: MoltbotConfig) => cfg.model_pool.map((e) => e.name);
    const was = names(this.opts.started);
    const now = names(next);
    const added = now.filter((n) => !was.includes(n));
    const removed = was.filter((n) => !now.includes(n));
    if (added.length > 0) lines.push(`model_pool: entries added (${added.join(", ")})`);
    if (removed.length > 0) lines.push(`model_pool: entries removed (${removed.join(", ")})`);
    const kept = now.filter((n) => was.includes(n));
    if (added.length === 0 && removed.length === 0 && now.some((n, i) => was[i] !== n)) lines.push(`model_pool: entries reordered (${was.join(", ")} -> ${now.join(", ")})`);
    for (const name of kept) {
      const entry = (cfg: MoltbotConfig) => {
        const e = structuredClone(cfg.model_pool.find((x) => x.name === name)!) as Record<string, unknown> & { strategy: { priority?: string } };
        for (const k of ENTRY_APPLIED) delete e[k];
        delete e.strategy.priority;
        return e;
      };
      const a = entry(this.opts.started);
      for (const edit of Value.Diff(a, entry(next))) {
        lines.push(`model_pool "${name}" ${keyPath(edit.path)}: ${show(ValuePointer.Get(a, edit.path))} -> ${show(edit.type === "delete" ? undefined : edit.value)}`);
      }
    }
    return lines;
  }

  /** The live settings that differ from `next`, and the settings to hand the pool. */
  private appliable(next: MoltbotConfig, planned: EntrySettings[]): { applied: string[]; entries: EntrySettings[] } {
    const applied: string[] = [];
    const level = this.opts.log.level;
    if (level !== next.log.level) applied.push(`log.level: ${level} -> ${next.log.level}`);
    const entries: EntrySettings[] = [];
    for (const live of this.opts.pool.entries) {
      const want = planned.find((e) => e.name === live.name);
      if (!want) continue; // removed: named above, applied at the restart
      const fields: Array<[string, unknown, unknown]> = [
        ["budget.max_tokens", live.maxTokens, want.maxTokens],
        ["budget.cost_limit", live.costLimit, want.costLimit],
        ["strategy.priority", live.priority, want.priority],
        ["pricing", live.pricing, want.pricing],
      ];
      const changed = fields.filter(([, a, b]) => !Value.Equal(a, b));
      for (const [key, a, b] of changed) applied.push(`model_pool "${live.name}" ${key}: ${show(a)} -> ${show(b)}`);
      if (changed.length > 0) entries.push({ name: live.name, priority: want.priority, maxTokens: want.maxTokens, costLimit: want.costLimit, pricing: want.pricing });
    }
    return { applied, entries };
  }
}

/** "/server/port" -> "server.port", "/security/jwt/algorithms/0" -> "security.jwt.algorithms[0]" (the loader's style). */
function keyPath(pointer: string): string {
  let out = "";
  for (const part of pointer.split("/").slice(1)) out += /^\d+$/.test(part) ? `[${part}]` : out === "" ? part : `.${part}`;
  return out;
}

/** A value for the log; a secret (security.jwt.secret, alone or inside its section) never is. */
function show(value: unknown, key = ""): string {
  if (value === undefined) return "(unset)";
  if (/(^|\.)secret$/.test(key)) return "(redacted)";
  return typeof value === "string" ? value : JSON.stringify(value, (k, v: unknown) => (k === "secret" ? "(redacted)" : v));
}
