// Never bring a revoked API key back to life. The key store (tokens.sqlite) deleted or emptied
// would open as a new, empty store (every key gone: an outage, not a hole), but a store replaced
// by an older copy (a restored backup) quietly accepts every key revoked since that copy was
// taken. So a marker beside it, tokens.marker.json, names the store (the id in its `meta` table)
// and its last known state: how many keys, how many revoked, the latest create or revoke time.
// Rows are never deleted, so a newer store never has fewer keys, fewer revocations or an older
// latest change. It is written atomically (write-file-atomic: temp file, fsync, rename) at open
// and after each create or revoke. At open, a marker whose store is missing, empty, of another id
// or older refuses with key_store_lost, unless the operator accepts the store as it is now
// (`moltbot token reset-store`). Like ledger-marker.ts, kept apart: the two differ in what they
// record and in the ways out they name.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";
import { MoltbotError } from "../errors.js";

export interface KeyStoreMarker {
  /** The id in the store's `meta` table. */
  store_id: string;
  /** The store file's name in the same directory. */
  file: string;
  /** When this marker was written. */
  written_at: string;
  /** Keys in the store, revoked ones included. */
  keys: number;
  /** Revoked keys. */
  revoked: number;
  /** The latest created_at or revoked_at in the store; null when it holds no key. */
  last_change: string | null;
}

/** What the store holds now, in the marker's terms. */
export type KeyStoreState = Pick<KeyStoreMarker, "keys" | "revoked" | "last_change">;

export function keyStoreMarkerPath(storeFile: string): string {
  return path.join(path.dirname(storeFile), "tokens.marker.json");
}

const WAYS_OUT = "Restore the newest copy of the file, or accept the store as it is now with `moltbot token reset-store` (then revoke again any key revoked since)";

/** The marker, or undefined when there is none. An unreadable or malformed marker fails closed. */
export function readKeyStoreMarker(file: string): KeyStoreMarker | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new MoltbotError("key_store_lost", `${file}: cannot read the API key store marker (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  try {
    const m = JSON.parse(text) as KeyStoreMarker;
    if (typeof m.store_id !== "string" || m.store_id === "" || !Number.isInteger(m.keys) || !Number.isInteger(m.revoked)) throw new Error("missing store_id, keys or revoked");
    return m;
  } catch (err) {
    throw new MoltbotError("key_store_lost", `${file}: the API key store marker is not valid (${(err as Error).message}). ${WAYS_OUT}`, { cause: err });
  }
}

export function writeKeyStoreMarker(file: string, marker: KeyStoreMarker): void {
  writeFileAtomic.sync(file, `${JSON.stringify(marker, null, 2)}\n`);
}

/** Whether the store file holds anything: a missing or zero-length file is a new store to SQLite. */
export function keyStoreFileState(file: string): "missing" | "empty" | "present" {
  try {
    return statSync(file).size === 0 ? "empty" : "present";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw err;
  }
}

/** Why the store is older than the marker, or undefined when it is not. */
export function olderThan(now: KeyStoreState, m: KeyStoreMarker): string | undefined {
  const why: string[] = [];
  if (now.keys < m.keys) why.push(`${now.keys} keys`);
  if (now.revoked < m.revoked) why.push(`${now.revoked} revoked`);
  if (m.last_change !== null && (now.last_change === null || now.last_change < m.last_change)) why.push(`last change ${now.last_change ?? "never"}`);
  return why.length === 0 ? undefined : `is an older copy (${why.join(", ")})`;
}

/** "store 1f..: 3 keys, 1 revoked, last change 2026-11-30T07:00:00.000Z, recorded 2026-11-30T07:00:01.000Z" */
export function describeKeyStoreMarker(m: KeyStoreMarker): string {
  return `store ${m.store_id}: ${m.keys} keys, ${m.revoked} revoked, last change ${m.last_change ?? "never"}, recorded ${m.written_at}`;
}

/** The refusal: names the file, what happened to it, what the marker remembers and the ways out. */
export function keyStoreLost(storeFile: string, what: string, marker: KeyStoreMarker): MoltbotError {
  return new MoltbotError(
    "key_store_lost",
    `${storeFile} ${what}, but ${path.basename(keyStoreMarkerPath(storeFile))} beside it records ${describeKeyStoreMarker(marker)}: refusing to open it, as revoked keys could be accepted again. ${WAYS_OUT}`,
  );
}
