// Finished sequences' KV cells, saved in host memory (llama_state_seq_get_data) when they leave
// the KV buffer, so a later prompt that starts the same way restores them instead of
// evaluating them again: llama.cpp's server keeps such a cache too (--cache-ram).
//
// Why not keep them in the KV buffer: every decode step attends over the buffer's whole used
// range (masked), so idle cells slow every running sequence down; in host memory they cost
// nothing until a prompt asks for them, and restoring 1,000 tokens is a copy of some MiB
// instead of a prompt evaluation of a second or more.
//
// Hand-written: the lookup is "the entry sharing the longest token prefix with this prompt",
// which no key-value LRU offers; entries are few (bounded by bytes) and a comparison stops at
// the first differing token. A Map in insertion order is the LRU.

export interface HostPromptEntry {
  /** Tokens at positions 0..n-1 of the saved sequence. */
  readonly tokens: readonly number[];
  /** llama_state_seq_get_data's bytes for those cells. */
  readonly data: Uint8Array;
}

export class HostPromptCache {
  private readonly entries = new Map<number, HostPromptEntry>();
  private nextId = 0;
  private used = 0;

  constructor(
    /** Most bytes of saved state kept; least recently used entries go first. */
    readonly maxBytes: number,
  ) {}

  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Whether an entry of `bytes` could be kept at all. */
  fits(bytes: number): boolean {
    return bytes > 0 && bytes <= this.maxBytes;
  }

  /**
   * Keep `entry`. Entries whose tokens are a prefix of its tokens go: it serves every prompt
   * they would. Least recently used entries go while the bytes exceed the budget.
   */
  put(entry: HostPromptEntry): void {
    if (!this.fits(entry.data.byteLength)) return;
    for (const [id, e] of this.entries) {
      if (e.tokens.length <= entry.tokens.length && commonPrefix(e.tokens, entry.tokens, e.tokens.length) === e.tokens.length) this.delete(id);
    }
    while (this.used + entry.data.byteLength > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
    }
    this.entries.set(this.nextId++, entry);
    this.used += entry.data.byteLength;
  }

  /**
   * The entry sharing the longest prefix with `prompt` (at most `limit` tokens counted), and
   * that length; null when none shares more than `atLeast` tokens. The entry is removed: the
   * caller puts its cells back into the KV buffer, from where they are saved again later.
   */
  take(prompt: readonly number[], limit: number, atLeast: number): { entry: HostPromptEntry; depth: number } | null {
    let bestId = -1;
    let bestDepth = atLeast;
    for (const [id, e] of this.entries) {
      const d = commonPrefix(e.tokens, prompt, Math.min(limit, e.tokens.length));
      if (d > bestDepth) {
        bestId = id;
        bestDepth = d;
      }
    }
    if (bestId < 0) return null;
    const entry = this.entries.get(bestId)!;
    this.delete(bestId);
    return { entry, depth: bestDepth };
  }

  /** The longest prefix of `prompt` (at most `limit` tokens) any entry holds. */
  peek(prompt: readonly number[], limit: number): number {
    let best = 0;
    for (const e of this.entries.values()) best = Math.max(best, commonPrefix(e.tokens, prompt, Math.min(limit, e.tokens.length)));
    return best;
  }

  private delete(id: number): void {
    const e = this.entries.get(id);
    if (e === undefined) return;
    this.entries.delete(id);
    this.used -= e.data.byteLength;
  }
}

function commonPrefix(a: readonly number[], b: readonly number[], limit: number): number {
  const n = Math.min(limit, a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
