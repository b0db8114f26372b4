// Prompt-lookup (n-gram) drafting for speculative decoding, one NgramDrafter per sequence.
// The engine pushes every token that enters the sequence (prompt, then each sampled or
// accepted token), asks draft() for a guess of what follows, verifies the guess in one batch
// and reports back how much of it the model accepted. Generated text often repeats its own
// context (code edits, quotes from a RAG document, JSON keys, chat history), and there the
// tokens that followed the last earlier occurrence of the current suffix are a free draft.
//
// Lookup: the sequence's last n tokens (longest n in [minNgram, maxNgram] first) are looked
// up in one hash index per n that maps an n-gram to the most recent position after which it
// ended. The indexes are updated incrementally in push() (maxNgram hash steps plus one insert
// per n), so a lookup never rescans the history. Keys are 32-bit numeric hashes (no strings);
// the index stores only positions and every probe compares the real tokens in the history, so
// a hash collision costs one extra probe and can never produce a false draft.
//
// Memory: the history is a power-of-two ring of at most `window` tokens (default 32768) and an
// index holds at most 4 slots per windowed token (load <= 1/2, so probes stay short); n-grams
// that slid out of the window count as empty and are dropped when an index is rebuilt. Bound:
// 4 B x window (ring) + 16 B x window x (maxNgram - minNgram + 1) (indexes), about 1.7 MB at
// the defaults; both start small and grow with the sequence.

import { MoltbotError } from "../errors.js";

export interface NgramDrafterOptions {
  /** Longest draft ever proposed (default 8). */
  maxDraft?: number;
  /** Shortest suffix looked up (default 2); shorter matches are too ambiguous to draft from. */
  minNgram?: number;
  /** Longest suffix looked up (default 4); tried first, as a longer match predicts better. */
  maxNgram?: number;
  /** History kept for lookups, in tokens (default 32768, rounded up to a power of two). */
  window?: number;
}

export interface NgramDraftStats {
  /** Draft tokens the engine verified (sum of feedback's `proposed`). */
  proposed: number;
  /** Of those, accepted by the model. */
  accepted: number;
  /** Drafts verified (feedback calls with proposed > 0). */
  drafts: number;
}

/**
 * The adaptive policy, per sequence. A draft token costs the engine a batch row to verify
 * (on a CPU build nearly a full token of compute, since decoding is compute-bound there); an
 * accepted one saves a whole decode step. So the draft length follows the observed run of
 * agreement, and a sequence whose drafts keep failing stops paying for them:
 *  - The length cap starts at `startLength`.
 *  - A fully accepted draft doubles it (up to maxDraft): copying works here, and a long copied
 *    stretch (a quoted paragraph, a repeated code block) usually continues, so grow fast.
 *  - A partly accepted draft cuts it to accepted + 1: the model diverged after `accepted`
 *    tokens, which is the best estimate of the next run; +1 keeps probing for longer runs.
 *  - A draft with nothing accepted halves it. After `failsBeforeBackoff` such drafts in a row
 *    the drafter backs off: draft() returns [] for the next `backoffStart` pushed tokens, then
 *    probes once with a `probeLength` draft. A failed probe doubles the back-off (up to
 *    `backoffMax` tokens) and backs off again at once; any accepted token ends the back-off
 *    and resets it to `backoffStart`. A sequence that never matches thus costs a failed
 *    probe of 2 tokens every `backoffMax` tokens (< 0.2% extra rows), while one that starts
 *    repeating itself later is found again within `backoffMax` tokens.
 * draft() returning [] because nothing matched is not a failure: it costs the engine nothing.
 */
export const NGRAM_DRAFT_POLICY = Object.freeze({
  startLength: 4,
  minLength: 1,
  probeLength: 2,
  failsBeforeBackoff: 2,
  backoffStart: 16,
  backoffMax: 1024,
});

const DEFAULTS = { maxDraft: 8, minNgram: 2, maxNgram: 4, window: 32768 };
/** Smallest ring and index allocated; a short sequence stays this small. */
const MIN_RING = 1024;
const MIN_INDEX = 256;
const HASH_SEED = 0x9747b28c;

// Murmur3-style mixing, one 32-bit block per token, fed newest token first so that one pass
// over the last maxNgram tokens yields the key of every suffix length.
function mixToken(h: number, token: number): number {
  let k = Math.imul(token, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finishKey(h: number, n: number): number {
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/**
 * The index key of the n-gram tokens[end - n .. end - 1], exactly as NgramDrafter computes it
 * (the drafter hashes its own ring with the same two steps). Exported so that callers can
 * reason about, and tests can construct, keys that collide.
 */
export function ngramKey(tokens: ArrayLike<number>, end: number, n: number): number {
  let h = HASH_SEED;
  for (let i = 1; i <= n; i++) h = mixToken(h, tokens[end - i]!);
  return finishKey(h, n);
}

function nextPow2(x: number): number {
  let p = 1;
  while (p < x) p *= 2;
  return p;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) throw new MoltbotError("config_invalid", `ngram drafter: ${name} must be a positive integer, got ${v}`);
  return v;
}

export class NgramDrafter {
  private readonly maxDraft: number;
  private readonly minN: number;
  private readonly maxN: number;
  /** Largest ring (power of two): the lookup window. */
  private readonly windowCap: number;
  /** Largest index per n: 4 slots per windowed token keeps the load <= 1/4 after a rebuild. */
  private readonly indexCap: number;

  /** Token at absolute position p lives at ring[p & (ring.length - 1)]. */
  private ring = new Int32Array(0);
  /** Tokens pushed since reset (absolute position of the next one). */
  private total = 0;
  /**
   * indexes[n - minN]: open addressing, linear probing. A slot holds the absolute position
   * right after an earlier occurrence of some n-gram (its first continuation token), 0 when
   * empty (an n-gram with a continuation ends at >= n >= 1). Entries whose tokens left the
   * window are stale: skipped by lookups, reused by inserts, dropped by rebuilds.
   */
  private indexes: Int32Array[] = [];
  /** Occupied slots per index (stale included): a rebuild triggers above half. */
  private used: number[] = [];
  /** suffixKey[n]: key of the sequence's last n tokens, computed once per push. */
  private readonly suffixKey: Int32Array;

  // Policy state (see NGRAM_DRAFT_POLICY).
  private length: number = NGRAM_DRAFT_POLICY.startLength;
  private fails = 0;
  private skip = 0;
  private backoff: number = NGRAM_DRAFT_POLICY.backoffStart;
  private probing = false;
  private readonly counts: NgramDraftStats = { proposed: 0, accepted: 0, drafts: 0 };

  constructor(opts: NgramDrafterOptions = {}) {
    this.maxDraft = positiveInt("maxDraft", opts.maxDraft, DEFAULTS.maxDraft);
    this.minN = positiveInt("minNgram", opts.minNgram, DEFAULTS.minNgram);
    this.maxN = positiveInt("maxNgram", opts.maxNgram, Math.max(DEFAULTS.maxNgram, this.minN));
    if (this.maxN < this.minN) throw new MoltbotError("config_invalid", `ngram drafter: maxNgram (${this.maxN}) < minNgram (${this.minN})`);
    const window = positiveInt("window", opts.window, DEFAULTS.window);
    this.windowCap = nextPow2(Math.max(window, this.maxN + 1));
    this.indexCap = Math.max(MIN_INDEX, this.windowCap * 4);
    this.suffixKey = new Int32Array(this.maxN + 1);
    this.reset([]);
  }

  /** Acceptance since the last reset() (per sequence, like llama-server's per-task figures). */
  get stats(): Readonly<NgramDraftStats> {
    return { ...this.counts };
  }

  /** Start a sequence: the prompt tokens (llama_token ids, int32) are the context to look up in. */
  reset(prompt: readonly number[]): void {
    const ringSize = Math.min(this.windowCap, nextPow2(Math.max(MIN_RING, prompt.length + MIN_RING)));
    this.ring = new Int32Array(ringSize);
    this.total = 0;
    const indexSize = Math.min(this.indexCap, nextPow2(Math.max(MIN_INDEX, Math.min(prompt.length, this.windowCap) * 4)));
    this.indexes = [];
    this.used = [];
    for (let n = this.minN; n <= this.maxN; n++) {
      this.indexes.push(new Int32Array(indexSize));
      this.used.push(0);
    }
    this.length = Math.min(NGRAM_DRAFT_POLICY.startLength, this.maxDraft);
    this.fails = 0;
    this.skip = 0;
    this.backoff = NGRAM_DRAFT_POLICY.backoffStart;
    this.probing = false;
    this.counts.proposed = 0;
    this.counts.accepted = 0;
    this.counts.drafts = 0;
    for (const t of prompt) this.append(t);
  }

  /** A token entered the sequence (a sampled token or an accepted draft token). */
  push(token: number): void {
    if (this.skip > 0) this.skip--;
    this.append(token);
  }

  /**
   * Up to `max` tokens predicted to follow the sequence: what followed the most recent earlier
   * occurrence of its longest matching suffix. [] when nothing matches or while backing off.
   */
  draft(max: number): number[] {
    if (this.skip > 0) return [];
    const k = Math.floor(Math.min(max, this.length));
    if (!(k >= 1)) return [];
    const ring = this.ring;
    const rmask = ring.length - 1;
    const total = this.total;
    const lo = total > ring.length ? total - ring.length : 0;
    // An earlier occurrence ends at most one token before the suffix's own end, so it needs
    // n + 1 tokens in the window.
    for (let n = Math.min(this.maxN, total - lo - 1); n >= this.minN; n--) {
      const index = this.indexes[n - this.minN]!;
      const imask = index.length - 1;
      const from = total - n;
      for (let i = this.suffixKey[n]! & imask; ; i = (i + 1) & imask) {
        const end = index[i]!;
        if (end === 0) break;
        if (end - n < lo) continue;
        let j = 0;
        const at = end - n;
        while (j < n && ring[(at + j) & rmask] === ring[(from + j) & rmask]) j++;
        if (j === n) return this.copyFrom(end, k);
      }
    }
    return [];
  }

  /**
   * How many of the last draft's `proposed` tokens the model accepted (0..proposed). Drives
   * the policy above; call it once per verified draft, before or after pushing the tokens.
   */
  feedback(proposed: number, accepted: number): void {
    if (!(proposed > 0)) return;
    // Clamped rather than thrown: a miscount here must not fail a request mid-generation.
    const acc = accepted > proposed ? proposed : accepted > 0 ? accepted : 0;
    this.counts.drafts++;
    this.counts.proposed += proposed;
    this.counts.accepted += acc;
    const P = NGRAM_DRAFT_POLICY;
    if (acc === proposed) {
      // A draft cut short by the caller's `max` says nothing against the current length.
      this.length = Math.min(this.maxDraft, Math.max(this.length, 2 * proposed));
    } else if (acc > 0) {
      this.length = Math.max(P.minLength, Math.min(this.length, acc + 1));
    } else {
      this.length = Math.max(P.minLength, this.length >> 1);
    }
    if (acc > 0) {
      this.fails = 0;
      if (this.probing) {
        this.probing = false;
        this.backoff = P.backoffStart;
      }
      return;
    }
    this.fails++;
    if (this.probing || this.fails >= P.failsBeforeBackoff) {
      this.skip = this.backoff;
      this.backoff = Math.min(P.backoffMax, this.backoff * 2);
      this.probing = true;
      this.fails = 0;
      this.length = Math.min(this.maxDraft, P.probeLength);
    }
  }

  /** Copies k tokens from `end` on; a source that runs into the present repeats itself. */
  private copyFrom(end: number, k: number): number[] {
    const ring = this.ring;
    const rmask = ring.length - 1;
    const period = this.total - end;
    const out = new Array<number>(k);
    for (let j = 0; j < k; j++) out[j] = j < period ? ring[(end + j) & rmask]! : out[j - period]!;
    return out;
  }

  private append(token: number): void {
    if (this.total >= this.ring.length && this.ring.length < this.windowCap) this.growRing();
    const ring = this.ring;
    const rmask = ring.length - 1;
    ring[this.total & rmask] = token;
    this.total++;
    const total = this.total;
    const lo = total > ring.length ? total - ring.length : 0;
    // The n-grams that ended just before this token now have a continuation: index them
    // (their keys were computed by the previous append, as that suffix).
    const end = total - 1;
    for (let n = this.minN; n <= this.maxN && end - n >= lo; n++) this.insert(n, this.suffixKey[n]!, end, lo);
    // Keys of the new suffix, newest token first.
    let h = HASH_SEED;
    const avail = total - lo;
    for (let n = 1; n <= this.maxN && n <= avail; n++) {
      h = mixToken(h, ring[(total - n) & rmask]!);
      if (n >= this.minN) this.suffixKey[n] = finishKey(h, n);
    }
  }

  private insert(n: number, key: number, end: number, lo: number): void {
    const slot = n - this.minN;
    const index = this.indexes[slot]!;
    if (this.place(index, n, key, end, lo)) {
      this.used[slot]!++;
      if (this.used[slot]! * 2 > index.length) this.rebuild(n);
    }
  }

  /**
   * Records that the n-gram ending before `end` occurred there (most recent wins). True when
   * it took a new slot, false when it replaced its own older entry or a stale one.
   */
  private place(index: Int32Array, n: number, key: number, end: number, lo: number): boolean {
    const ring = this.ring;
    const rmask = ring.length - 1;
    const imask = index.length - 1;
    const at = end - n;
    let stale = -1;
    let i = key & imask;
    for (; ; i = (i + 1) & imask) {
      const e = index[i]!;
      if (e === 0) break;
      if (e - n < lo) {
        if (stale < 0) stale = i;
        continue;
      }
      let j = 0;
      const other = e - n;
      while (j < n && ring[(other + j) & rmask] === ring[(at + j) & rmask]) j++;
      if (j === n) {
        index[i] = end;
        return false;
      }
    }
    if (stale >= 0) {
      index[stale] = end;
      return false;
    }
    index[i] = end;
    return true;
  }

  /** Re-indexes the windowed n-grams into a table sized for them, dropping stale entries. */
  private rebuild(n: number): void {
    const slot = n - this.minN;
    const ring = this.ring;
    const rmask = ring.length - 1;
    const total = this.total;
    const lo = total > ring.length ? total - ring.length : 0;
    const size = Math.min(this.indexCap, nextPow2(Math.max(MIN_INDEX, (total - lo) * 4)));
    const index = new Int32Array(size);
    let used = 0;
    // Oldest first, so the most recent occurrence of each n-gram is the one that stays.
    for (let end = lo + n; end < total; end++) {
      let h = HASH_SEED;
      for (let i = 1; i <= n; i++) h = mixToken(h, ring[(end - i) & rmask]!);
      if (this.place(index, n, finishKey(h, n), end, lo)) used++;
    }
    this.indexes[slot] = index;
    this.used[slot] = used;
  }

  private growRing(): void {
    const old = this.ring;
    const omask = old.length - 1;
    const ring = new Int32Array(Math.min(this.windowCap, old.length * 2));
    const rmask = ring.length - 1;
    const lo = this.total > old.length ? this.total - old.length : 0;
    for (let p = lo; p < this.total; p++) ring[p & rmask] = old[p & omask]!;
    this.ring = ring;
  }
}
