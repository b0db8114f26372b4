// `moltbot budget status|reset`, the implementation: loaded by commands/budget.ts only when a
// budget command runs. Safe beside a running server: the ledger is transactional across
// processes, and opening it never releases a live server's reservations.
import type { ArgumentsCamelCase } from "yargs";
import { operatorName } from "../operator.js";
import { recordCliAction } from "../../audit/settings.js";
import { loadConfig, type LoadedConfig } from "../../config/load.js";
import { MoltbotError } from "../../errors.js";
import { periodOf, type EntrySpend } from "../../ledger/ledger.js";
import { describeMarker } from "../../ledger/ledger-marker.js";
import { ledgerPath, openSqliteLedger, type SqliteLedger } from "../../ledger/sqlite-ledger.js";
import type { BudgetResetArgs, BudgetStatusArgs, CommonArgs } from "./budget.js";

/** One line of `budget status`; `limit`/`remaining` are null when the entry has no cost_limit. */
interface BudgetRow {
  entry: string;
  period: string;
  spent: number;
  reserved: number;
  reservations: number;
  limit: number | null;
  remaining: number | null;
  /** Requests answered from the response cache for free this period, and what they would have cost. */
  cache_hits: number;
  saved: number;
  /** false for an entry the ledger knows but the config's model_pool does not name. */
  configured: boolean;
  resetAt?: string;
}

function load(args: CommonArgs): LoadedConfig {
  return loadConfig({ file: args.config, env: process.env, overrides: { data_dir: args["data-dir"] } });
}

function openLedger(loaded: LoadedConfig, acceptNewLedger = false): SqliteLedger {
  const ledger = openSqliteLedger(ledgerPath(loaded.dataDir), { acceptNewLedger });
  const r = ledger.reconciled;
  // stderr, so `--json` output stays parseable.
  if (r.reservations > 0) console.error(`Released ${r.reservations} reservation(s) (${money(r.amount)}) left by stopped processes`);
  return ledger;
}

export function budgetStatus(args: ArgumentsCamelCase<BudgetStatusArgs>): void {
  const loaded = load(args);
  const ledger = openLedger(loaded);
  let rows: BudgetRow[];
  try {
    rows = budgetRows(loaded, ledger.status());
  } finally {
    ledger.close();
  }
  console.log(args.json ? JSON.stringify(rows, null, 2) : table(rows));
}

export async function budgetReset(args: ArgumentsCamelCase<BudgetResetArgs>): Promise<void> {
  if (args.all === true) return budgetResetAll(args);
  const loaded = load(args);
  const names = loaded.config.model_pool.map((e) => e.name);
  if (args.name === undefined || !names.includes(args.name)) {
    const where = loaded.file ?? "the configuration (no config file found)";
    const known = names.length > 0 ? `pool entries: ${names.join(", ")}` : "its model_pool is empty";
    throw new MoltbotError("cli_usage", `budget reset: "${args.name}" is not a model_pool entry in ${where} (${known})`);
  }
  const actor = operatorName();
  const ledger = openLedger(loaded);
  let before: EntrySpend | undefined;
  let period: string;
  try {
    // Read for the message only; reset itself is one transaction and logs the same figures.
    before = ledger.status().find((s) => s.entry === args.name);
    ledger.reset(args.name!, actor);
    period = ledger.status().find((s) => s.entry === args.name)?.period ?? before?.period ?? "";
  } finally {
    ledger.close();
  }
  const was = before === undefined ? "nothing spent or reserved" : `was spent ${money(before.spent)}, reserved ${money(before.reserved)} in ${before.reservations} reservation(s)`;
  await recordCliAction(loaded, { action: "budget.reset", user: actor, target: args.name, outcome: "ok", detail: `${period}: ${was}` });
  console.log(`Reset the ${period} budget of "${args.name}" by '${actor}' (${was})`);
}

/** Every entry the config or this month's ledger names; a lost ledger is replaced by a new one. */
async function budgetResetAll(args: ArgumentsCamelCase<BudgetResetArgs>): Promise<void> {
  const loaded = load(args);
  const actor = operatorName();
  const ledger = openLedger(loaded, true);
  let names: string[];
  let period: string;
  try {
    if (ledger.replaced !== undefined) {
      console.log(`Accepted a new, empty budget ledger ${ledger.id} in ${ledger.file} by '${actor}'; the one lost was ${describeMarker(ledger.replaced)}`);
    }
    const before = ledger.status();
    names = [...new Set([...loaded.config.model_pool.map((e) => e.name), ...before.map((s) => s.entry)])];
    for (const name of names) ledger.reset(name, actor);
    period = ledger.status()[0]?.period ?? periodOf(new Date());
  } finally {
    ledger.close();
  }
  await recordCliAction(loaded, { action: "budget.reset", user: actor, target: "--all", outcome: "ok", detail: `${period}: ${names.join(", ") || "nothing to reset"}${ledger.replaced === undefined ? "" : `; accepted new ledger ${ledger.id}`}` });
  console.log(names.length === 0 ? "No pool entries in the config and no spend recorded this month: nothing to reset." : `Reset the ${period} budget of ${names.map((n) => `"${n}"`).join(", ")} by '${actor}'`);
}

/** Every configured entry (zero when the ledger has not seen it), then ledger-only entries. */
function budgetRows(loaded: LoadedConfig, spend: EntrySpend[]): BudgetRow[] {
  const byEntry = new Map(spend.map((s) => [s.entry, s]));
  const period = spend[0]?.period ?? periodOf(new Date());
  const rows: BudgetRow[] = [];
  const row = (entry: string, limit: number | undefined, configured: boolean): BudgetRow => {
    const s = byEntry.get(entry);
    const spent = s?.spent ?? 0;
    const reserved = s?.reserved ?? 0;
    const out: BudgetRow = {
      entry,
      period: s?.period ?? period,
      spent,
      reserved,
      reservations: s?.reservations ?? 0,
      limit: limit ?? null,
      // In micro-units, as the ledger counts, so the figure carries no float residue.
      remaining: limit === undefined ? null : (micros(limit) - micros(spent) - micros(reserved)) / 1e6,
      cache_hits: s?.cacheHits ?? 0,
      saved: s?.saved ?? 0,
      configured,
    };
    if (s?.resetAt !== undefined) out.resetAt = s.resetAt;
    return out;
  };
  for (const e of loaded.config.model_pool) rows.push(row(e.name, e.budget?.cost_limit, true));
  for (const s of spend) if (!rows.some((r) => r.entry === s.entry)) rows.push(row(s.entry, undefined, false));
  return rows;
}

function table(rows: BudgetRow[]): string {
  if (rows.length === 0) return "No pool entries in the config and no spend recorded this month.";
  const head = ["ENTRY", "PERIOD", "SPENT", "RESERVED", "OPEN", "LIMIT", "REMAINING", "CACHE HITS", "SAVED"];
  const body = rows.map((r) => [
    r.configured ? r.entry : `${r.entry} (not in config)`,
    r.period,
    money(r.spent),
    money(r.reserved),
    String(r.reservations),
    r.limit === null ? "unlimited" : money(r.limit),
    r.remaining === null ? "unlimited" : money(r.remaining),
    String(r.cache_hits),
    money(r.saved),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  // Names left-aligned, figures right-aligned so the decimals line up.
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(head), ...body.map(line)].join("\n");
}

/** At least two decimals, up to the micro-unit the ledger keeps: 12.50, 0.000123. */
function money(x: number): string {
  return x.toFixed(6).replace(/(\.\d\d\d*?)0+$/, "$1");
}

function micros(x: number): number {
  return Math.round(x * 1e6);
}

