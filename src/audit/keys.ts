// The audit key store (<data_dir>/audit-keys.sqlite), kept apart from the audit file:
// - one random key per user: a record names its user only as HMAC-SHA256(key, user), so
//   `search --user U` recomputes it and `erase --user U` deletes the key (crypto-shredding:
//   the records stay, the chain holds, nothing links them to U any more);
// - the deployment key that signs retention checkpoints;
// - the chain head last made durable (seq, hash): a missing, emptied or cut-short audit file is
//   found at the next open (fail closed) instead of silently starting a new chain.
// SQLite (WAL) because the server and CLI commands use it at once; `data_version` tells the
// server that another process erased a key, so its cache is dropped.
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { Sqlite, type Statement, type Database } from "../storage/sqlite.js";


const SCHEMA = `
CREATE TABLE IF NOT EXISTS user_keys (user TEXT PRIMARY KEY, key BLOB NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export function keysPath(dataDir: string): string {
  return path.join(dataDir, "audit-keys.sqlite");
}

export interface ChainHead {
  seq: number;
  hash: string;
}

export class AuditKeys {
  private readonly db: Database;
  private readonly cache = new Map<string, string>();
  private dataVersion: number;
  private readonly selectKey: Statement;
  private readonly insertKey: Statement;
  private readonly setMeta: Statement;
  private readonly getMeta: Statement;
  /** True when this open created the store (no earlier one was there). */
  readonly created: boolean;

  constructor(readonly file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Sqlite(file, { timeout: 5000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    const fresh = (this.db.prepare("SELECT count(*) AS n FROM sqlite_master").get() as { n: number }).n === 0;
    this.db.exec(SCHEMA);
    this.created = fresh;
    this.selectKey = this.db.prepare("SELECT key FROM user_keys WHERE user = ?");
    this.insertKey = this.db.prepare("INSERT OR IGNORE INTO user_keys (user, key, created) VALUES (?, ?, ?)");
    this.setMeta = this.db.prepare("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value");
    this.getMeta = this.db.prepare("SELECT value FROM meta WHERE name = ?");
    this.dataVersion = this.version();
  }

  private version(): number {
    return this.db.pragma("data_version", { simple: true }) as number;
  }

  /** Drop cached pseudonyms when another process changed the store (an erase). */
  refresh(): void {
    const v = this.version();
    if (v !== this.dataVersion) {
      this.dataVersion = v;
      this.cache.clear();
    }
  }

  /** The user's pseudonym, creating their key on first use. */
  pseudonym(user: string): string {
    const cached = this.cache.get(user);
    if (cached !== undefined) return cached;
    let row = this.selectKey.get(user) as { key: Buffer } | undefined;
    if (row === undefined) {
      this.insertKey.run(user, randomBytes(32), new Date().toISOString());
      row = this.selectKey.get(user) as { key: Buffer };
    }
    const p = hmac(row.key, user);
    this.cache.set(user, p);
    return p;
  }

  /** The user's pseudonym if their key exists (never creates one). */
  lookup(user: string): string | undefined {
    const row = this.selectKey.get(user) as { key: Buffer } | undefined;
    return row === undefined ? undefined : hmac(row.key, user);
  }

  /** pseudonym -> user, for every user whose key is kept (display only). */
  names(): Map<string, string> {
    const out = new Map<string, string>();
    for (const row of this.db.prepare("SELECT user, key FROM user_keys").all() as Array<{ user: string; key: Buffer }>) out.set(hmac(row.key, row.user), row.user);
    return out;
  }

  /** Forget the user's key; false when there was none. */
  erase(user: string): boolean {
    this.cache.delete(user);
    return this.db.prepare("DELETE FROM user_keys WHERE user = ?").run(user).changes > 0;
  }

  /** The key that signs checkpoints, made on first use. */
  deploymentKey(): Buffer {
    const got = this.getMeta.get("deployment_key") as { value: string } | undefined;
    if (got !== undefined) return Buffer.from(got.value, "hex");
    this.db.prepare("INSERT OR IGNORE INTO meta (name, value) VALUES ('deployment_key', ?)").run(randomBytes(32).toString("hex"));
    return Buffer.from((this.getMeta.get("deployment_key") as { value: string }).value, "hex");
  }

  head(): ChainHead | undefined {
    const got = this.getMeta.get("head") as { value: string } | undefined;
    return got === undefined ? undefined : (JSON.parse(got.value) as ChainHead);
  }

  setHead(head: ChainHead): void {
    this.setMeta.run("head", JSON.stringify(head));
    // Our own write does not move data_version; keep the cache.
  }

  close(): void {
    this.db.close();
  }
}

function hmac(key: Buffer, user: string): string {
  return createHmac("sha256", key).update(user).digest("hex").slice(0, 32);
}

/** The checkpoint's signature: HMAC-SHA256 with the deployment key. */
export function signCheckpoint(key: Buffer, fields: { seq: number; hash: string; time: string }): string {
  return createHmac("sha256", key).update(`${fields.seq}\n${fields.hash}\n${fields.time}`).digest("hex");
}
