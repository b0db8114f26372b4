// Which KV cells hold which tokens, across every llama sequence id of one unified KV buffer.
//
// A radix tree over token runs mirrors the cells: each node is a run of cells (consecutive
// positions) and `holders` are the sequence ids whose cells include it. A sequence's cells are
// the path from the root to its leaf. In a unified KV buffer llama_memory_seq_cp only tags
// cells with one more sequence id, so a new sequence that shares a prefix with any other
// (running or idle) joins that path at no cost, and many concurrent sequences can share one
// prefix (SGLang's RadixAttention, on llama.cpp's cells). A cell is free again only when no
// sequence holds it: evicting or cancelling one sequence never frees cells another still uses.
//
// A sequence that finishes stays cached ("idle") under its id, so a later prompt that starts
// the same way (chat history, a system prompt, RAG context) reuses its cells. Cached cells
// are not free in a unified buffer: every decode step attends over the whole used range
// (masked), so an idle sequence is kept only while it earns its place. A prompt that reuses
// most of an idle sequence takes it over (its unreused tail is dropped) and carries on its
// hit count; one that the next admitted prompt does not reuse, and that was never reused
// before, is evicted then (a conversation's next turn, or the next request on a shared
// prefix, reuses it at once); sequences of conversations that keep being continued stay,
// least recently used evicted first, within the engine's budget and whenever the buffer or
// the ids run out. Running sequences are never evicted here. When the engine can save idle
// sequences elsewhere (KvMemoryOps.saveIdle: host memory), an idle sequence the next admitted
// prompt does not take over leaves the buffer at once, saved, and `restore` brings it back
// for a prompt that starts with it: the buffer then holds little beyond what is running.
//
// Hand-written: nothing in npm maps token prefixes onto llama.cpp's cells. Costs: a lookup is
// O(prompt length); appending one token is O(1); attaching/evicting is O(path nodes).

export interface KvMemoryOps {
  /** Tag the cells of positions [0, length) of `src` with `dst` too. */
  copyPrefix(src: number, dst: number, length: number): void;
  /** Drop `seq`'s cells from position `from` on (0: all of them). */
  removeFrom(seq: number, from: number): void;
  /**
   * An idle sequence is about to leave the buffer; `tokens` are its positions 0..n-1. With
   * this, idle sequences leave the buffer at the next admission that does not reuse them
   * (saved elsewhere, e.g. in host memory), instead of staying while they earn hits.
   */
  saveIdle?(seq: number, tokens: number[]): void;
}

interface Node {
  tokens: number[];
  parent: Node | null;
  children: Node[];
  /** Sequence ids whose cells include this run. */
  holders: Set<number>;
}

type SeqState = "empty" | "running" | "idle";

interface Seq {
  state: SeqState;
  leaf: Node;
  length: number;
  /** Tick of the last use, for LRU eviction of idle sequences. */
  lastUse: number;
  /** Prompts that reused this sequence's cells since it was last started. */
  hits: number;
}

export interface PrefixLease {
  seq: number;
  /** Prompt tokens whose cells are already in place (not to be evaluated again). */
  reused: number;
}

export class KvPrefixCache {
  private readonly root: Node = { tokens: [], parent: null, children: [], holders: new Set() };
  private readonly seqs: Seq[];
  private used = 0;
  private tick = 0;

  constructor(
    /** Cells in the KV buffer. */
    readonly cells: number,
    seqCount: number,
    private readonly ops: KvMemoryOps,
  ) {
    this.seqs = Array.from({ length: seqCount }, () => ({ state: "empty" as SeqState, leaf: this.root, length: 0, lastUse: 0, hits: 0 }));
  }

  /** Cells holding some sequence's tokens (each shared cell counted once). */
  get usedCells(): number {
    return this.used;
  }

  get freeCells(): number {
    return this.cells - this.used;
  }

  /** Tokens in `seq`'s cells. */
  lengthOf(seq: number): number {
    return this.seqs[seq]!.length;
  }

  /** Prompt tokens a lookup would reuse now (at most prompt.length - 1: the last is evaluated for its logits). */
  peek(prompt: readonly number[]): number {
    return this.match(prompt, prompt.length - 1).depth;
  }

  /**
   * A sequence id for a new generation, with the longest cached prefix of `prompt` already in
   * its cells (when `reuse`). Null when every id is running. Idle sequences that were never
   * reused and that this prompt does not reuse either are evicted.
   */
  acquire(prompt: readonly number[], reuse: boolean): PrefixLease | null {
    const lease = this.lease(prompt, reuse);
    if (lease !== null) {
      const spill = this.ops.saveIdle !== undefined;
      for (let i = 0; i < this.seqs.length; i++) if (this.seqs[i]!.state === "idle" && (spill || this.seqs[i]!.hits === 0)) this.drop(i);
    }
    return lease;
  }

  private lease(prompt: readonly number[], reuse: boolean): PrefixLease | null {
    const m = reuse ? this.match(prompt, prompt.length - 1) : { node: this.root, offset: 0, depth: 0 };
    // A hit is a reuse of most of a sequence (a conversation's next turn, a repeated context),
    // not a few shared tokens (BOS, a chat template's opening). The new sequence takes over
    // the most recent idle sequence it hits (cut to the match: the unreused tail goes), and
    // carries its hit count on, so a conversation that keeps being continued stays cached.
    // Other idle sequences it hits are dropped: their prefix lives on in the new sequence, and
    // their tails would only widen the range of cells every step attends over.
    if (m.depth > 0) {
      let taken = -1;
      for (const h of m.node.holders) {
        const s = this.seqs[h]!;
        if (s.state !== "idle" || m.depth * 2 < s.length) continue;
        if (taken < 0 || s.lastUse > this.seqs[taken]!.lastUse) taken = h;
      }
      if (taken >= 0) {
        for (const h of [...m.node.holders]) if (h !== taken && this.seqs[h]!.state === "idle" && m.depth * 2 >= this.seqs[h]!.length) this.evict(h);
        const hits = this.seqs[taken]!.hits + 1;
        this.truncate(taken, m.depth);
        this.start(taken);
        this.seqs[taken]!.hits = hits;
        return { seq: taken, reused: m.depth };
      }
    }
    let seq = this.seqs.findIndex((s) => s.state === "empty");
    if (seq < 0 && m.depth > 0) {
      // No free id: take over an idle holder of the match itself (its tail beyond the match is
      // dropped), as llama.cpp's server does with its slots.
      seq = this.lruIdle((id) => m.node.holders.has(id));
      if (seq >= 0) {
        this.truncate(seq, m.depth);
        this.start(seq);
        return { seq, reused: m.depth };
      }
    }
    if (seq < 0) {
      seq = this.lruIdle(() => true);
      if (seq < 0) return null;
      this.drop(seq);
    }
    if (m.depth > 0) {
      const at = m.offset < m.node.tokens.length ? this.split(m.node, m.offset) : m.node;
      const src = at.holders.values().next().value as number;
      this.ops.copyPrefix(src, seq, m.depth);
      for (let n: Node | null = at; n !== null && n !== this.root; n = n.parent) n.holders.add(seq);
      this.seqs[seq]!.leaf = at;
      this.seqs[seq]!.length = m.depth;
    }
    this.start(seq);
    return { seq, reused: m.depth };
  }

  private start(seq: number): void {
    const s = this.seqs[seq]!;
    s.state = "running";
    s.hits = 0;
    s.lastUse = ++this.tick;
  }

  /** Record tokens just decoded into `seq`'s next positions. */
  append(seq: number, token: number): void {
    const s = this.seqs[seq]!;
    const leaf = s.leaf;
    if (leaf !== this.root && leaf.children.length === 0 && leaf.holders.size === 1) {
      leaf.tokens.push(token);
    } else {
      const node: Node = { tokens: [token], parent: leaf, children: [], holders: new Set([seq]) };
      leaf.children.push(node);
      s.leaf = node;
    }
    s.length++;
    this.used++;
  }

  /** A generation ended: its cells stay cached for later prompts (`keep`) or are freed. */
  release(seq: number, keep: boolean): void {
    const s = this.seqs[seq]!;
    if (!keep || s.length === 0) {
      this.evict(seq);
      return;
    }
    s.state = "idle";
    s.lastUse = ++this.tick;
  }

  /**
   * Evict idle sequences, least recently used first, until `needed` cells are free. Returns
   * whether they are. Running sequences and cells they share are never touched.
   */
  makeRoom(needed: number): boolean {
    while (this.freeCells < needed) {
      const victim = this.lruIdle(() => true);
      if (victim < 0) return false;
      this.drop(victim);
    }
    return true;
  }

  /**
   * Evict idle sequences, least recently used first, until the cells only they hold are at
   * most `budget`. Cached cells are not free to keep in a unified buffer: every decode step
   * attends over the whole used range of cells (masked), so a buffer full of stale prefixes
   * slows every sequence down (m100: a 40-token prompt took 50-80 ms fresh, 120-140 ms beside
   * 7,000 cached cells).
   */
  limitIdle(budget: number): void {
    while (this.evictableCells() > budget) {
      const victim = this.lruIdle(() => true);
      if (victim < 0) return;
      this.drop(victim);
    }
  }

  /** Cells that evicting every idle sequence would free (cells no running sequence holds). */
  evictableCells(): number {
    let n = 0;
    const visit = (node: Node): void => {
      for (const c of node.children) {
        let running = false;
        for (const h of c.holders) if (this.seqs[h]!.state === "running") { running = true; break; }
        if (running) visit(c);
        else n += subtreeCells(c);
      }
    };
    visit(this.root);
    return n;
  }

  private lruIdle(accept: (seq: number) => boolean): number {
    let best = -1;
    for (let i = 0; i < this.seqs.length; i++) {
      const s = this.seqs[i]!;
      if (s.state === "idle" && accept(i) && (best < 0 || s.lastUse < this.seqs[best]!.lastUse)) best = i;
    }
    return best;
  }

  /**
   * Put a saved sequence back into the buffer as an idle sequence holding the first `keep` of
   * `tokens` (`load` fills the cells of all of them under the id it is given and says whether
   * it did). Returns the id, or -1 when no id or not enough free cells can be had, or the load
   * failed. The next `acquire` of a prompt starting with those tokens takes it over.
   */
  restore(tokens: readonly number[], keep: number, load: (seq: number) => boolean): number {
    let seq = this.seqs.findIndex((s) => s.state === "empty");
    if (seq < 0) {
      seq = this.lruIdle(() => true);
      if (seq < 0) return -1;
      this.drop(seq);
    }
    if (!this.makeRoom(tokens.length) || !load(seq)) return -1;
    const s = this.seqs[seq]!;
    // Its own cells, not shared with any other sequence: a branch of its own from the root.
    const node: Node = { tokens: tokens.slice(), parent: this.root, children: [], holders: new Set([seq]) };
    this.root.children.push(node);
    this.used += tokens.length;
    s.leaf = node;
    s.length = tokens.length;
    s.state = "idle";
    s.hits = 1;
    s.lastUse = ++this.tick;
    this.truncate(seq, keep);
    return seq;
  }

  /** Evict an idle sequence by policy, saving it first when the ops can. */
  private drop(seq: number): void {
    const s = this.seqs[seq]!;
    if (s.state === "idle" && s.length > 0 && this.ops.saveIdle !== undefined) this.ops.saveIdle(seq, this.tokensOf(seq));
    this.evict(seq);
  }

  /** The tokens in `seq`'s cells, positions 0..n-1. */
  private tokensOf(seq: number): number[] {
    const runs: number[][] = [];
    for (let n: Node | null = this.seqs[seq]!.leaf; n !== null && n !== this.root; n = n.parent) runs.push(n.tokens);
    const out: number[] = [];
    for (let i = runs.length - 1; i >= 0; i--) for (const t of runs[i]!) out.push(t);
    return out;
  }

  /** Free `seq` entirely: its id becomes empty; cells no one else holds become free. */
  private evict(seq: number): void {
    const s = this.seqs[seq]!;
    if (s.length > 0) this.ops.removeFrom(seq, 0);
    for (let n: Node | null = s.leaf; n !== null && n !== this.root; ) {
      const parent: Node | null = n.parent;
      n.holders.delete(seq);
      if (n.holders.size === 0) this.unlink(n);
      n = parent;
    }
    s.state = "empty";
    s.leaf = this.root;
    s.length = 0;
  }

  /** Keep only the first `length` tokens of `seq`'s cells. */
  truncate(seq: number, length: number): void {
    const s = this.seqs[seq]!;
    if (length >= s.length) return;
    this.ops.removeFrom(seq, length);
    let node: Node = s.leaf;
    let end = s.length;
    for (;;) {
      const start = end - node.tokens.length;
      if (start >= length) {
        const parent = node.parent!;
        node.holders.delete(seq);
        if (node.holders.size === 0) this.unlink(node);
        node = parent;
        end = start;
        if (start === length) break;
        continue;
      }
      // The cut falls inside `node`.
      const keep = length - start;
      if (node.holders.size === 1) {
        this.used -= node.tokens.length - keep;
        node.tokens.length = keep;
      } else {
        node = this.split(node, keep);
        node.children[0]!.holders.delete(seq);
      }
      break;
    }
    s.leaf = node;
    s.length = length;
  }

  private unlink(node: Node): void {
    const siblings = node.parent!.children;
    siblings.splice(siblings.indexOf(node), 1);
    this.used -= node.tokens.length;
  }

  /** Cut `node` after `at` tokens; returns the head (same holders), whose only child is the tail. */
  private split(node: Node, at: number): Node {
    const head: Node = { tokens: node.tokens.slice(0, at), parent: node.parent, children: [node], holders: new Set(node.holders) };
    const siblings = node.parent!.children;
    siblings[siblings.indexOf(node)] = head;
    node.tokens = node.tokens.slice(at);
    node.parent = head;
    return head;
  }

  /** The deepest cached run matching `prompt` (at most `limit` tokens). */
  private match(prompt: readonly number[], limit: number): { node: Node; offset: number; depth: number } {
    let node = this.root;
    let depth = 0;
    let offset = 0;
    while (depth < limit) {
      let best: Node | null = null;
      let bestLen = 0;
      // Several children may start alike (two prompts evaluated in the same step): take the longest.
      for (const c of node.children) {
        if (c.tokens[0] !== prompt[depth]) continue;
        let k = 1;
        while (k < c.tokens.length && depth + k < limit && c.tokens[k] === prompt[depth + k]) k++;
        if (k > bestLen) {
          best = c;
          bestLen = k;
        }
      }
      if (best === null) break;
      node = best;
      offset = bestLen;
      depth += bestLen;
      if (bestLen < best.tokens.length) break;
    }
    return { node, offset: node === this.root ? 0 : offset, depth };
  }
}

function subtreeCells(node: Node): number {
  let n = node.tokens.length;
  for (const c of node.children) n += subtreeCells(c);
  return n;
}
