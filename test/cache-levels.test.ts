// The response cache's two levels on real files with an injected clock: TTL expiry in memory
// and on disk, least-recently-used eviction order by entries and by bytes, an L2 hit filling L1,
// entries over max_entry_bytes, a damaged store set aside at open and a damaged row never
// served, and a full disk (a real tmpfs) turning the persistent level off.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ResponseCache, type ResponseCacheOptions } from "../src/cache/response-cache.js";
import type { CachedResponse } from "../src/cache/entry.js";
import { openSqliteStore } from "../src/cache/sqlite-store.js";
import { serialize } from "../src/cache/entry.js";
import { Sqlite } from "../src/storage/sqlite.js";
import { createLogger } from "../src/observe/logger.js";
import { removeDir, tempDir } from "./helpers/fixtures.js";

const response = (text: string, entry = "chat"): CachedResponse => ({
  entry,
  version: "v1",
  text,
  deltas: [[text, 2, 0]],
  done: { finishReason: "stop", promptTokens: 3, completionTokens: 2, cachedTokens: 0 },
  cost: 0.001,
});

async function setup(extra: Partial<ResponseCacheOptions> = {}) {
  const dir = await tempDir("moltbot-cache-");
  const logFile = path.join(dir, "moltbot.log");
  const log = createLogger({ level: "DEBUG", format: "text", stdout: false, file: logFile });
  let now = 1_000_000;
  const opts: ResponseCacheOptions = {
    mode: "deterministic",
    chargeHits: false,
    maxEntryBytes: 1 << 20,
    l1: { maxEntries: 100, maxBytes: 1 << 20, ttlMs: 60_000 },
    l2: { file: path.join(dir, "data", "response-cache.sqlite"), maxBytes: 1 << 20, ttlMs: 3_600_000 },
    log,
    now: () => now,
    ...extra,
  };
  return {
    dir,
    opts,
    file: opts.l2?.file ?? "",
    advance: (ms: number) => (now += ms),
    lines: () => (existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").filter(Boolean) : []),
    done: async () => {
      log.close();
      await removeDir(dir);
    },
  };
}

test("TTL: an entry expires from memory at l1.ttl, from the store at l2.ttl; an L2 hit fills L1", async () => {
  const s = await setup();
  const cache = new ResponseCache(s.opts);
  cache.set("k", response("hello"));
  assert.equal(cache.get("k")?.level, "l1");
  s.advance(59_999);
  assert.equal(cache.get("k")?.level, "l1", "still fresh just before the L1 TTL");
  s.advance(2);
  const fromStore = cache.get("k");
  assert.equal(fromStore?.level, "l2", "gone from memory, still on disk");
  assert.equal(fromStore?.value.text, "hello");
  assert.equal(cache.get("k")?.level, "l1", "the L2 hit filled L1");
  s.advance(3_600_000);
  assert.equal(cache.get("k"), undefined, "past both TTLs: a miss");
  const st = cache.stats();
  assert.equal(st.l1.hits, 3);
  assert.equal(st.l2.hits, 1);
  assert.equal(st.l2.entries, 0, "the expired row was dropped when read");
  cache.close();
  await s.done();
});

test("LRU: memory evicts the least recently used by entries and by bytes; the store by bytes", async () => {
  const s = await setup({ l1: { maxEntries: 3, maxBytes: 1 << 20, ttlMs: 60_000 }, l2: undefined });
  const cache = new ResponseCache(s.opts);
  for (const k of ["a", "b", "c"]) cache.set(k, response(k));
  assert.ok(cache.get("a"), "a is now the most recently used");
  cache.set("d", response("d"));
  assert.deepEqual(cache.memoryKeys(), ["d", "a", "c"], "b, the least recently used, was evicted");
  assert.equal(cache.get("b"), undefined);
  assert.equal(cache.stats().l1.evictions, 1);
  cache.close();

  // By bytes: room for two entries of this size.
  const one = serialize(response("x".repeat(1000))).bytes;
  const byBytes = new ResponseCache({ ...s.opts, l1: { maxEntries: 100, maxBytes: one * 2 + 10, ttlMs: 60_000 } });
  byBytes.set("a", response("x".repeat(1000)));
  byBytes.set("b", response("y".repeat(1000)));
  byBytes.get("a");
  byBytes.set("c", response("z".repeat(1000)));
  assert.deepEqual(byBytes.memoryKeys(), ["c", "a"]);
  byBytes.close();

  // The store: the byte bound evicts the least recently used row (used_ms, moved by reads).
  const file = path.join(s.dir, "store.sqlite");
  const store = openSqliteStore(file, { maxBytes: one * 3 + 10, ttlMs: 3_600_000, now: () => s.advance(1), warn: () => undefined });
  for (const k of ["a", "b", "c"]) store.put(k, serialize(response(k.repeat(1000))));
  assert.ok(store.get("a"));
  store.put("d", serialize(response("d".repeat(1000))));
  assert.equal(store.get("b"), undefined, "b was the least recently used");
  for (const k of ["a", "c", "d"]) assert.ok(store.get(k), k);
  assert.deepEqual({ entries: store.stats().entries, evictions: store.stats().evictions }, { entries: 3, evictions: 1 });
  store.close();
  await s.done();
});

test("clear empties both levels, or one pool entry's responses", async () => {
  const s = await setup();
  const cache = new ResponseCache(s.opts);
  cache.set("a", response("a", "chat"));
  cache.set("b", response("b", "other"));
  assert.deepEqual(cache.clear("chat"), { l1: 1, l2: 1 });
  assert.equal(cache.get("a"), undefined);
  assert.ok(cache.get("b"));
  assert.deepEqual(cache.clear(), { l1: 1, l2: 1 });
  cache.close();
  await s.done();
});

test("a response over max_entry_bytes is not stored", async () => {
  const s = await setup({ maxEntryBytes: 500 });
  const cache = new ResponseCache(s.opts);
  cache.set("big", response("x".repeat(600)));
  cache.set("small", response("ok"));
  assert.equal(cache.get("big"), undefined);
  assert.ok(cache.get("small"));
  assert.equal(cache.stats().too_large, 1);
  assert.equal(cache.stats().l2.entries, 1);
  cache.close();
  await s.done();
});

test("a damaged store is set aside with a warning and rebuilt; a damaged row is never served", async () => {
  const s = await setup();
  const { mkdirSync } = await import("node:fs");
  mkdirSync(path.dirname(s.file), { recursive: true });
  writeFileSync(s.file, Buffer.alloc(8192, 0x5a));
  const cache = new ResponseCache(s.opts);
  const aside = readdirSync(path.dirname(s.file)).filter((f) => f.startsWith("response-cache.sqlite.corrupt-"));
  assert.equal(aside.length, 1, "the damaged file was renamed, not deleted");
  assert.equal(readFileSync(path.join(path.dirname(s.file), aside[0]!)).subarray(0, 4).toString("hex"), "5a5a5a5a");
  assert.ok(s.lines().some((l) => /\[WARNING\] \[cache\] Response cache store .* is damaged .*set aside/.test(l)), s.lines().join("\n"));
  cache.set("k", response("fine"));
  assert.equal(cache.stats().l2.entries, 1, "the new store works");
  cache.close();

  // A row whose body no longer matches its checksum: dropped on read with a warning.
  const db = new Sqlite(s.file);
  db.prepare("UPDATE responses SET body = replace(body, 'fine', 'evil')").run();
  db.close();
  const again = new ResponseCache(s.opts);
  assert.equal(again.get("k"), undefined, "never served from a damaged row");
  assert.ok(s.lines().some((l) => /failed its checksum/.test(l)));
  again.close();
  await s.done();
});

const isRoot = process.getuid?.() === 0;

test("a full disk turns the store off with a warning; memory keeps serving", { skip: isRoot ? false : "mounting a small tmpfs needs root" }, async () => {
  const s = await setup({ maxEntryBytes: 1 << 20 });
  const mnt = path.join(s.dir, "small-disk");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(mnt);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]);
  try {
    const cache = new ResponseCache({ ...s.opts, l2: { file: path.join(mnt, "response-cache.sqlite"), maxBytes: 1 << 30, ttlMs: 3_600_000 } });
    let n = 0;
    while (cache.stats().l2.enabled && n < 500) cache.set(`k${n++}`, response("x".repeat(8000)));
    assert.equal(cache.stats().l2.enabled, false, `the store turned off after ${n} writes`);
    assert.ok(s.lines().some((l) => /\[WARNING\] \[cache\] .*the disk is full.*serving continues/.test(l)), s.lines().join("\n"));
    cache.set("after", response("still here"));
    assert.equal(cache.get("after")?.value.text, "still here", "memory still serves");
    cache.close();
  } finally {
    execFileSync("umount", [mnt]);
    await s.done();
  }
});
