// API keys for machines: `moltbot token create` prints a key once and this store keeps only its
// SHA-256 (SQLite under data_dir, better-sqlite3 as the ledger). The running server checks keys
// here on every request, so a `moltbot token revoke` in another process takes effect at once.
//
// Why it is shaped this way:
// - A key is `mb_<id>_<secret>`: the id (not secret) finds the row, then the SHA-256 of the whole
//   key is compared with the stored one by crypto.timingSafeEqual on two 32-byte digests, so the
//   comparison takes the same time wherever the first differing byte is.
// - Rows are cached in memory; each check runs `PRAGMA data_version`, which changes only when
//   another connection has committed, and reloads the cache then: one cheap statement per request
//   instead of a query and no stale cache after a revoke.
// - The secret is 32 random bytes: a plain SHA-256 is enough (no slow KDF needed, unlike passwords).
// - A store deleted, emptied or replaced by an older copy must not bring revoked keys back:
//   key-store-marker.ts keeps a marker beside it naming this store's id (table `meta`) and its
//   counts, and open refuses a store that is not the one the marker names, or older, unless told
//   to accept it.
import crypto from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { MoltbotError } from "../errors.js";
import { API_KEY_PREFIX, type ApiKeyVerifier } from "./jwt.js";
import type { Principal } from "./principal.js";
import { Sqlite, type Statement, type Database } from "../storage/sqlite.js";
import { keyStoreFileState, keyStoreLost, keyStoreMarkerPath, olderThan, readKeyStoreMarker, writeKeyStoreMarker, type KeyStoreMarker, type KeyStoreState } from "./key-store-marker.js";

export interface ApiKeyRecord {
  id: string;
  name: string;
  scopes: string[];
  /** Pool entries the key may use; undefined: every entry. */
  models: string[] | undefined;
  /** Monthly cost cap of the key's subject; undefined: none. */
  costLimit: number | undefined;
  createdAt: string;
  expiresAt: string | undefined;
  revokedAt: string | undefined;
}

export interface NewApiKey {
  name: string;
  scopes: readonly string[];
  models?: readonly string[] | undefined;
  costLimit?: number | undefined;
  /** Lifetime in ms from now; undefined: never expires. */
  ttlMs?: number | undefined;
}

/** Where the key store lives under a data directory. */
export function apiKeyStorePath(dataDir: string): string {
  return path.join(dataDir, "tokens.sqlite");
}

export const KEY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KEY_PATTERN = /^mb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const SCHEMA_VERSION = 1;
const SCHEMA = `
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  hash BLOB NOT NULL,
  scopes TEXT NOT NULL,
  models TEXT,
  cost_limit REAL,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;


interface Row {
  id: string;
  name: string;
  hash: Buffer;
  scopes: string;
  models: string | null;
  cost_limit: number | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

export class ApiKeyStore implements ApiKeyVerifier {
  readonly file: string;
  /** This store's id (its `meta` table; the marker names it). */
  readonly id: string;
  /** The marker of the store that reset-store replaced (for its message). */
  replaced: KeyStoreMarker | undefined;
  readonly #db: Database;
  readonly #clock: () => Date;
  readonly #all: Statement;
  #version = -1;
  #byId = new Map<string, Row>();

  private constructor(db: Database, file: string, clock: () => Date) {
    this.#db = db;
    this.file = file;
    this.#clock = clock;
    db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 5000");
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new MoltbotError("config_invalid", `${file}: API key store schema v${version} was written by a newer moltbot`);
    db.exec(SCHEMA);
    if (version < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)").run(crypto.randomUUID());
    this.id = (db.prepare("SELECT value FROM meta WHERE key = 'store_id'").get() as { value: string }).value;
    this.#all = db.prepare("SELECT * FROM api_keys ORDER BY created_at, name");
  }

  /**
   * Open (creating if needed) the store; a file that cannot be opened is one clear error, and
   * one that is not the store its marker records (gone, another, older) is key_store_lost unless
   * `acceptStore` (then a missing or empty one starts new, a present one is taken as it is).
   */
  static open(file: string, opts: { clock?: () => Date; acceptStore?: boolean } = {}): ApiKeyStore {
    const absolute = path.resolve(file);
    const markerFile = keyStoreMarkerPath(absolute);
    const prior = readKeyStoreMarker(markerFile);
    let replaced: KeyStoreMarker | undefined;
    const state = keyStoreFileState(absolute);
    if (prior !== undefined && state !== "present") {
      if (opts.acceptStore !== true) throw keyStoreLost(absolute, state === "missing" ? "is missing" : "is empty", prior);
      // What is left of the old file (a stale WAL) must not be replayed into the new one.
      for (const f of [absolute, `${absolute}-wal`, `${absolute}-shm`]) rmSync(f, { force: true });
      replaced = prior;
    }
    let db: Database | undefined;
    let store: ApiKeyStore;
    try {
      mkdirSync(path.dirname(absolute), { recursive: true });
      db = new Sqlite(absolute, { timeout: 5000 });
      store = new ApiKeyStore(db, absolute, opts.clock ?? (() => new Date()));
    } catch (err) {
      db?.close();
      if (err instanceof MoltbotError) throw err;
      throw new MoltbotError("config_invalid", `${absolute}: cannot open the API key store (${(err as Error).message})`, { cause: err });
    }
    if (prior !== undefined && replaced === undefined) {
      const what = prior.store_id !== store.id ? `holds another store (${store.id})` : olderThan(store.state(), prior);
      if (what !== undefined) {
        if (opts.acceptStore !== true) {
          store.close();
          throw keyStoreLost(absolute, what, prior);
        }
        replaced = prior;
      }
    }
    store.replaced = replaced;
    try {
      store.writeMarker();
    } catch (err) {
      store.close();
      throw new MoltbotError("internal_error", `${markerFile}: cannot write the API key store marker (${(err as Error).message})`, { cause: err });
    }
    return store;
  }

  /** How many keys, how many revoked, the latest change: what the marker records. */
  state(): KeyStoreState {
    const r = this.#db
      .prepare("SELECT count(*) AS keys, count(revoked_at) AS revoked, max(max(created_at), coalesce(max(revoked_at), '')) AS last FROM api_keys")
      .get() as { keys: number; revoked: number; last: string | null };
    return { keys: r.keys, revoked: r.revoked, last_change: r.last === null || r.last === "" ? null : r.last };
  }

  /** Write the marker now: this store's id and state. */
  writeMarker(): void {
    writeKeyStoreMarker(keyStoreMarkerPath(this.file), { store_id: this.id, file: path.basename(this.file), written_at: this.#clock().toISOString(), ...this.state() });
  }

  /** A new key: the only time its text exists outside the client. */
  create(spec: NewApiKey): { key: string; record: ApiKeyRecord } {
    if (!KEY_NAME_PATTERN.test(spec.name)) throw new MoltbotError("cli_usage", `key name '${spec.name}': use letters, digits, '.', '_' or '-' (at most 64)`);
    if (spec.scopes.length === 0) throw new MoltbotError("cli_usage", "a key needs at least one scope");
    const id = crypto.randomBytes(6).toString("hex");
    const key = `${API_KEY_PREFIX}${id}_${crypto.randomBytes(32).toString("base64url")}`;
    const now = this.#clock();
    const expiresAt = spec.ttlMs === undefined ? null : new Date(now.getTime() + spec.ttlMs).toISOString();
    try {
      this.#db
        .prepare("INSERT INTO api_keys (id, name, hash, scopes, models, cost_limit, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .run(id, spec.name, digest(key), spec.scopes.join(" "), spec.models === undefined ? null : JSON.stringify(spec.models), spec.costLimit ?? null, now.toISOString(), expiresAt);
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") throw new MoltbotError("cli_usage", `a key named '${spec.name}' exists already (revoke it first, or choose another name)`);
      throw err;
    }
    this.#version = -1;
    this.writeMarker();
    return { key, record: this.list().find((r) => r.id === id)! };
  }

  /** Every key, revoked ones too (never their hashes). */
  list(): ApiKeyRecord[] {
    return (this.#all.all() as Row[]).map(recordOf);
  }

  /** Revoke the live key named `nameOrId` (or with that id); false when there is none. */
  revoke(nameOrId: string): boolean {
    const r = this.#db.prepare("UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND (name = ? OR id = ?)").run(this.#clock().toISOString(), nameOrId, nameOrId);
    this.#version = -1;
    if (r.changes > 0) this.writeMarker();
    return r.changes > 0;
  }

  /** The principal of a presented key; `invalid_token` when unknown, revoked or expired. */
  verify(key: string): Principal {
    const m = KEY_PATTERN.exec(key);
    if (!m) throw invalid("the API key is malformed");
    this.#refresh();
    const row = this.#byId.get(m[1]!);
    const presented = digest(key);
    // Compared in constant time on two 32-byte digests; an unknown id is compared with itself
    // so that both paths do the same work.
    const same = crypto.timingSafeEqual(row?.hash ?? presented, presented);
    if (row === undefined || !same) throw invalid("unknown API key");
    if (row.revoked_at !== null) throw invalid(`API key '${row.name}' was revoked`);
    if (row.expires_at !== null && Date.parse(row.expires_at) <= this.#clock().getTime()) throw invalid(`API key '${row.name}' has expired`);
    const r = recordOf(row);
    return { subject: `key:${r.name}`, kind: "api_key", scopes: new Set(r.scopes), models: r.models, costLimit: r.costLimit };
  }

  close(): void {
    this.#db.close();
  }

  /** Reload the cache when another connection (the CLI) has committed since the last look. */
  #refresh(): void {
    const v = this.#db.pragma("data_version", { simple: true }) as number;
    if (v === this.#version) return;
    this.#byId = new Map((this.#all.all() as Row[]).map((r) => [r.id, r]));
    this.#version = v;
  }
}

function digest(key: string): Buffer {
  return crypto.createHash("sha256").update(key).digest();
}

function invalid(reason: string): MoltbotError {
  return new MoltbotError("invalid_token", `invalid token: ${reason}`);
}

function recordOf(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    name: r.name,
    scopes: r.scopes.split(" ").filter(Boolean),
    models: r.models === null ? undefined : (JSON.parse(r.models) as string[]),
    costLimit: r.cost_limit ?? undefined,
    createdAt: r.created_at,
    expiresAt: r.expires_at ?? undefined,
    revokedAt: r.revoked_at ?? undefined,
  };
}
