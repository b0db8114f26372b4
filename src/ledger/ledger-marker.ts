// Never lose the money records silently. A ledger file emptied (`: > ledger.sqlite`) or deleted
// would otherwise open as a new, empty ledger: the month restarts at zero spent and every
// cost_limit is spendable again. So a small marker beside it, ledger.marker.json, names the
// ledger (the id stored in its `meta` table) and its last known totals; it is written
// atomically (write-file-atomic: temp file, fsync, rename) at open, after spend (debounced)
// and at close. At open, a marker whose ledger is gone (no file, an empty file, or a file with
// another id) refuses the open with ledger_lost, unless the operator accepts a new ledger
// (`moltbot deploy --accept-new-ledger`, `moltbot budget reset --all`).
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";
import { MoltbotError } from "../errors.js";

export interface LedgerMarker {
  /** The id in the ledger's `meta` table. */
  ledger_id: string;
  /** The ledger file's name in the same directory. */
  file: string;
  /** When this marker was written. */
  written_at: string;
  /** The period of the totals below ("YYYY-MM"). */
  period: string;
  /** Spent per entry in that period, in currency units. */
  spent: Record<string, number>;
}

export function markerPath(ledgerFile: string): string {
  return path.join(path.dirname(ledgerFile), "ledger.marker.json");
}

/** The marker, or undefined when there is none. An unreadable or malformed marker fails closed. */
export function readMarker(file: string): LedgerMarker | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new MoltbotError("ledger_lost", `${file}: cannot read the ledger marker (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  try {
    const m = JSON.parse(text) as LedgerMarker;
    if (typeof m.ledger_id !== "string" || m.ledger_id === "" || typeof m.spent !== "object" || m.spent === null) throw new Error("missing ledger_id or spent");
    return m;
  } catch (err) {
    throw new MoltbotError("ledger_lost", `${file}: the ledger marker is not valid (${(err as Error).message}); restore it from a backup, or accept a new ledger with \`moltbot budget reset --all\``, { cause: err });
  }
}

export function writeMarker(file: string, marker: LedgerMarker): void {
  writeFileAtomic.sync(file, `${JSON.stringify(marker, null, 2)}\n`);
}

/** Whether the ledger file holds anything: a missing or zero-length file is a new ledger to SQLite. */
export function ledgerFileState(file: string): "missing" | "empty" | "present" {
  try {
    return statSync(file).size === 0 ? "empty" : "present";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw err;
  }
}

/** "12.5 spent in 2026-11 (tiny 12.5), recorded 2026-11-30T07:00:00.000Z" */
export function describeMarker(m: LedgerMarker): string {
  const entries = Object.entries(m.spent);
  const total = entries.reduce((sum, [, v]) => sum + Math.round(v * 1e6), 0) / 1e6;
  const detail = entries.length === 0 ? "" : ` (${entries.map(([k, v]) => `${k} ${v}`).join(", ")})`;
  return `ledger ${m.ledger_id}: ${total} spent in ${m.period}${detail}, recorded ${m.written_at}`;
}

/** The refusal: names the file, what happened to it, what the marker remembers and the ways out. */
export function ledgerLost(ledgerFile: string, what: string, marker: LedgerMarker): MoltbotError {
  return new MoltbotError(
    "ledger_lost",
    `${ledgerFile} ${what}, but ${path.basename(markerPath(ledgerFile))} beside it records ${describeMarker(marker)}: refusing to start the month over at zero spent. Restore the file from a backup, or accept a new, empty ledger with \`moltbot budget reset --all\` or \`moltbot deploy --accept-new-ledger\``,
  );
}
