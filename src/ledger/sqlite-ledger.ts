// The embedded budget ledger: one SQLite file under the data directory (better-sqlite3).
//
// Why it is shaped this way:
// - better-sqlite3 is synchronous, and every reserve/settle runs in one `BEGIN IMMEDIATE`
//   transaction: the check "spent + reserved + amount <= limit" and the insert happen under
//   SQLite's write lock, so two servers (or a server and the CLI) on one file can never
//   overspend, and no await can interleave inside a reservation in this process either.
// - Money is stored as integer micro-units (1e-6 of the pricing currency): SQLite sums
//   integers exactly, where summing floats would drift.
// - The period is derived from the injected clock at every call, so a new UTC month starts
//   at zero without any job running; a reservation is charged to the month it was made in.
// - A crash between reserve and settle must not hold money forever. Each reservation names its
//   owner (host, boot id, pid): at open, those whose owner is gone (a previous boot of this
//   host, or a dead pid) are released and counted in `reconciled`. Owners we cannot judge
//   (another host sharing the file, a reused pid) are covered by the TTL, applied lazily in
//   reserve/status. A live owner's reservations are never touched, so `moltbot budget status`
//   or a second server opening the file does not release a running server's money.
// - settle is idempotent through a table of settled ids (kept SETTLED_RETENTION_MS): a retried
//   settle is a no-op, and a settle of an expired or unknown id still records what was spent.
// - An emptied or deleted file must not restart the month at zero: ledger-marker.ts keeps a
//   marker beside it naming this ledger's id (table `meta`), and open refuses a ledger that is
//   not the one the marker names unless told to accept a new one.

import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MoltbotError } from "../errors.js";
import { ledgerFileState, ledgerLost, markerPath, readMarker, writeMarker, type LedgerMarker } from "./ledger-marker.js";
import { PERIOD_PATTERN, periodOf, type BudgetLedger, type EntrySpend, type Reservation } from "./ledger.js";
import { Sqlite, type Statement, type Database, type Transaction } from "../storage/sqlite.js";

export interface SqliteLedgerOptions {
  /** Source of "now" for periods, TTLs and log times (tests move it across months). */
  clock?: () => Date;
  /** A reservation older than this is released (its request is presumed lost). Default 15 min. */
  reservationTtlMs?: number;
  /** Start a new, empty ledger when the one the marker names is gone (else ledger_lost). */
  acceptNewLedger?: boolean;
}

export interface ReconcileResult {
  /** Reservations released at open because their process is gone. */
  reservations: number;
  /** Their total amount, in currency units. */
  amount: number;
}

export interface SqliteLedger extends BudgetLedger {
  readonly file: string;
  /** What open released from processes that died holding reservations (for the start-up log). */
  readonly reconciled: ReconcileResult;
  /** This ledger's id (its `meta` table; the marker names it). */
  readonly id: string;
  /** The lost ledger's marker when acceptNewLedger started a new one (for the log). */
  readonly replaced: LedgerMarker | undefined;
}

/** Where the ledger lives under a data directory. */
export function ledgerPath(dataDir: string): string {
  return path.join(dataDir, "ledger.sqlite");
}

/**
 * Cost of one inference in currency units, rounded to the micro-unit the ledger stores.
 * Monotonic in both token counts, so a reservation made with the worst-case completion
 * always covers the settlement of what was actually generated.
 */
/**
 * Cost of one inference. `cachedTokens` (part of `promptTokens`) are the prompt tokens served
 * from the KV prefix cache: they cost `cached_input_per_1k` when the pricing names one, else
 * the same as any prompt token.
 */
export function costOf(
  promptTokens: number,
  completionTokens: number,
  pricing: { input_per_1k: number; output_per_1k: number; cached_input_per_1k?: number },
  cachedTokens = 0,
): number {
  for (const [name, n] of [["promptTokens", promptTokens], ["completionTokens", completionTokens], ["cachedTokens", cachedTokens]] as const) {
    if (!Number.isInteger(n) || n < 0) throw new MoltbotError("internal_error", `costOf: ${name} must be an integer >= 0, got ${n}`);
  }
  const cachedPrice = pricing.cached_input_per_1k ?? pricing.input_per_1k;
  for (const [name, p] of [["input_per_1k", pricing.input_per_1k], ["output_per_1k", pricing.output_per_1k], ["cached_input_per_1k", cachedPrice]] as const) {
    if (!Number.isFinite(p) || p < 0) throw new MoltbotError("internal_error", `costOf: pricing.${name} must be a number >= 0, got ${p}`);
  }
  const cached = Math.min(cachedTokens, promptTokens);
  // price per 1K tokens x 1e6 micro-units / 1e3 tokens = price x 1e3 micro-units per token.
  const micros = Math.round(((promptTokens - cached) * pricing.input_per_1k + cached * cachedPrice + completionTokens * pricing.output_per_1k) * 1000);
  return fromMicros(micros);
}

const DEFAULT_TTL_MS = 15 * 60_000;
const BUSY_TIMEOUT_MS = 5_000;
// Long past any retry of a settle; bounds the idempotency table on a busy server.
const SETTLED_RETENTION_MS = 7 * 24 * 3_600_000;
const PRUNE_EVERY_MS = 3_600_000;
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS spend (
  entry TEXT NOT NULL,
  period TEXT NOT NULL,
  spent_micros INTEGER NOT NULL DEFAULT 0,
  reset_at TEXT,
  PRIMARY KEY (entry, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
  id TEXT PRIMARY KEY,
  entry TEXT NOT NULL,
  period TEXT NOT NULL,
  amount_micros INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  host TEXT NOT NULL,
  boot_id TEXT NOT NULL,
  pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_entry ON reservations (entry, period);
CREATE INDEX IF NOT EXISTS reservations_by_age ON reservations (created_at_ms);
CREATE TABLE IF NOT EXISTS settled (
  id TEXT PRIMARY KEY,
  settled_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS settled_by_age ON settled (settled_at_ms);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache_hits (
  entry TEXT NOT NULL,
  period TEXT NOT NULL,
  hits INTEGER NOT NULL DEFAULT 0,
  saved_micros INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (entry, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS admin_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  entry TEXT NOT NULL,
  period TEXT NOT NULL,
  detail TEXT NOT NULL
);
`;


interface Owner {
  host: string;
  bootId: string;
  pid: number;
}

/** Open (creating if needed) the ledger file and release what dead processes left reserved. */
export function openSqliteLedger(file: string, opts: SqliteLedgerOptions = {}): SqliteLedger {
  const clock = opts.clock ?? (() => new Date());
  const ttlMs = opts.reservationTtlMs ?? DEFAULT_TTL_MS;
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new MoltbotError("internal_error", `reservationTtlMs must be > 0, got ${ttlMs}`);
  const absolute = path.resolve(file);
  const marker = markerPath(absolute);
  const prior = readMarker(marker);
  let replaced: LedgerMarker | undefined;
  const state = ledgerFileState(absolute);
  if (prior !== undefined && state !== "present") {
    if (opts.acceptNewLedger !== true) throw ledgerLost(absolute, state === "missing" ? "is missing" : "is empty", prior);
    // What is left of the old file (a stale WAL) must not be replayed into the new one.
    for (const f of [absolute, `${absolute}-wal`, `${absolute}-shm`]) rmSync(f, { force: true });
    replaced = prior;
  }

  let db: Database;
  try {
    mkdirSync(path.dirname(absolute), { recursive: true });
    db = new Sqlite(absolute, { timeout: BUSY_TIMEOUT_MS });
  } catch (err) {
    throw new MoltbotError("internal_error", `${absolute}: cannot open the budget ledger (${describe(err)})`, { cause: err });
  }
  let ledger: SqliteLedgerImpl;
  try {
    ledger = new SqliteLedgerImpl(db, absolute, clock, ttlMs);
  } catch (err) {
    db.close();
    if (err instanceof MoltbotError) throw err;
    throw new MoltbotError("internal_error", `${absolute}: cannot open the budget ledger (${describe(err)})`, { cause: err });
  }
  if (prior !== undefined && replaced === undefined && prior.ledger_id !== ledger.id) {
    if (opts.acceptNewLedger !== true) {
      ledger.close();
      throw ledgerLost(absolute, `holds another ledger (${ledger.id})`, prior);
    }
    replaced = prior;
  }
  ledger.replaced = replaced;
  try {
    ledger.writeMarker();
  } catch (err) {
    ledger.close();
    throw new MoltbotError("internal_error", `${marker}: cannot write the ledger marker (${describe(err)})`, { cause: err });
  }
  return ledger;
}

// After spend, the marker's totals are refreshed at most this often (its id never changes);
// the write (temp file, fsync, rename: a few ms) runs on the event loop once per interval.
const MARKER_DEBOUNCE_MS = 1000;

class SqliteLedgerImpl implements SqliteLedger {
  readonly file: string;
  readonly reconciled: ReconcileResult;
  readonly id: string;
  replaced: LedgerMarker | undefined;
  #markerTimer: NodeJS.Timeout | undefined;
  readonly #db: Database;
  readonly #clock: () => Date;
  readonly #ttlMs: number;
  readonly #owner: Owner;
  #closed = false;
  #nextPruneMs = 0;

  readonly #stmt: {
    expire: Statement;
    spent: Statement;
    reserved: Statement;
    insertReservation: Statement;
    findReservation: Statement;
    deleteReservation: Statement;
    wasSettled: Statement;
    markSettled: Statement;
    pruneSettled: Statement;
    addSpend: Statement;
    periodStatus: Statement;
    resetSpend: Statement;
    deleteEntryReservations: Statement;
    logAdmin: Statement;
    addCacheHits: Statement;
  };
  readonly #reserveTx: Transaction<[string, number, number], Reservation | null>;
  readonly #settleTx: Transaction<[Reservation, number], void>;
  readonly #statusTx: Transaction<[string], EntrySpend[]>;
  readonly #resetTx: Transaction<[string, string], void>;

  constructor(db: Database, file: string, clock: () => Date, ttlMs: number) {
    this.#db = db;
    this.file = file;
    this.#clock = clock;
    this.#ttlMs = ttlMs;
    this.#owner = currentOwner();

    // Two processes opening a new file at once (a server and the CLI) can get SQLITE_BUSY from
    // the switch to WAL without SQLite calling its busy handler (seen in the ledger tests), so
    // the idempotent set-up is retried until the busy timeout.
    retryWhileBusy(() => {
      // WAL lets readers (budget status) run beside a writing server; synchronous=FULL because
      // a settle lost to a power cut is money the ledger never sees (one fsync per request is
      // nothing beside an inference).
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = FULL");
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.transaction(() => {
        const version = db.pragma("user_version", { simple: true }) as number;
        if (version > SCHEMA_VERSION) {
          throw new MoltbotError("internal_error", `${file}: budget ledger schema v${version} was written by a newer moltbot (this one reads v${SCHEMA_VERSION})`);
        }
        db.exec(SCHEMA);
        if (version < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
        db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('ledger_id', ?)").run(randomUUID());
      }).immediate();
    });
    this.id = (db.prepare("SELECT value FROM meta WHERE key = 'ledger_id'").get() as { value: string }).value;

    this.#stmt = {
      expire: db.prepare("DELETE FROM reservations WHERE created_at_ms < ?"),
      spent: db.prepare("SELECT spent_micros FROM spend WHERE entry = ? AND period = ?"),
      reserved: db.prepare("SELECT COALESCE(SUM(amount_micros), 0) AS total FROM reservations WHERE entry = ? AND period = ?"),
      insertReservation: db.prepare(
        "INSERT INTO reservations (id, entry, period, amount_micros, created_at_ms, host, boot_id, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      findReservation: db.prepare("SELECT entry, period FROM reservations WHERE id = ?"),
      deleteReservation: db.prepare("DELETE FROM reservations WHERE id = ?"),
      wasSettled: db.prepare("SELECT 1 FROM settled WHERE id = ?"),
      markSettled: db.prepare("INSERT INTO settled (id, settled_at_ms) VALUES (?, ?)"),
      pruneSettled: db.prepare("DELETE FROM settled WHERE settled_at_ms < ?"),
      addSpend: db.prepare(
        "INSERT INTO spend (entry, period, spent_micros) VALUES (?, ?, ?) ON CONFLICT (entry, period) DO UPDATE SET spent_micros = spent_micros + excluded.spent_micros",
      ),
      periodStatus: db.prepare(`
        SELECT e.entry AS entry,
               COALESCE(s.spent_micros, 0) AS spent,
               s.reset_at AS reset_at,
               COALESCE(r.total, 0) AS reserved,
               COALESCE(r.n, 0) AS n,
               COALESCE(c.hits, 0) AS hits,
               COALESCE(c.saved_micros, 0) AS saved
        FROM (SELECT entry FROM spend WHERE period = @period UNION SELECT entry FROM reservations WHERE period = @period UNION SELECT entry FROM cache_hits WHERE period = @period) e
        LEFT JOIN spend s ON s.entry = e.entry AND s.period = @period
        LEFT JOIN cache_hits c ON c.entry = e.entry AND c.period = @period
        LEFT JOIN (SELECT entry, SUM(amount_micros) AS total, COUNT(*) AS n FROM reservations WHERE period = @period GROUP BY entry) r ON r.entry = e.entry
        ORDER BY e.entry`),
      resetSpend: db.prepare(
        "INSERT INTO spend (entry, period, spent_micros, reset_at) VALUES (?, ?, 0, ?) ON CONFLICT (entry, period) DO UPDATE SET spent_micros = 0, reset_at = excluded.reset_at",
      ),
      deleteEntryReservations: db.prepare("DELETE FROM reservations WHERE entry = ? AND period = ?"),
      addCacheHits: db.prepare(
        "INSERT INTO cache_hits (entry, period, hits, saved_micros) VALUES (?, ?, ?, ?) ON CONFLICT (entry, period) DO UPDATE SET hits = hits + excluded.hits, saved_micros = saved_micros + excluded.saved_micros",
      ),
      logAdmin: db.prepare("INSERT INTO admin_log (at, actor, action, entry, period, detail) VALUES (?, ?, ?, ?, ?, ?)"),
    };

    this.#reserveTx = db.transaction((entry: string, amountMicros: number, limitMicros: number): Reservation | null => {
      const now = this.#now();
      this.#housekeep(now);
      const period = periodOf(now);
      const spent = this.#spentMicros(entry, period);
      const reserved = (this.#stmt.reserved.get(entry, period) as { total: number }).total;
      if (spent + reserved + amountMicros > limitMicros) return null;
      const id = randomUUID();
      const o = this.#owner;
      this.#stmt.insertReservation.run(id, entry, period, amountMicros, now.getTime(), o.host, o.bootId, o.pid);
      return { id, entry, period, amount: fromMicros(amountMicros) };
    });

    this.#settleTx = db.transaction((reservation: Reservation, actualMicros: number): void => {
      if (this.#stmt.wasSettled.get(reservation.id) !== undefined) return;
      // The stored row is the authority on where to charge; the caller's copy is used only when
      // the row is gone (expired, reconciled or reset), so the spend is still recorded.
      const row = this.#stmt.findReservation.get(reservation.id) as { entry: string; period: string } | undefined;
      const entry = row?.entry ?? reservation.entry;
      const period = row?.period ?? reservation.period;
      if (row !== undefined) this.#stmt.deleteReservation.run(reservation.id);
      if (actualMicros > 0) this.#stmt.addSpend.run(entry, period, actualMicros);
      this.#stmt.markSettled.run(reservation.id, this.#now().getTime());
    });

    this.#statusTx = db.transaction((period: string): EntrySpend[] => {
      this.#housekeep(this.#now());
      const rows = this.#stmt.periodStatus.all({ period }) as { entry: string; spent: number; reset_at: string | null; reserved: number; n: number; hits: number; saved: number }[];
      return rows.map((r) => {
        const out: EntrySpend = { entry: r.entry, period, spent: fromMicros(r.spent), reserved: fromMicros(r.reserved), reservations: r.n };
        if (r.hits > 0) Object.assign(out, { cacheHits: r.hits, saved: fromMicros(r.saved) });
        if (r.reset_at !== null) out.resetAt = r.reset_at;
        return out;
      });
    });

    this.#resetTx = db.transaction((entry: string, actor: string): void => {
      const now = this.#now();
      const period = periodOf(now);
      const spent = this.#spentMicros(entry, period);
      const reserved = this.#stmt.reserved.get(entry, period) as { total: number };
      const released = this.#stmt.deleteEntryReservations.run(entry, period).changes;
      this.#stmt.resetSpend.run(entry, period, now.toISOString());
      const detail = { spent: fromMicros(spent), reserved: fromMicros(reserved.total), reservations: released };
      this.#stmt.logAdmin.run(now.toISOString(), actor, "reset", entry, period, JSON.stringify(detail));
    });

    this.reconciled = this.#reconcile();
  }

  reserve(entry: string, amount: number, limit: number): Reservation | null {
    this.#assertOpen();
    checkEntry(entry);
    const amountMicros = toMicros(amount, "amount");
    const limitMicros = limit === Infinity ? Infinity : toMicros(limit, "limit");
    return this.#reserveTx.immediate(entry, amountMicros, limitMicros);
  }

  settle(reservation: Reservation, actual: number): void {
    this.#assertOpen();
    checkEntry(reservation.entry);
    if (typeof reservation.id !== "string" || reservation.id === "") throw new MoltbotError("internal_error", "ledger: reservation without an id");
    checkPeriod(reservation.period);
    this.#settleTx.immediate(reservation, toMicros(actual, "actual"));
    this.#markerDirty();
  }

  record(entry: string, amount: number): void {
    // A settle of a reservation the ledger never held records the spend in the given period.
    this.settle({ id: `record-${randomUUID()}`, entry, period: periodOf(this.#now()), amount: 0 }, amount);
  }

  recordCacheHits(entry: string, hits: number, saved: number): void {
    this.#assertOpen();
    checkEntry(entry);
    this.#stmt.addCacheHits.run(entry, periodOf(this.#now()), hits, toMicros(saved, "saved"));
  }

  status(period?: string): EntrySpend[] {
    this.#assertOpen();
    if (period !== undefined) checkPeriod(period);
    return this.#statusTx.immediate(period ?? periodOf(this.#now()));
  }

  reset(entry: string, actor: string): void {
    this.#assertOpen();
    checkEntry(entry);
    if (actor === "") throw new MoltbotError("internal_error", "ledger: reset needs an actor");
    this.#resetTx.immediate(entry, actor);
    this.#markerDirty();
  }

  close(): void {
    if (this.#closed) return;
    if (this.#markerTimer !== undefined) {
      clearTimeout(this.#markerTimer);
      this.#markerTimer = undefined;
      try {
        this.writeMarker();
      } catch {
        // The id in it is unchanged since open; only the totals (for the message) are older.
      }
    }
    this.#closed = true;
    this.#db.close();
  }

  /** Write the marker now: this ledger's id and the current period's spend. */
  writeMarker(): void {
    const period = periodOf(this.#now());
    const rows = this.#db.prepare("SELECT entry, spent_micros FROM spend WHERE period = ? ORDER BY entry").all(period) as { entry: string; spent_micros: number }[];
    const spent: Record<string, number> = {};
    for (const r of rows) spent[r.entry] = fromMicros(r.spent_micros);
    writeMarker(markerPath(this.file), { ledger_id: this.id, file: path.basename(this.file), written_at: this.#now().toISOString(), period, spent });
  }

  #markerDirty(): void {
    this.#markerTimer ??= setTimeout(() => {
      this.#markerTimer = undefined;
      if (this.#closed) return;
      try {
        this.writeMarker();
      } catch {
        // Retried after the next spend, and at close.
      }
    }, MARKER_DEBOUNCE_MS).unref();
  }

  #now(): Date {
    const now = this.#clock();
    if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new MoltbotError("internal_error", "ledger: the clock returned an invalid date");
    return now;
  }

  #spentMicros(entry: string, period: string): number {
    return (this.#stmt.spent.get(entry, period) as { spent_micros: number } | undefined)?.spent_micros ?? 0;
  }

  /** Inside a write transaction: drop expired reservations, and now and then old settled ids. */
  #housekeep(now: Date): void {
    const ms = now.getTime();
    this.#stmt.expire.run(ms - this.#ttlMs);
    if (ms >= this.#nextPruneMs) {
      this.#stmt.pruneSettled.run(ms - SETTLED_RETENTION_MS);
      this.#nextPruneMs = ms + PRUNE_EVERY_MS;
    }
  }

  #reconcile(): ReconcileResult {
    const me = this.#owner;
    const run = this.#db.transaction((): ReconcileResult => {
      const owners = this.#db
        .prepare("SELECT host, boot_id AS bootId, pid, COUNT(*) AS n, SUM(amount_micros) AS total FROM reservations GROUP BY host, boot_id, pid")
        .all() as (Owner & { n: number; total: number })[];
      const release = this.#db.prepare("DELETE FROM reservations WHERE host = ? AND boot_id = ? AND pid = ?");
      let reservations = 0;
      let micros = 0;
      for (const o of owners) {
        if (!ownerIsGone(o, me)) continue;
        release.run(o.host, o.bootId, o.pid);
        reservations += o.n;
        micros += o.total;
      }
      return { reservations, amount: fromMicros(micros) };
    });
    return run.immediate();
  }

  #assertOpen(): void {
    if (this.#closed) throw new MoltbotError("internal_error", `${this.file}: budget ledger used after close()`);
  }
}

function retryWhileBusy(fn: () => void): void {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      return fn();
    } catch (err) {
      if ((err as { code?: unknown }).code !== "SQLITE_BUSY" || Date.now() >= deadline) throw err;
      // A synchronous pause: this runs once at open, before the ledger serves anything.
      Atomics.wait(pause, 0, 0, 5 + Math.random() * 20);
    }
  }
}

/**
 * Whether a reservation's owner can no longer settle it. Only judged on this host: a previous
 * boot is gone; in this boot, a pid that no longer exists is gone. Our own pid is alive (this
 * process may hold several ledgers on the file). Other hosts are left to the TTL.
 */
function ownerIsGone(o: Owner, me: Owner): boolean {
  if (o.host !== me.host) return false;
  if (o.bootId !== me.bootId) return true;
  if (o.pid === me.pid) return false;
  try {
    process.kill(o.pid, 0);
    return false;
  } catch (err) {
    // EPERM: it exists but belongs to another user, so it is alive.
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

let ownerCache: Owner | undefined;
function currentOwner(): Owner {
  ownerCache ??= { host: os.hostname(), bootId: readBootId(), pid: process.pid };
  return ownerCache;
}

function readBootId(): string {
  try {
    const id = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    if (id !== "") return id;
  } catch {
    // Not Linux: fall through to the boot time, which is stable for the life of the boot.
  }
  // Rounded to the minute: uptime and the wall clock are read at slightly different instants.
  return `boot-${Math.round((Date.now() / 1000 - os.uptime()) / 60)}`;
}

function toMicros(value: number, name: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new MoltbotError("internal_error", `ledger: ${name} must be a finite number >= 0, got ${value}`);
  }
  const micros = Math.round(value * 1e6);
  if (!Number.isSafeInteger(micros)) throw new MoltbotError("internal_error", `ledger: ${name} ${value} is too large to account exactly`);
  return micros;
}

function fromMicros(micros: number): number {
  return micros / 1e6;
}

function checkEntry(entry: string): void {
  if (typeof entry !== "string" || entry === "") throw new MoltbotError("internal_error", "ledger: entry name must be a non-empty string");
}

function checkPeriod(period: string): void {
  if (typeof period !== "string" || !PERIOD_PATTERN.test(period)) {
    throw new MoltbotError("internal_error", `ledger: period must be "YYYY-MM", got ${JSON.stringify(period)}`);
  }
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  return [e?.code, e?.message].filter((x) => x !== undefined && x !== "").join(": ") || String(err);
}
