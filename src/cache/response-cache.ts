// The response cache: L1 (memory LRU) in front of L2 (SQLite under data_dir), the flights of
// identical requests under way, and the figures `moltbot cache stats` and /metrics show. What a
// request may do with it (look up, store, neither) is decided by the server (cached-generation.ts);
// this module knows keys and stored responses only.
import type { MoltbotConfig } from "../config/schema.js";
import { parseBytes, parseDuration } from "../config/units.js";
import type { BudgetLedger } from "../ledger/ledger.js";
import type { Logger } from "../observe/logger.js";
import { serialize, type CachedResponse, type StoredResponse } from "./entry.js";
import { MemoryStore } from "./memory-store.js";
import type { Flight, FlightResult } from "./single-flight.js";
import { cacheStorePath, openSqliteStore, type PersistentStore } from "./sqlite-store.js";

export type CacheMode = "off" | "deterministic" | "all";
export type HitLevel = "l1" | "l2";

export interface ResponseCacheOptions {
  mode: CacheMode;
  chargeHits: boolean;
  maxEntryBytes: number;
  l1: { maxEntries: number; maxBytes: number; ttlMs: number };
  /** undefined: no persistent level. */
  l2: { file: string; maxBytes: number; ttlMs: number } | undefined;
  log: Logger;
  /** Where free hits' savings are recorded (batched); undefined: nowhere. */
  ledger?: BudgetLedger | undefined;
  /** Wall-clock milliseconds for TTLs (default Date.now); tests move it instead of sleeping. */
  now?: () => number;
}

export interface CacheStats {
  mode: CacheMode;
  l1: { entries: number; bytes: number; max_entries: number; max_bytes: number; hits: number; evictions: number };
  l2: { enabled: boolean; file: string | null; entries: number; bytes: number; max_bytes: number; hits: number; evictions: number };
  misses: number;
  /** Requests that joined an identical one in flight instead of running the model. */
  joined: number;
  bypassed: number;
  /** Responses not stored for being over max_entry_bytes. */
  too_large: number;
  in_flight: number;
}

/** Options from the `cache` section; undefined when the mode is off. */
export function cacheOptions(cfg: MoltbotConfig["cache"], dataDir: string, log: Logger, ledger?: BudgetLedger, now?: () => number): ResponseCacheOptions | undefined {
  if (cfg.mode === "off") return undefined;
  return {
    mode: cfg.mode,
    chargeHits: cfg.charge_hits,
    maxEntryBytes: parseBytes(cfg.max_entry_bytes),
    l1: { maxEntries: cfg.l1.max_entries, maxBytes: parseBytes(cfg.l1.max_bytes), ttlMs: parseDuration(cfg.l1.ttl) },
    l2: cfg.l2.enabled ? { file: cacheStorePath(dataDir), maxBytes: parseBytes(cfg.l2.max_size), ttlMs: parseDuration(cfg.l2.ttl) } : undefined,
    log,
    ledger,
    now,
  };
}

/** Savings of free hits are written to the ledger at most this often (one transaction each). */
const SAVINGS_FLUSH_MS = 1000;

export class ResponseCache {
  readonly mode: CacheMode;
  readonly chargeHits: boolean;
  private readonly l1: MemoryStore;
  private readonly l2: PersistentStore | undefined;
  private readonly flights = new Map<string, Flight<unknown>>();
  private readonly log: Logger;
  private readonly maxEntryBytes: number;
  private readonly opts: ResponseCacheOptions;
  private readonly counts = { l1Hits: 0, l2Hits: 0, misses: 0, joined: 0, bypassed: 0, tooLarge: 0 };
  /** Per pool entry: hits and the cost they saved, not yet in the ledger. */
  private readonly savings = new Map<string, { hits: number; saved: number }>();
  private savingsTimer: NodeJS.Timeout | undefined;

  constructor(opts: ResponseCacheOptions) {
    this.opts = opts;
    this.mode = opts.mode;
    this.chargeHits = opts.chargeHits;
    this.maxEntryBytes = opts.maxEntryBytes;
    this.log = opts.log.child("cache");
    const now = opts.now ?? Date.now;
    this.l1 = new MemoryStore({ ...opts.l1, now });
    this.l2 = opts.l2 === undefined ? undefined : openSqliteStore(opts.l2.file, { maxBytes: opts.l2.maxBytes, ttlMs: opts.l2.ttlMs, now, warn: (m) => this.log.warning(m) });
    this.log.info(`Response cache: ${opts.mode} requests, memory ${opts.l1.maxEntries} entries, ${this.l2 ? `store ${this.l2.file}` : "no persistent store"}`);
  }

  /** L1, then L2 (a hit there fills L1); undefined on a miss. Counts hits (the caller counts misses: a request that joins a flight is not one). */
  get(key: string): { level: HitLevel; value: CachedResponse } | undefined {
    const m = this.l1.get(key);
    if (m) {
      this.counts.l1Hits++;
      return { level: "l1", value: m.value };
    }
    const d = this.fromStore(key);
    if (d) {
      this.l1.set(key, d);
      this.counts.l2Hits++;
      return { level: "l2", value: d.value };
    }
    return undefined;
  }

  /** A request that found nothing and runs the model. */
  missed(): void {
    this.counts.misses++;
  }

  /** Store a finished response in both levels, unless it is over max_entry_bytes. */
  set(key: string, value: CachedResponse): void {
    const stored = serialize(value);
    if (stored.bytes > this.maxEntryBytes) {
      this.counts.tooLarge++;
      this.log.debug(`Response of ${stored.bytes} bytes not cached (cache.max_entry_bytes ${this.maxEntryBytes})`);
      return;
    }
    this.l1.set(key, stored);
    try {
      this.l2?.put(key, stored);
    } catch (err) {
      // A store error other than a full disk or damage (those turn it off) loses this entry only.
      this.log.warning(`Response cache store: an entry was not written: ${(err as Error).message}`);
    }
  }

  /** An L2 read; an unexpected store error is a miss (logged), never a failed request. */
  private fromStore(key: string): StoredResponse | undefined {
    try {
      return this.l2?.get(key);
    } catch (err) {
      this.log.warning(`Response cache store: a read failed, answered as a miss: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** The flight of `key` under way, if any. */
  flight<E>(key: string): Flight<E> | undefined {
    return this.flights.get(key) as Flight<E> | undefined;
  }

  /** Start the flight of `key`; it leaves the table when it ends, after `onDone` stored its result. */
  startFlight<E>(key: string, flight: Flight<E>, onDone: (r: FlightResult<E>) => void): void {
    this.flights.set(key, flight as Flight<unknown>);
    const remove = () => {
      if (this.flights.get(key) === (flight as Flight<unknown>)) this.flights.delete(key);
    };
    flight.result.then(
      (r) => {
        try {
          onDone(r);
        } finally {
          remove();
        }
      },
      remove,
    );
  }

  joined(): void {
    this.counts.joined++;
  }

  bypassed(): void {
    this.counts.bypassed++;
  }

  /** A free hit on `entry` that would have cost `saved`: recorded in the ledger apart from spend. */
  recordSaving(entry: string, saved: number): void {
    const ledger = this.opts.ledger;
    if (!ledger) return;
    const s = this.savings.get(entry) ?? { hits: 0, saved: 0 };
    s.hits++;
    s.saved += saved;
    this.savings.set(entry, s);
    this.savingsTimer ??= setTimeout(() => this.flushSavings(), SAVINGS_FLUSH_MS).unref();
  }

  /** Write the pending savings to the ledger now. */
  flushSavings(): void {
    if (this.savingsTimer) clearTimeout(this.savingsTimer);
    this.savingsTimer = undefined;
    const ledger = this.opts.ledger;
    if (!ledger) return;
    for (const [entry, s] of this.savings) {
      try {
        ledger.recordCacheHits(entry, s.hits, s.saved);
      } catch (err) {
        this.log.warning(`Could not record ${s.hits} cache hit(s) of ${entry} in the ledger: ${(err as Error).message}`);
      }
    }
    this.savings.clear();
  }

  /** Drop every entry, or one pool entry's, from both levels. */
  clear(entry?: string): { l1: number; l2: number } {
    return { l1: this.l1.clear(entry), l2: this.l2?.clear(entry) ?? 0 };
  }

  stats(): CacheStats {
    const d = this.l2?.stats();
    return {
      mode: this.mode,
      l1: { entries: this.l1.size, bytes: this.l1.bytes, max_entries: this.opts.l1.maxEntries, max_bytes: this.opts.l1.maxBytes, hits: this.counts.l1Hits, evictions: this.l1.evictions },
      l2: {
        enabled: this.l2?.enabled ?? false,
        file: this.l2?.file ?? null,
        entries: d?.entries ?? 0,
        bytes: d?.bytes ?? 0,
        max_bytes: this.opts.l2?.maxBytes ?? 0,
        hits: this.counts.l2Hits,
        evictions: d?.evictions ?? 0,
      },
      misses: this.counts.misses,
      joined: this.counts.joined,
      bypassed: this.counts.bypassed,
      too_large: this.counts.tooLarge,
      in_flight: this.flights.size,
    };
  }

  /** L1 keys, most recently used first. */
  memoryKeys(): string[] {
    return this.l1.keys();
  }

  close(): void {
    this.flushSavings();
    this.l2?.close();
  }
}
