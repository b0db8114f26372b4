// The budget ledger: where spend and in-flight reservations per pool entry live. The pool
// talks only to this interface, so a shared backend for several replicas (Redis, PostgreSQL)
// is a new file beside sqlite-ledger.ts, not a change to the pool.
//
// Amounts cross this interface in currency units (the pricing table's currency); a backend
// stores them exactly (SQLite: integer micro-units) so that sums never drift.

export interface Reservation {
  id: string;
  entry: string;
  /** UTC month "YYYY-MM" the reservation was made in; its settlement is charged there. */
  period: string;
  amount: number;
}

export interface EntrySpend {
  entry: string;
  period: string;
  spent: number;
  reserved: number;
  /** Open (unsettled, unexpired) reservations. */
  reservations: number;
  /** ISO time of the last `reset` in this period, if any. */
  resetAt?: string;
  /** Requests answered from the response cache without charge, and what they would have cost (absent: none). */
  cacheHits?: number;
  saved?: number;
}

export interface BudgetLedger {
  /** Atomically reserve `amount` for `entry` in the current period if spent + reserved + amount <= limit; null when it does not fit. limit = Infinity means no cap (still recorded). */
  reserve(entry: string, amount: number, limit: number): Reservation | null;
  /** Replace the reservation by the real cost (also for failed or cancelled requests: pass what was consumed, 0 if nothing). Idempotent; settling an expired/unknown reservation still records the spend. */
  settle(reservation: Reservation, actual: number): void;
  /** Record a spend that needed no reservation (an entry without a cost limit). */
  record(entry: string, amount: number): void;
  /** Record `hits` free response-cache hits on `entry` that would have cost `saved`: kept apart from spend, never counted against a limit. */
  recordCacheHits(entry: string, hits: number, saved: number): void;
  /** Spend and reservations per entry for the current period (UTC calendar month "YYYY-MM"), or for `period` when given. Entries with no activity in the period are absent. */
  status(period?: string): EntrySpend[];
  /** Start an entry's current period over (spent and reservations to 0); recorded with who did it. */
  reset(entry: string, actor: string): void;
  close(): void;
}

/** The UTC calendar month of `at`, "YYYY-MM": the ledger's period. */
export function periodOf(at: Date): string {
  return `${String(at.getUTCFullYear()).padStart(4, "0")}-${String(at.getUTCMonth() + 1).padStart(2, "0")}`;
}

export const PERIOD_PATTERN = /^\d{4}-(0[1-9]|1[0-2])$/;
