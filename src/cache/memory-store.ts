// L1: the in-memory LRU, bounded by entries and by bytes, each entry with a TTL. lru-cache does
// the bookkeeping (recency list, size accounting, expiry); the clock is injected through its
// `perf` option so TTL tests move time instead of sleeping.
import { LRUCache } from "lru-cache";
import type { StoredResponse } from "./entry.js";

export interface MemoryStoreOptions {
  maxEntries: number;
  maxBytes: number;
  ttlMs: number;
  /** Milliseconds, monotonic enough for TTLs (default performance.now). */
  now?: () => number;
}

export class MemoryStore {
  private readonly lru: LRUCache<string, StoredResponse>;
  /** Entries pushed out by the entry or byte bound (not expiries, deletes or replacements). */
  evictions = 0;

  constructor(opts: MemoryStoreOptions) {
    const now = opts.now;
    this.lru = new LRUCache<string, StoredResponse>({
      max: opts.maxEntries,
      maxSize: opts.maxBytes,
      sizeCalculation: (v) => Math.max(1, v.bytes),
      ttl: opts.ttlMs,
      // An expired entry is dropped when read, not kept past its TTL for a stale answer.
      allowStale: false,
      // Read the clock at every check: the default caches it for 1 ms behind a timer, which an
      // injected clock would outrun.
      ttlResolution: 0,
      updateAgeOnGet: false,
      ...(now === undefined ? {} : { perf: { now } }),
      dispose: (_v, _k, reason) => {
        if (reason === "evict") this.evictions++;
      },
    });
  }

  get(key: string): StoredResponse | undefined {
    return this.lru.get(key);
  }

  /** Keys from most to least recently used (for tests and `cache stats`). */
  keys(): string[] {
    return [...this.lru.keys()];
  }

  set(key: string, stored: StoredResponse): void {
    // An entry larger than the whole memory bound would evict everything and then be refused.
    if (stored.bytes > this.lru.maxSize) return;
    this.lru.set(key, stored);
  }

  get size(): number {
    return this.lru.size;
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }

  /** Drop every entry, or those of one pool entry; returns how many went. */
  clear(entry?: string): number {
    const doomed = [...this.lru.entries()].filter(([, v]) => entry === undefined || v.value.entry === entry).map(([k]) => k);
    for (const k of doomed) this.lru.delete(k);
    return doomed.length;
  }
}
