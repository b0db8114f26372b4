// `moltbot audit ...`, the implementation (loaded by commands/audit.ts only when it runs).
// Reading needs no lock: records are appended whole and a torn tail is skipped. `erase`
// appends its own record through AuditLog, under the same lock file the server takes.
import { existsSync } from "node:fs";
import type { ArgumentsCamelCase } from "yargs";
import { AuditLog } from "../../audit/audit-log.js";
import { AuditKeys } from "../../audit/keys.js";
import { readRecords, verifyChain, type ChainRecordAt } from "../../audit/segments.js";
import { auditOptions } from "../../audit/settings.js";
import { loadConfig, type LoadedConfig } from "../../config/load.js";
import { parseDuration } from "../../config/units.js";
import { MoltbotError } from "../../errors.js";
import { createLogger } from "../../observe/logger.js";
import type { AuditCommonArgs, AuditEraseArgs, AuditQueryArgs } from "./audit.js";
import { operatorName } from "../operator.js";

function usage(message: string): MoltbotError {
  return new MoltbotError("cli_usage", message);
}

function setup(args: AuditCommonArgs): { loaded: LoadedConfig; file: string; keysFile: string } {
  const loaded = loadConfig({ file: args.config, env: process.env, overrides: { data_dir: args["data-dir"] } });
  const opts = auditOptions(loaded, createLogger({ level: "ERROR", format: "text", stdout: false }));
  return { loaded, file: args.file ?? opts.file, keysFile: opts.keysFile };
}

function timeFlag(flag: string, value: string, now: number): number {
  if (/^\d+(\.\d+)?(ms|s|m|h|d)$/.test(value)) return now - parseDuration(value);
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw usage(`--${flag}: expected an ISO 8601 time like "2026-11-30T14:00:00Z" or a duration ago like "2h", got ${JSON.stringify(value)}`);
  return t;
}

/** The key store, read-only in spirit: opened only if it exists (reading must not create it). */
function openKeys(keysFile: string): AuditKeys | undefined {
  return existsSync(keysFile) ? new AuditKeys(keysFile) : undefined;
}

export function auditQuery(args: ArgumentsCamelCase<AuditQueryArgs>, mode: "tail" | "search"): void {
  const { file, keysFile } = setup(args);
  const now = Date.now();
  const since = args.since === undefined ? undefined : timeFlag("since", args.since, now);
  const until = args.until === undefined ? undefined : timeFlag("until", args.until, now);
  if (mode === "tail" && (!Number.isInteger(args.lines) || args.lines! < 1)) throw usage(`--lines: expected a whole number >= 1, got ${args.lines}`);
  const keys = openKeys(keysFile);
  let names: Map<string, string>;
  let subject: string | undefined;
  try {
    names = keys?.names() ?? new Map();
    if (args.user !== undefined) {
      subject = keys?.lookup(args.user);
      // No key: never seen, or erased. Nothing can match; say so on stderr, print nothing.
      if (subject === undefined) {
        console.error(`No records can be linked to ${JSON.stringify(args.user)}: no key for that user (never recorded, or erased)`);
        return;
      }
    }
  } finally {
    keys?.close();
  }
  const keep = (r: ChainRecordAt): boolean => {
    const rec = r.record;
    if (subject !== undefined && rec.subject !== subject) return false;
    if (args.action !== undefined && rec.action !== args.action && !(args.action.endsWith(".") && String(rec.action).startsWith(args.action))) return false;
    const t = Date.parse(r.time);
    if (since !== undefined && t < since) return false;
    if (until !== undefined && t > until) return false;
    return true;
  };
  const out: ChainRecordAt[] = [];
  for (const r of readRecords(file)) {
    if (!keep(r)) continue;
    out.push(r);
    if (mode === "tail" && out.length > args.lines! * 2) out.splice(0, out.length - args.lines!);
  }
  const shown = mode === "tail" ? out.slice(-args.lines!) : out;
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  for (const r of shown) {
    const user = names.get(String(r.record.subject));
    process.stdout.write((args.json ? JSON.stringify({ ...r.record, user: user ?? null }) : textLine(r.record, user)) + "\n");
  }
}

function textLine(rec: Record<string, unknown>, user: string | undefined): string {
  const who = user === undefined ? `subject:${String(rec.subject).slice(0, 12)}` : `'${user}'`;
  const parts = [String(rec.time), `#${String(rec.seq)}`, String(rec.action), who];
  if (rec.action === "request") parts.push(`${String(rec.method)} ${String(rec.route)} ${String(rec.status)}`);
  for (const k of ["target", "outcome", "model", "version", "prompt_tokens", "completion_tokens", "cost", "ip", "request_id", "detail"]) {
    if (rec[k] !== undefined) parts.push(`${k}=${typeof rec[k] === "string" && /\s/.test(rec[k]) ? JSON.stringify(rec[k]) : String(rec[k])}`);
  }
  return parts.join(" ");
}

export function auditVerify(args: ArgumentsCamelCase<AuditCommonArgs>): void {
  const { file, keysFile } = setup(args);
  const keys = openKeys(keysFile);
  let report;
  try {
    report = verifyChain(file, keys?.deploymentKey());
  } finally {
    keys?.close();
  }
  if (!report.ok) {
    const p = report.problem!;
    throw new MoltbotError("audit_log_invalid", `audit verify: ${p.file} line ${p.line}${p.seq === undefined ? "" : ` (seq ${p.seq})`}: ${p.reason}; ${report.records} record(s) before it verified`);
  }
  const from = report.checkpoint === undefined ? "the first record" : `the checkpoint at record ${report.checkpoint.seq} (${report.checkpoint.time})`;
  console.log(report.records === 0 ? `OK: no records yet (${file})` : `OK: ${report.records} record(s), seq ${report.firstSeq}..${report.lastSeq}, in ${report.files} file(s), verified from ${from}`);
}

export async function auditErase(args: ArgumentsCamelCase<AuditEraseArgs>): Promise<void> {
  const { loaded, file } = setup(args);
  const operator = operatorName();
  const log = createLogger({ level: "WARNING", format: "text", stdout: false, ...(loaded.config.log.file === undefined ? {} : { file: loaded.config.log.file }) });
  const audit = await AuditLog.open({ ...auditOptions(loaded, log), file });
  let erased: boolean;
  try {
    erased = audit.erase(args.user, operator);
  } finally {
    await audit.close();
    log.close();
  }
  if (!erased) console.log(`No key for ${JSON.stringify(args.user)}: never recorded, or already erased`);
  else console.log(`Erased the pseudonym key of ${JSON.stringify(args.user)}: their records stay in the chain but can no longer be linked to them (recorded as audit.erase by '${operator}')`);
}
