// L2: the persistent level, one SQLite file under data_dir (better-sqlite3 through the typed
// helper). Entries carry a TTL and the store a byte bound, least recently used evicted first.
//
// Faults. A file that is not a database, fails `PRAGMA quick_check` or was written by a newer
// layout is set aside (renamed `<file>.corrupt-<time>`) and a new one started, with a warning:
// a cache can always be rebuilt, and an answer is never read from a damaged file. Each row also
// carries the SHA-256 of its body, checked on every read, so a damaged page that the structural
// check misses is dropped rather than served. A full disk (SQLITE_FULL, ENOSPC) or a damage
// found while serving turns the level off with a warning; serving goes on from L1 and the model.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync } from "node:fs";
import path from "node:path";
import { Sqlite, type Database, type Statement } from "../storage/sqlite.js";
import type { CachedResponse, StoredResponse } from "./entry.js";

/** The interface a shared backend for several replicas (Redis) would implement too. */
export interface PersistentStore {
  readonly file: string;
  /** false once a fault turned the level off. */
  readonly enabled: boolean;
  get(key: string): StoredResponse | undefined;
  put(key: string, stored: StoredResponse): void;
  clear(entry?: string): number;
  stats(): { entries: number; bytes: number; evictions: number };
  close(): void;
}

export interface SqliteStoreOptions {
  maxBytes: number;
  ttlMs: number;
  /** Wall-clock milliseconds (TTL and recency). */
  now: () => number;
  warn: (message: string) => void;
}

const LAYOUT = 1;
const SCHEMA = `
CREATE TABLE IF NOT EXISTS responses (
  key TEXT PRIMARY KEY,
  entry TEXT NOT NULL,
  body TEXT NOT NULL,
  digest TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  used_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_use ON responses (used_ms);
CREATE INDEX IF NOT EXISTS responses_by_entry ON responses (entry);
`;
/** Expired rows are swept at most this often (a read skips them anyway). */
const SWEEP_EVERY_MS = 60_000;
/** Rows deleted per step when over the byte bound. */
const EVICT_BATCH = 32;

const digestOf = (body: string) => createHash("sha256").update(body).digest("hex");

export function cacheStorePath(dataDir: string): string {
  return path.join(dataDir, "response-cache.sqlite");
}

/** Errors after which the disk cannot take writes: the level goes off, serving continues. */
function isDiskFull(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e.code === "SQLITE_FULL" || /ENOSPC|database or disk is full/i.test(String(e.message));
}

/** Errors that mean the file is damaged or not ours. */
function isDamage(err: unknown): boolean {
  const code = String((err as { code?: unknown }).code ?? "");
  return code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT_") || code === "SQLITE_FORMAT";
}

class Damaged extends Error {}

function openChecked(file: string): Database {
  const db = new Sqlite(file, { timeout: 5000 });
  try {
    db.pragma("journal_mode = WAL");
    // A cache loses nothing that matters in a power cut: no fsync per write.
    db.pragma("synchronous = NORMAL");
    // Reads every page's structure: about a second per GiB, once at start.
    const check = db.pragma("quick_check", { simple: true });
    if (check !== "ok") throw new Damaged(`quick_check: ${String(check)}`);
    const layout = db.pragma("user_version", { simple: true }) as number;
    if (layout > LAYOUT) throw new Damaged(`layout ${layout} is newer than this moltbot's ${LAYOUT}`);
    db.exec(SCHEMA);
    db.pragma(`user_version = ${LAYOUT}`);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Open the store, setting aside a damaged file (and its WAL) and starting a new one. */
export function openSqliteStore(file: string, opts: SqliteStoreOptions): SqliteStore {
  mkdirSync(path.dirname(file), { recursive: true });
  let db: Database;
  try {
    db = openChecked(file);
  } catch (err) {
    if (!(err instanceof Damaged) && !isDamage(err)) throw err;
    const aside = `${file}.corrupt-${new Date(opts.now()).toISOString().replace(/[:.]/g, "-")}`;
    for (const suffix of ["", "-wal", "-shm"]) if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
    opts.warn(`Response cache store ${file} is damaged (${(err as Error).message}): set aside as ${aside}, starting an empty one`);
    db = openChecked(file);
  }
  return new SqliteStore(db, file, opts);
}

export class SqliteStore implements PersistentStore {
  private db: Database | undefined;
  private readonly stmt: Record<"get" | "touch" | "drop" | "upsert" | "sizeOf" | "oldest" | "sweep" | "total" | "count" | "clearAll" | "clearEntry", Statement>;
  private total: number;
  /** Rows, kept here so a metrics scrape never counts the table. */
  private rows: number;
  private lastSweep = 0;
  evictions = 0;

  constructor(db: Database, readonly file: string, private readonly opts: SqliteStoreOptions) {
    this.db = db;
    this.stmt = {
      get: db.prepare("SELECT body, digest, expires_ms FROM responses WHERE key = ?"),
      touch: db.prepare("UPDATE responses SET used_ms = ? WHERE key = ?"),
      drop: db.prepare("DELETE FROM responses WHERE key = ?"),
      upsert: db.prepare(
        "INSERT INTO responses (key, entry, body, digest, bytes, expires_ms, used_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET entry = excluded.entry, body = excluded.body, digest = excluded.digest, bytes = excluded.bytes, expires_ms = excluded.expires_ms, used_ms = excluded.used_ms",
      ),
      sizeOf: db.prepare("SELECT bytes FROM responses WHERE key = ?"),
      oldest: db.prepare(`SELECT key, bytes FROM responses ORDER BY used_ms LIMIT ${EVICT_BATCH}`),
      sweep: db.prepare("DELETE FROM responses WHERE expires_ms <= ?"),
      total: db.prepare("SELECT COALESCE(SUM(bytes), 0) AS total FROM responses"),
      count: db.prepare("SELECT COUNT(*) AS n FROM responses"),
      clearAll: db.prepare("DELETE FROM responses"),
      clearEntry: db.prepare("DELETE FROM responses WHERE entry = ?"),
    };
    this.total = (this.stmt.total.get() as { total: number }).total;
    this.rows = (this.stmt.count.get() as { n: number }).n;
  }

  /** Re-read the totals after a bulk delete. */
  private recount(): void {
    this.total = (this.stmt.total.get() as { total: number }).total;
    this.rows = (this.stmt.count.get() as { n: number }).n;
  }

  get enabled(): boolean {
    return this.db !== undefined;
  }

  get(key: string): StoredResponse | undefined {
    if (!this.db) return undefined;
    return this.guard(() => {
      const row = this.stmt.get.get(key) as { body: string; digest: string; expires_ms: number } | undefined;
      if (!row) return undefined;
      const now = this.opts.now();
      if (row.expires_ms <= now) {
        this.remove(key);
        return undefined;
      }
      if (digestOf(row.body) !== row.digest) {
        this.opts.warn(`Response cache store ${this.file}: an entry failed its checksum and was dropped`);
        this.remove(key);
        return undefined;
      }
      this.stmt.touch.run(now, key);
      const value = JSON.parse(row.body) as CachedResponse;
      return { value, json: row.body, bytes: Buffer.byteLength(row.body) };
    }, undefined);
  }

  put(key: string, stored: StoredResponse): void {
    if (!this.db || stored.bytes > this.opts.maxBytes) return;
    const db = this.db;
    this.guard(() => {
      const now = this.opts.now();
      db.transaction(() => {
        const before = this.stmt.sizeOf.get(key) as { bytes: number } | undefined;
        this.stmt.upsert.run(key, stored.value.entry, stored.json, digestOf(stored.json), stored.bytes, now + this.opts.ttlMs, now);
        this.total += stored.bytes - (before?.bytes ?? 0);
        if (before === undefined) this.rows++;
        if (now - this.lastSweep >= SWEEP_EVERY_MS) {
          this.lastSweep = now;
          if (this.stmt.sweep.run(now).changes > 0) this.recount();
        }
        while (this.total > this.opts.maxBytes) {
          const rows = this.stmt.oldest.all() as { key: string; bytes: number }[];
          if (rows.length === 0) break;
          for (const r of rows) {
            if (this.total <= this.opts.maxBytes) break;
            this.stmt.drop.run(r.key);
            this.total -= r.bytes;
            this.rows--;
            this.evictions++;
          }
        }
      }).immediate();
    }, undefined);
  }

  clear(entry?: string): number {
    if (!this.db) return 0;
    return this.guard(() => {
      const n = entry === undefined ? this.stmt.clearAll.run().changes : this.stmt.clearEntry.run(entry).changes;
      this.recount();
      return n;
    }, 0);
  }

  stats(): { entries: number; bytes: number; evictions: number } {
    if (!this.db) return { entries: 0, bytes: 0, evictions: this.evictions };
    return { entries: this.rows, bytes: this.total, evictions: this.evictions };
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }

  private remove(key: string): void {
    const row = this.stmt.sizeOf.get(key) as { bytes: number } | undefined;
    if (row && this.stmt.drop.run(key).changes > 0) {
      this.total -= row.bytes;
      this.rows--;
    }
  }

  /** Runs a step; a full disk or a damaged file turns the level off (warned once) and yields `fallback`. */
  private guard<T>(step: () => T, fallback: T): T {
    try {
      return step();
    } catch (err) {
      if (!isDiskFull(err) && !isDamage(err)) throw err;
      this.opts.warn(
        isDiskFull(err)
          ? `Response cache store ${this.file}: the disk is full (${(err as Error).message}); the persistent level is off until restart, serving continues`
          : `Response cache store ${this.file} is damaged (${(err as Error).message}); the persistent level is off, it is set aside at the next start`,
      );
      this.close();
      return fallback;
    }
  }
}
