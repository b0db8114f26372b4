// The Engine over libllama through koffi: one llama context whose sequences share one KV
// buffer, and a continuous-batching loop. Each step puts the next token of every generating
// sequence (plus its draft tokens, when prompt lookup finds some) and the pending prompt chunks
// of new ones into one llama_batch, calls llama_decode synchronously and samples each sequence
// with its own sampler chain.
//
// KV cells are managed by KvPrefixCache: a new prompt starts from the longest prefix already in
// any sequence's cells (running or finished), so only its tail is evaluated; finished
// sequences stay cached until their cells or ids are needed (LRU). Room is checked before every
// step: a prompt waits in the queue until its cells fit; a generation that cannot grow preempts
// the newest running sequence, which is re-queued and later resumes by recomputing its tokens
// (vLLM's recompute preemption), so a decode never fails for lack of cells.
//
// Runs only inside a worker process: llama_decode blocks the JS thread for the step (about
// 5 ms for a 100M model), and the loop yields to the event loop between steps (setImmediate)
// so IPC messages (new requests, cancellations) are read; when idle the loop stops and the
// next generate() restarts it, so an idle worker burns no CPU.

import koffi from "koffi";
import { MoltbotError } from "../errors.js";
import { HostPromptCache } from "./host-prompt-cache.js";
import { KvPrefixCache } from "./kv-prefix-cache.js";
import {
  captureNativeErrors,
  floatView,
  LLAMA_FLASH_ATTN_AUTO,
  LLAMA_POOLING_MEAN,
  loadLibLlama,
  NativeBatch,
  NativeCandidates,
} from "./libllama.js";
import type { ContextPtr, DevicePtr, LibLlama, MemoryPtr, ModelPtr, SamplerPtr, ThreadpoolPtr, VocabPtr } from "./libllama.js";
import { chooseBackend, threadsForPlacement } from "./backend.js";
import { DraftGate } from "./draft-gate.js";
import { NgramDrafter } from "./ngram-drafter.js";
import { StepThreadTuner } from "./threads.js";
import type {
  ChatTemplateSource,
  ChatTurn,
  Engine,
  EngineFinishReason,
  EngineLoadOptions,
  EngineModelInfo,
  EnginePlacement,
  GenerateRequest,
  GenerateResult,
  GeneratedToken,
  TokenLogprob,
} from "./types.js";

export interface FfiEngineOptions {
  /** Tokens per llama_decode call: prompt chunks are cut to fit (default 512). */
  batchSize?: number;
  /**
   * With more than one thread: the polling level of the persistent ggml threadpool (0-100, how
   * long a compute thread spins for the next graph before it sleeps), or false for none (ggml
   * then creates and joins its threads on every llama_decode). Default 1: spins ~ms, which
   * covers the gap between steps (sampling) but not an idle engine. Demo model, 2 threads,
   * 1 stream: no pool 1113 tok/s (one round 289), poll 0 1222, poll 1 1289, poll 50 1320.
   */
  threadpoolPoll?: number | false;
  /**
   * Pick 1 thread or all `threads` per decode step by measured speed (StepThreadTuner in
   * threads.ts). Default true; false always uses all.
   */
  adaptiveThreads?: boolean;
}

const LLAMA_DEFAULT_SEED = 0xffffffff;
/** llama.cpp's LLAMA_MAX_SEQ: sequence ids per context. */
const LLAMA_MAX_SEQ = 256;
/** Draft tokens per sequence and step at most. */
const MAX_DRAFT = 8;
/**
 * Drafting stops paying once the batch is already wide: the extra rows then cost as much as
 * they save. Sequences draft only while at most this many generate together.
 */
const DRAFT_MAX_SEQUENCES = 4;
/**
 * Prompt tokens of one sequence per step while others are generating (chunked prefill): a
 * step's time is what every stream waits between two tokens, so a long prompt is fed in
 * slices instead of one 512-token chunk (m100, 2 threads: ~130 ms a slice against ~550 ms).
 * Short prompts still go in whole, many per step.
 */
const PREFILL_SLICE_WHILE_STREAMING = 128;
/** Cells kept free per running sequence when a prompt is admitted, so the running ones can grow. */
const GROWTH_HEADROOM = 16;
/**
 * A saved sequence is restored only when it holds at least this many more of the prompt than
 * the KV buffer does: below it, evaluating the tokens costs about what copying their state does.
 */
const HOST_CACHE_MIN_TOKENS = 32;
/**
 * Idle sequences shorter than this are not saved. Saving writes the cells' state into fresh
 * memory, and first-touch page faults make that the cost (measured here: ~320 MB/s, 13 ms for
 * a 100-token m100 sequence, paid by the next admission); short prompts are evaluated again
 * nearly as fast, and most are never asked for again.
 */
const HOST_CACHE_SAVE_MIN_TOKENS = 256;

/** Draws a lazy grammar's sequence may refuse at one step (malformed call starts) before its grammar constrains the row. */
const TRIGGER_TRIES = 8;
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Where a sequence is, in the words of llama.cpp's server slots: `idle` queued without cells
 * (not admitted yet, or preempted), `prompt` admitted and feeding its tokens, `generating`
 * sampling one token per step (its `next` goes into the next batch), `done` settled. Changed
 * only by `FfiEngine.setSlot`, and only along these edges:
 *
 *   idle ──admitted──▶ prompt ──first token sampled──▶ generating
 *     ▲                  │                                │
 *     └──── preempted ───┴────────────────────────────────┤
 *   idle | prompt | generating ──finished, failed, cancelled──▶ done
 */
type SlotState = "idle" | "prompt" | "generating" | "done";

const SLOT_EDGES: { readonly [S in SlotState]: readonly SlotState[] } = {
  idle: ["prompt", "done"],
  prompt: ["generating", "idle", "done"],
  generating: ["idle", "done"],
  done: [],
};

interface Job {
  request: GenerateRequest;
  slot: SlotState;
  /** Tokens to put into the cells before sampling: the prompt, or after a preemption prompt + completion. */
  tokens: number[];
  /** Tokens of `tokens` already in this sequence's cells. */
  fed: number;
  /** Tokens in this sequence's cells. */
  nPast: number;
  /** The sampled token to feed on the next step (slot `generating`). */
  next: number;
  /** Completion tokens sampled so far (the last one is `next`). */
  completion: number[];
  seq: number;
  sampler: SamplerPtr | null;
  /** The compiled grammar, applied after the chain draws (constrain); null when unconstrained. */
  grammar: SamplerPtr | null;
  /** A lazy grammar still waiting for its trigger (`grammar` is null until then); null otherwise. */
  lazy: LazyGrammar | null;
  drafter: NgramDrafter | null;
  /** Draft tokens put into the current batch after `next`. */
  draft: number[];
  /** Index of this sequence's first logits row in the current batch, -1 when it has none. */
  outIndex: number;
  /** Bytes of a UTF-8 sequence cut by a token boundary, held back until complete. */
  pending: Buffer | null;
  /** The logits row just sampled, when logprobs or EOG suppression read it. */
  pendingRow: Float32Array | null;
  /** Prompt tokens reused from the cache at the first admission. */
  cached: number;
  admitted: boolean;
  drafted: number;
  accepted: number;
  cancelled: boolean;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
  onAbort: (() => void) | null;
}

class FfiEngine implements Engine {
  readonly info: EngineModelInfo;
  private readonly lib: LibLlama;
  private readonly model: ModelPtr;
  private readonly ctx: ContextPtr;
  private readonly vocab: VocabPtr;
  private readonly memory: MemoryPtr | null;
  private readonly batch: NativeBatch;
  private readonly nVocab: number;
  private readonly eogMask: Uint8Array;
  private readonly eogTokens: number[];
  private readonly embedding: boolean;
  private readonly parallel: number;
  private readonly speculative: boolean;
  private readonly chatTemplate: string | null;
  private readonly cache: KvPrefixCache | null;
  private readonly hostCache: HostPromptCache | null;
  private readonly queue: Job[] = [];
  /** Admitted jobs, oldest first (preemption takes the last). */
  private readonly active: Job[] = [];
  private readonly pieceBuf = Buffer.alloc(256);
  private running = false;
  /** No new work is taken (a drain or a destroy has begun). */
  private closed = false;
  /** Destroyed: running work was failed; the loop stops at its next turn. */
  private aborted = false;
  private freed = false;
  private closing: Promise<void> | undefined;
  /** Woken when the loop has no queued or running generation left (a drain waits on it). */
  private idleWaiters: (() => void)[] = [];
  private embedsRunning = 0;
  private readonly threads: number;
  /** Persistent compute threads, attached while a step runs on more than 1 thread. */
  private readonly threadpool: ThreadpoolPtr | null;
  private readonly tuner: StepThreadTuner | null;
  private currentThreads: number;
  private readonly draftGate = new DraftGate();
  /** Candidates for applying a grammar sampler to one token or a whole row; made on first use. */
  private candidates: NativeCandidates | null = null;
  /** Tokens whose piece is not whole, valid UTF-8 (byte tokens, partial byte-level pieces); built on first use. */
  private irregular: { token: number; bytes: Buffer }[] | null = null;

  constructor(
    lib: LibLlama,
    model: ModelPtr,
    ctx: ContextPtr,
    opts: EngineLoadOptions,
    batchSize: number,
    threading: { threads: number; threadpool: ThreadpoolPtr | null; adaptive: boolean },
    placement: EnginePlacement,
  ) {
    this.lib = lib;
    this.threads = threading.threads;
    this.currentThreads = threading.threads;
    this.threadpool = threading.threadpool;
    this.tuner = threading.adaptive && threading.threads > 1 ? new StepThreadTuner(threading.threads) : null;
    this.model = model;
    this.ctx = ctx;
    this.vocab = lib.llama_model_get_vocab(model);
    this.memory = nullable(lib.llama_get_memory(ctx));
    this.embedding = opts.embedding;
    this.parallel = opts.parallel;
    this.speculative = opts.speculative ?? true;
    this.batch = new NativeBatch(batchSize);
    this.nVocab = lib.llama_vocab_n_tokens(this.vocab);
    this.eogMask = new Uint8Array(this.nVocab);
    this.eogTokens = [];
    for (let t = 0; t < this.nVocab; t++) {
      if (lib.llama_vocab_is_eog(this.vocab, t)) {
        this.eogMask[t] = 1;
        this.eogTokens.push(t);
      }
    }
    this.chatTemplate = lib.llama_model_chat_template(model, null) ?? null;
    const kvCells = lib.llama_n_ctx(ctx);
    const memory = this.memory;
    const host = !opts.embedding && (opts.promptCacheBytes ?? 0) > 0 ? new HostPromptCache(opts.promptCacheBytes!) : null;
    this.hostCache = host;
    this.cache =
      opts.embedding || memory === null
        ? null
        : new KvPrefixCache(kvCells, lib.llama_n_seq_max(ctx), {
            copyPrefix: (src, dst, length) => lib.llama_memory_seq_cp(memory, src, dst, 0, length),
            removeFrom: (seq, from) => void lib.llama_memory_seq_rm(memory, seq, from, -1),
            ...(host === null ? {} : { saveIdle: (seq: number, tokens: number[]) => this.saveToHost(host, seq, tokens) }),
          });
    const nHead = lib.llama_model_n_head(model);
    const headDim = nHead > 0 ? lib.llama_model_n_embd(model) / nHead : 0;
    this.info = {
      architecture: this.meta("general.architecture") ?? "unknown",
      trainContextSize: lib.llama_model_n_ctx_train(model),
      // llama.cpp pads the buffer up (to 256); the limit stays what was asked.
      contextSize: Math.min(opts.contextSize, lib.llama_n_ctx_seq(ctx)),
      vocabSize: this.nVocab,
      embeddingSize: lib.llama_model_n_embd(model),
      parameterCount: Number(lib.llama_model_n_params(model)),
      hasChatTemplate: this.chatTemplate !== null,
      kvCacheTokens: this.cache === null ? 0 : kvCells,
      // F16 keys and values (llama.cpp's default cache type) for every layer's KV heads.
      kvBytesPerToken: 2 * 2 * lib.llama_model_n_layer(model) * lib.llama_model_n_head_kv(model) * headDim,
      placement,
    };
  }

  private meta(key: string): string | null {
    const buf = Buffer.alloc(512);
    const n = this.lib.llama_model_meta_val_str(this.model, key, buf, buf.length);
    return n < 0 ? null : buf.subarray(0, Math.min(n, buf.length - 1)).toString("utf8");
  }

  private assertOpen(): void {
    if (this.closed) throw new MoltbotError("engine_error", "engine is closed or closing");
  }

  // ---- text -------------------------------------------------------------------------------

  tokenize(text: string, addSpecial: boolean): number[] {
    this.assertOpen();
    const bytes = Buffer.from(text, "utf8");
    let out = new Int32Array(bytes.length + 8);
    let n = this.lib.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, true);
    if (n < 0) {
      out = new Int32Array(-n);
      n = this.lib.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, true);
    }
    if (n < 0) throw new MoltbotError("engine_error", `tokenization failed (${n})`);
    return Array.from(out.subarray(0, n));
  }

  detokenize(tokens: number[]): string {
    this.assertOpen();
    if (tokens.length === 0) return "";
    const ids = Int32Array.from(tokens);
    let buf = Buffer.alloc(tokens.length * 8 + 16);
    let n = this.lib.llama_detokenize(this.vocab, ids, ids.length, buf, buf.length, false, false);
    if (n < 0) {
      buf = Buffer.alloc(-n);
      n = this.lib.llama_detokenize(this.vocab, ids, ids.length, buf, buf.length, false, false);
    }
    if (n < 0) throw new MoltbotError("engine_error", `detokenization failed (${n})`);
    return buf.subarray(0, n).toString("utf8");
  }

  /** Raw bytes of one token's piece (special tokens render as empty). */
  private pieceBytes(token: number): Buffer {
    let n = this.lib.llama_token_to_piece(this.vocab, token, this.pieceBuf, this.pieceBuf.length, 0, false);
    if (n >= 0) return this.pieceBuf.subarray(0, n);
    const big = Buffer.alloc(-n);
    n = this.lib.llama_token_to_piece(this.vocab, token, big, big.length, 0, false);
    return big.subarray(0, Math.max(0, n));
  }

  chatTemplateSource(): ChatTemplateSource | null {
    if (this.chatTemplate === null) return null;
    const text = (token: number) => {
      if (token < 0) return "";
      const n = this.lib.llama_token_to_piece(this.vocab, token, this.pieceBuf, this.pieceBuf.length, 0, true);
      return n > 0 ? this.pieceBuf.subarray(0, n).toString("utf8") : "";
    };
    return { template: this.chatTemplate, bosToken: text(this.lib.llama_vocab_bos(this.vocab)), eosToken: text(this.lib.llama_vocab_eos(this.vocab)), addsBos: this.lib.llama_vocab_get_add_bos(this.vocab) };
  }

  formatChat(turns: ChatTurn[]): string {
    this.assertOpen();
    if (this.chatTemplate !== null) {
      const msgs = turns.map((t) => ({ role: t.role === "developer" ? "system" : t.role, content: t.content }));
      const size = msgs.reduce((s, m) => s + Buffer.byteLength(m.content) + m.role.length, 0) * 2 + 256;
      let buf = Buffer.alloc(size);
      let n = this.lib.llama_chat_apply_template(this.chatTemplate, msgs, msgs.length, true, buf, buf.length);
      if (n > buf.length) {
        buf = Buffer.alloc(n);
        n = this.lib.llama_chat_apply_template(this.chatTemplate, msgs, msgs.length, true, buf, buf.length);
      }
      // A negative result means llama.cpp does not recognise this template: use the fallback.
      if (n >= 0) return buf.subarray(0, n).toString("utf8");
    }
    const label: Record<ChatTurn["role"], string> = { system: "System", developer: "System", user: "User", assistant: "Assistant", tool: "Tool" };
    return turns.map((t) => `${label[t.role]}: ${t.content}\n`).join("") + "Assistant:";
  }

  // ---- generation -------------------------------------------------------------------------

  generate(request: GenerateRequest): Promise<GenerateResult> {
    try {
      this.assertOpen();
      if (this.embedding) throw new MoltbotError("engine_error", "this engine was loaded for embeddings and cannot generate");
    } catch (e) {
      return Promise.reject(e);
    }
    const prompt = request.promptTokens;
    if (prompt.length === 0) return Promise.reject(new MoltbotError("invalid_request", "the prompt is empty"));
    // The worker resolved the room; a breach here is a bug upstream, not a client error.
    if (request.maxTokens < 1 || prompt.length + request.maxTokens > this.info.contextSize) {
      return Promise.reject(new MoltbotError("internal_error", `generation of ${prompt.length} + ${request.maxTokens} tokens does not fit the context (${this.info.contextSize})`));
    }
    for (const t of prompt) {
      if (!Number.isInteger(t) || t < 0 || t >= this.nVocab) return Promise.reject(new MoltbotError("invalid_request", `token id ${t} is outside the vocabulary (0..${this.nVocab - 1})`));
    }
    if (request.signal?.aborted) return Promise.resolve(this.result(prompt.length, "aborted", 0, 0, 0, 0));
    let grammar: SamplerPtr | null = null;
    let lazy: LazyGrammar | null = null;
    try {
      grammar = this.compileGrammar(request.params);
      const triggers = request.params.grammarTriggers;
      if (grammar !== null && triggers !== undefined) {
        lazy = { patterns: triggers.patterns.map((p) => new RegExp(p, "d")), grammar, text: "", starts: [] };
        grammar = null;
      }
    } catch (e) {
      if (grammar !== null) this.lib.llama_sampler_free(grammar);
      return Promise.reject(e);
    }
    return new Promise<GenerateResult>((resolve, reject) => {
      const job: Job = {
        request, slot: "idle", tokens: prompt, fed: 0, nPast: 0, next: -1, completion: [], seq: -1, sampler: null, grammar, lazy, drafter: null, draft: [],
        outIndex: -1, pending: null, pendingRow: null, cached: 0, admitted: false, drafted: 0, accepted: 0, cancelled: false, resolve, reject, onAbort: null,
      };
      if (request.signal) {
        job.onAbort = () => this.cancel(job);
        request.signal.addEventListener("abort", job.onAbort, { once: true });
      }
      this.queue.push(job);
      this.wake();
    });
  }

  /**
   * The request's grammar as a sampler, compiled when the request arrives so that a grammar
   * that does not parse is refused before it queues, with llama.cpp's reason. Compiling per
   * request is cheap next to a generation (docs/benchmarks.md, bench/grammar.ts).
   */
  private compileGrammar(p: GenerateRequest["params"]): SamplerPtr | null {
    if (p.grammar === undefined || p.grammar.length === 0) return null;
    // A lazy grammar is best effort (`tool_choice: auto`): where it cannot apply, the output is free.
    if (p.grammarTriggers !== undefined && (p.ignoreEos || p.minTokens > 0)) return null;
    // With the end-of-generation token masked, a completed grammar leaves no token to sample,
    // and llama.cpp throws (aborting the process) when it is made to accept a token the grammar refuses.
    if (p.ignoreEos || p.minTokens > 0) {
      throw new MoltbotError("unsupported_parameter", `'${p.ignoreEos ? "ignore_eos" : "min_tokens"}' cannot be combined with a grammar or response_format: the model must be able to stop when the grammar is complete`);
    }
    // Under capture: the parser says why it refused only on stderr (about 0.1 ms a request).
    const grammar = p.grammar;
    const { result, text } = captureNativeErrors(() => nullable(this.lib.llama_sampler_init_grammar(this.vocab, grammar, "root")));
    if (result !== null) return result;
    throw new MoltbotError("invalid_grammar", `the grammar is not valid GBNF: ${grammarProblem(text)}`, { param: "grammar" });
  }

  private result(promptTokens: number, reason: EngineFinishReason, completionTokens: number, cached: number, drafted: number, accepted: number): GenerateResult {
    return { finishReason: reason, promptTokens, completionTokens, cachedTokens: cached, draftTokens: drafted, acceptedDraftTokens: accepted };
  }

  /** The one place a sequence's slot state changes; an edge not drawn at SlotState is a bug. */
  private setSlot(job: Job, to: SlotState): void {
    if (!SLOT_EDGES[job.slot].includes(to)) throw new MoltbotError("internal_error", `sequence slot ${job.slot} → ${to}`);
    job.slot = to;
  }

  private cancel(job: Job): void {
    if (job.slot === "done") return;
    const q = this.queue.indexOf(job);
    if (q >= 0) {
      // Queued: never admitted, or preempted (then it still owns a sampler to free).
      this.queue.splice(q, 1);
      this.finish(job, "aborted");
    } else {
      job.cancelled = true; // the loop finishes it before the next step
    }
  }

  private wake(): void {
    if (!this.running && !this.aborted) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (!this.aborted) {
        this.admitQueuedJobs();
        if (this.active.length === 0) break;
        this.step();
        await yieldToEventLoop();
      }
    } finally {
      this.running = false;
      if (this.queue.length === 0 && this.active.length === 0) this.wakeIdle();
    }
  }

  private wakeIdle(): void {
    if (this.embedsRunning > 0) return;
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private get idle(): boolean {
    return !this.running && this.queue.length === 0 && this.active.length === 0 && this.embedsRunning === 0;
  }

  /** Cells that admitted jobs will still fill with their prompts (not yet fed). */
  private pendingPromptCells(): number {
    let n = 0;
    for (const job of this.active) n += job.tokens.length - job.fed;
    return n;
  }

  /**
   * Admits queued jobs in order while a sequence is free and their uncached tokens fit beside
   * what running sequences will need; a job that does not fit waits (head of line), and cells
   * of running sequences are never taken for it.
   */
  private admitQueuedJobs(): void {
    const cache = this.cache!;
    while (this.queue.length > 0 && this.active.length < this.parallel) {
      const job = this.queue[0]!;
      if (job.cancelled) {
        this.queue.shift();
        this.finish(job, "aborted");
        continue;
      }
      const reuse = job.request.params.cachePrompt;
      if (reuse && this.hostCache !== null) this.restoreFromHost(this.hostCache, job.tokens);
      const uncached = job.tokens.length - (reuse ? cache.peek(job.tokens) : 0);
      const room = cache.freeCells + cache.evictableCells() - this.pendingPromptCells() - GROWTH_HEADROOM * (this.active.length + 1);
      if (uncached > room && this.active.length > 0) return;
      const lease = cache.acquire(job.tokens, reuse);
      if (lease === null) return;
      this.queue.shift();
      job.seq = lease.seq;
      job.fed = lease.reused;
      job.nPast = lease.reused;
      this.setSlot(job, "prompt");
      if (!job.admitted) {
        job.admitted = true;
        job.cached = lease.reused;
        const constrained = job.grammar !== null;
        job.sampler = this.makeSampler(job);
        // No drafting under a grammar. Sampling row by row would keep the grammar exact (it
        // accepts only tokens kept), but JSON's repeated structure makes the drafter propose,
        // and draft rows widen the step every sequence in the batch waits for: beside one
        // drafting constrained sequence the others ran at x0.68 (demo, 4 streams, bench/grammar.ts).
        if (this.speculative && !constrained) {
          job.drafter = new NgramDrafter({ maxDraft: MAX_DRAFT });
          job.drafter.reset(job.tokens);
        }
      }
      this.active.push(job);
    }
  }

  /** An idle sequence leaves the KV buffer: keep its cells' state in host memory. */
  private saveToHost(host: HostPromptCache, seq: number, tokens: number[]): void {
    if (tokens.length < HOST_CACHE_SAVE_MIN_TOKENS) return;
    const size = Number(this.lib.llama_state_seq_get_size(this.ctx, seq));
    if (!host.fits(size)) return;
    const data = Buffer.allocUnsafeSlow(size);
    const n = Number(this.lib.llama_state_seq_get_data(this.ctx, data, size, seq));
    if (n > 0) host.put({ tokens, data: data.subarray(0, n) });
  }

  /**
   * Before a prompt is admitted: when host memory holds clearly more of it than the KV buffer,
   * put those cells back (as an idle sequence the admission then takes over). Only when they
   * and the prompt's rest fit beside what the running sequences need: never at their expense.
   */
  private restoreFromHost(host: HostPromptCache, prompt: number[]): void {
    const cache = this.cache!;
    const limit = prompt.length - 1;
    const inKv = cache.peek(prompt);
    if (host.peek(prompt, limit) < inKv + HOST_CACHE_MIN_TOKENS) return;
    const found = host.take(prompt, limit, inKv + HOST_CACHE_MIN_TOKENS - 1)!;
    const room = cache.freeCells + cache.evictableCells() - this.pendingPromptCells() - GROWTH_HEADROOM * (this.active.length + 1);
    if (found.entry.tokens.length + prompt.length - found.depth > room) {
      host.put(found.entry);
      return;
    }
    const { data } = found.entry;
    const seq = cache.restore(found.entry.tokens, found.depth, (s) => Number(this.lib.llama_state_seq_set_data(this.ctx, data, data.byteLength, s)) > 0);
    if (seq < 0) host.put(found.entry);
  }

  private makeSampler(job: Job): SamplerPtr {
    const L = this.lib;
    const p = job.request.params;
    const chain = L.llama_sampler_chain_init({ no_perf: true });
    if (p.temperature <= 0) {
      L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy());
    } else {
      if (p.topP > 0 && p.topP < 1) L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(p.topP, 1));
      L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(p.temperature));
      L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(p.seed === undefined ? LLAMA_DEFAULT_SEED : p.seed >>> 0));
    }
    return chain;
  }

  /**
   * Make room for one new cell per generating sequence: evict cached idle prefixes, then
   * preempt the newest running sequences until the rest fit.
   */
  private makeRoomForGrowth(): void {
    const cache = this.cache!;
    for (;;) {
      let generating = 0;
      for (const job of this.active) if (job.slot === "generating") generating++;
      if (cache.makeRoom(generating)) return;
      this.preempt(this.active[this.active.length - 1]!);
    }
  }

  /**
   * Give a running sequence's cells back and re-queue it at the front: it resumes by
   * recomputing prompt + completion (its sampler and drafter keep their state, so the output
   * is the one it would have produced). Its cells stay cached, so when room comes back soon
   * they are reused rather than recomputed.
   */
  private preempt(job: Job): void {
    this.active.splice(this.active.indexOf(job), 1);
    // The completion's last token is `next`, sampled but not yet in the cells.
    if (job.slot === "generating") job.tokens = [...job.request.promptTokens, ...job.completion];
    this.setSlot(job, "idle");
    this.cache!.release(job.seq, true);
    job.seq = -1;
    job.fed = 0;
    this.queue.unshift(job);
  }

  /** One decode step over every active sequence. */
  private step(): void {
    const b = this.batch;
    const cap = b.capacity;
    const cache = this.cache!;
    for (let i = 0; i < this.active.length; i++) {
      const job = this.active[i]!;
      job.outIndex = -1;
      job.draft = [];
      if (job.cancelled) {
        this.finish(job, "aborted");
        i--;
      }
    }
    this.makeRoomForGrowth();
    let generating = 0;
    for (const job of this.active) if (job.slot === "generating") generating++;
    // Drafts only while the batch is narrow, and only where the cells and batch have room.
    let draftBudget = generating <= DRAFT_MAX_SEQUENCES ? Math.min(cap - generating, cache.freeCells - generating) : 0;
    let n = 0;
    for (const job of this.active) {
      if (job.slot !== "generating") continue;
      b.token[n] = job.next;
      b.pos[n] = job.nPast;
      b.seq[n] = job.seq;
      b.logits[n] = 1;
      job.outIndex = n;
      n++;
      if (draftBudget > 0 && job.drafter !== null && this.draftGate.pays(job.accepted, job.drafted)) {
        const left = job.request.maxTokens - job.completion.length;
        const draft = job.drafter.draft(Math.max(0, Math.min(MAX_DRAFT, draftBudget, left - 1, this.info.contextSize - job.nPast - 2)));
        for (let k = 0; k < draft.length; k++) {
          b.token[n] = draft[k]!;
          b.pos[n] = job.nPast + 1 + k;
          b.seq[n] = job.seq;
          b.logits[n] = 1;
          n++;
        }
        job.draft = draft;
        draftBudget -= draft.length;
      }
    }
    // Then prompt chunks, in admission order, as far as the batch and the cells have room.
    // Prompt tokens are recorded in the cache as they are batched; the tokens above after the decode.
    const unrecorded = n;
    const slice = generating > 0 ? PREFILL_SLICE_WHILE_STREAMING : cap;
    for (const job of this.active) {
      if (job.slot !== "prompt" || n >= cap) continue;
      const want = Math.min(job.tokens.length - job.fed, cap - n, slice);
      cache.makeRoom(unrecorded + want);
      const take = Math.min(want, cache.freeCells - unrecorded);
      if (take <= 0) break;
      for (let k = 0; k < take; k++) {
        b.token[n] = job.tokens[job.fed + k]!;
        b.pos[n] = job.nPast + k;
        b.seq[n] = job.seq;
        b.logits[n] = 0;
        n++;
      }
      job.fed += take;
      job.nPast += take;
      for (let k = job.fed - take; k < job.fed; k++) cache.append(job.seq, job.tokens[k]!);
      if (job.fed === job.tokens.length) {
        b.logits[n - 1] = 1;
        job.outIndex = n - 1;
      }
    }
    if (n === 0) return;
    b.value.n_tokens = n;
    const threads = this.tuner === null ? this.threads : this.tuner.choose(n);
    this.useThreads(threads);
    const t0 = performance.now();
    const rc = this.lib.llama_decode(this.ctx, b.value);
    const ms = performance.now() - t0;
    this.tuner?.record(n, threads, ms);
    if (generating === 1 && n === unrecorded) this.draftGate.record(n - 1, ms);
    if (rc !== 0) {
      // Room was made before the step, so this is not a full cache: fail what was in the batch.
      const why = rc === 1 ? "no KV cache room for the batch" : rc === 2 ? "decode aborted" : `llama_decode failed (${rc})`;
      for (const job of [...this.active]) {
        if (job.outIndex >= 0 || job.slot === "prompt") this.fail(job, new MoltbotError("engine_error", why));
      }
      return;
    }
    for (let i = 0; i < this.active.length; i++) {
      const job = this.active[i]!;
      if (job.outIndex < 0) continue;
      if (this.sampleNext(job)) i--; // finished: removed from active
    }
  }

  /**
   * Switching costs two field stores in llama.cpp (the CPU plan is rebuilt on every compute
   * anyway). A 1-thread step runs detached from the pool: ggml then pauses the pool, so its
   * threads sleep instead of waking (or spinning) on every step they take no part in.
   */
  private useThreads(threads: number): void {
    if (threads === this.currentThreads) return;
    if (this.threadpool !== null) {
      if (threads === 1) this.lib.llama_detach_threadpool(this.ctx);
      else this.lib.llama_attach_threadpool(this.ctx, this.threadpool, null);
    }
    this.lib.llama_set_n_threads(this.ctx, threads, threads);
    this.currentThreads = threads;
  }

  /**
   * After a decode: record the fed token, then sample at this sequence's rows in order: the row
   * of `next` (or of the prompt's last token), then one per draft token for as long as the
   * sampled token equals the draft. Sampling row by row and stopping at the first mismatch
   * draws exactly what sampling one token per step would (same rows, same sampler calls), so
   * the output does not depend on drafting. Cells of rejected drafts are dropped. True when
   * the sequence finished.
   */
  private sampleNext(job: Job): boolean {
    const cache = this.cache!;
    if (job.slot === "generating") {
      cache.append(job.seq, job.next);
      job.nPast++;
    }
    const draft = job.draft;
    let row = job.outIndex;
    let accepted = 0;
    for (;;) {
      const token = this.sampleAt(job, row);
      if (token < 0) return true; // failed
      const end = this.emit(job, token);
      if (end !== null) {
        this.dropDrafts(job, draft.length, accepted);
        return this.finish(job, end);
      }
      if (accepted < draft.length && token === draft[accepted]) {
        // The draft token's cell already holds this token: it is fed.
        cache.append(job.seq, token);
        job.nPast++;
        accepted++;
        row++;
        continue;
      }
      job.next = token;
      if (job.slot === "prompt") this.setSlot(job, "generating");
      break;
    }
    this.dropDrafts(job, draft.length, accepted);
    return false;
  }

  private dropDrafts(job: Job, proposed: number, accepted: number): void {
    if (proposed === 0) return;
    job.drafted += proposed;
    job.accepted += accepted;
    job.drafter?.feedback(proposed, accepted);
    if (accepted < proposed) this.lib.llama_memory_seq_rm(this.memory!, job.seq, job.nPast, -1);
  }

  /** Sample one token from logits row `row`; -1 when the job failed. */
  private sampleAt(job: Job, row: number): number {
    const p = job.request.params;
    const suppress = p.ignoreEos || job.completion.length < p.minTokens;
    const constrained = job.grammar !== null;
    if (suppress || constrained || p.topLogprobs !== null) {
      const ptr = nullable(this.lib.llama_get_logits_ith(this.ctx, row));
      if (ptr === null) {
        this.fail(job, new MoltbotError("engine_error", "no logits for a sequence"));
        return -1;
      }
      const logits = floatView(ptr, this.nVocab);
      // The sampler reads this same row, so -inf here keeps it from ever picking an EOG token.
      if (suppress) for (const t of this.eogTokens) logits[t] = -Infinity;
      // llama.cpp's grammar decodes UTF-8 leniently (an overlong or out-of-range sequence
      // counts as one character), so constrained text could hold bytes that are not UTF-8
      // (not JSON, and lengths off): keep the text valid, a few hundred checks per token.
      if (constrained) for (const { token, bytes } of this.irregularPieces()) if (!continuesUtf8(job.pending, bytes)) logits[token] = -Infinity;
      job.pendingRow = logits;
    }
    const token = this.lib.llama_sampler_sample(job.sampler!, this.ctx, row);
    if (job.lazy !== null) return this.awaitTrigger(job, token, row);
    return job.grammar === null ? token : this.constrain(job, token, row);
  }

  /**
   * A lazy grammar before its trigger: the drawn token is kept unless it completes a trigger.
   * Then the grammar must accept the text from the trigger's start on, fed as the tokens that
   * hold it (the start must be a token boundary); if it does not, the token is refused and the
   * chain draws again, so a call, once it starts, is a valid start of one. This is done here,
   * not by libllama's lazy sampler (llama_sampler_init_grammar_lazy_patterns): that one throws
   * a C++ exception, which aborts the process through the FFI, when the text at its trigger is
   * not a prefix the grammar accepts, and a free-running model can write such text.
   */
  private awaitTrigger(job: Job, drawn: number, row: number): number {
    const lazy = job.lazy!;
    let token = drawn;
    for (let tries = 0; tries < TRIGGER_TRIES; tries++) {
      const text = lazy.text + this.pieceBytes(token).toString("latin1");
      const start = triggerStart(lazy.patterns, text);
      if (start === -1) {
        lazy.starts.push(lazy.text.length);
        lazy.text = text;
        return token;
      }
      const first = start === lazy.text.length ? job.completion.length : lazy.starts.indexOf(start);
      if (first !== -1 && this.replay(lazy.grammar, [...job.completion.slice(first), token])) {
        job.grammar = lazy.grammar;
        job.lazy = null;
        job.drafter = null; // no drafting under a grammar (see admit)
        return token;
      }
      // The grammar refused (some of) that text: start it afresh, refuse the token, draw again.
      this.lib.llama_sampler_free(lazy.grammar);
      lazy.grammar = this.compileGrammar({ ...job.request.params, grammarTriggers: undefined })!;
      const logits = this.rowLogits(job, row);
      if (logits === null) return -1;
      logits[token] = -Infinity;
      token = this.lib.llama_sampler_sample(job.sampler!, this.ctx, row);
    }
    // The model keeps starting malformed calls: constrain from here on.
    job.grammar = lazy.grammar;
    job.lazy = null;
    job.drafter = null;
    this.rowLogits(job, row);
    return job.pendingRow === null ? -1 : this.constrain(job, token, row);
  }

  /** Feeds tokens to a fresh grammar while it accepts each; false at the first it refuses. */
  private replay(grammar: SamplerPtr, tokens: number[]): boolean {
    const c = (this.candidates ??= new NativeCandidates(this.nVocab));
    for (const t of tokens) {
      c.set(0, t, 0);
      this.lib.llama_sampler_apply(grammar, c.pointer(1));
      if (c.logit(0) === -Infinity) return false;
      this.lib.llama_sampler_accept(grammar, t);
    }
    return true;
  }

  /** This row's logits, writable (the chain samples from the same memory); null when the job failed. */
  private rowLogits(job: Job, row: number): Float32Array | null {
    if (job.pendingRow !== null) return job.pendingRow;
    const ptr = nullable(this.lib.llama_get_logits_ith(this.ctx, row));
    if (ptr === null) {
      this.fail(job, new MoltbotError("engine_error", "no logits for a sequence"));
      return null;
    }
    job.pendingRow = floatView(ptr, this.nVocab);
    return job.pendingRow;
  }

  /**
   * Grammar first-pass check, as llama.cpp's common sampler does: the token drawn without the
   * grammar is kept when the grammar allows it (one candidate checked instead of the whole
   * vocabulary); otherwise the grammar masks the row and the chain draws again. The grammar
   * accepts exactly the token returned, and every token sampled is kept (drafts are off under
   * a grammar), so it advances by exactly the completion.
   */
  private constrain(job: Job, token: number, row: number): number {
    const L = this.lib;
    const grammar = job.grammar!;
    const logits = job.pendingRow!;
    const c = (this.candidates ??= new NativeCandidates(this.nVocab));
    c.set(0, token, 0);
    L.llama_sampler_apply(grammar, c.pointer(1));
    if (c.logit(0) !== -Infinity) {
      L.llama_sampler_accept(grammar, token);
      return token;
    }
    const n = this.nVocab;
    for (let i = 0; i < n; i++) c.set(i, i, logits[i]!);
    L.llama_sampler_apply(grammar, c.pointer(n));
    for (let i = 0; i < n; i++) if (c.logit(i) === -Infinity) logits[c.token(i)] = -Infinity;
    // The chain's samplers keep no state across an accept (greedy, top-p, temperature, dist),
    // so drawing again from the masked row is drawing once from the constrained distribution.
    const allowed = L.llama_sampler_sample(job.sampler!, this.ctx, row);
    // Nothing left (a grammar that wants bytes no token of this vocabulary gives as valid
    // UTF-8): llama.cpp aborts the process when its grammar accepts a token it refuses.
    if (logits[allowed] === -Infinity) {
      this.fail(job, new MoltbotError("invalid_grammar", `the grammar allows no token of this model's vocabulary after ${job.completion.length} tokens`));
      return -1;
    }
    L.llama_sampler_accept(grammar, allowed);
    return allowed;
  }

  private irregularPieces(): { token: number; bytes: Buffer }[] {
    if (this.irregular !== null) return this.irregular;
    const out: { token: number; bytes: Buffer }[] = [];
    for (let t = 0; t < this.nVocab; t++) {
      const bytes = this.pieceBytes(t);
      if (bytes.length > 0 && !continuesUtf8(null, bytes, true)) out.push({ token: t, bytes: Buffer.from(bytes) });
    }
    this.irregular = out;
    return out;
  }

  /** Report one sampled token; the finish reason when the sequence ends with it, else null. */
  private emit(job: Job, token: number): EngineFinishReason | null {
    const p = job.request.params;
    job.completion.push(token);
    if (this.eogMask[token] === 1) return "stop";
    job.drafter?.push(token);
    const out: GeneratedToken = { id: token, text: this.pieceText(job, token) };
    if (p.topLogprobs !== null && job.pendingRow !== null) this.addLogprobs(out, job.pendingRow, token, p.topLogprobs);
    job.pendingRow = null;
    let keep: boolean;
    try {
      keep = job.request.onToken(out);
    } catch (e) {
      this.fail(job, e);
      return "aborted";
    }
    if (!keep || job.cancelled) return "aborted";
    if (job.completion.length >= job.request.maxTokens) return "length";
    return null;
  }

  /** Incremental detokenization: text of the complete UTF-8 characters so far. */
  private pieceText(job: Job, token: number): string {
    let bytes = this.pieceBytes(token);
    if (job.pending !== null) {
      bytes = Buffer.concat([job.pending, bytes]);
      job.pending = null;
    }
    const complete = completeUtf8Length(bytes);
    if (complete < bytes.length) job.pending = Buffer.from(bytes.subarray(complete));
    return complete === 0 ? "" : bytes.toString("utf8", 0, complete);
  }

  private addLogprobs(out: GeneratedToken, row: Float32Array, token: number, k: number): void {
    let max = -Infinity;
    for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
    let sum = 0;
    for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
    const lse = max + Math.log(sum);
    out.logprob = row[token]! - lse;
    if (k <= 0) {
      out.top = [];
      return;
    }
    // Top-k by insertion into a small sorted array: k is tiny (<= 20) next to the vocabulary.
    const ids: number[] = [];
    const vals: number[] = [];
    for (let i = 0; i < row.length; i++) {
      const v = row[i]!;
      if (ids.length === k && v <= vals[k - 1]!) continue;
      let j = ids.length === k ? k - 1 : ids.length;
      while (j > 0 && vals[j - 1]! < v) {
        vals[j] = vals[j - 1]!;
        ids[j] = ids[j - 1]!;
        j--;
      }
      vals[j] = v;
      ids[j] = i;
    }
    const top: TokenLogprob[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) top[i] = { token: this.pieceBytes(ids[i]!).toString("utf8"), logprob: vals[i]! - lse };
    out.top = top;
  }

  /** Off the active list; its cells stay cached for later prompts (`keepCells`) or are freed. */
  private release(job: Job, keepCells: boolean): void {
    const i = this.active.indexOf(job);
    if (i >= 0) this.active.splice(i, 1);
    if (job.seq >= 0) {
      this.cache!.release(job.seq, keepCells);
      this.cache!.limitIdle(this.info.contextSize);
      job.seq = -1;
    }
    if (job.sampler !== null) {
      this.lib.llama_sampler_free(job.sampler);
      job.sampler = null;
    }
    if (job.grammar !== null) {
      this.lib.llama_sampler_free(job.grammar);
      job.grammar = null;
    }
    if (job.lazy !== null) {
      this.lib.llama_sampler_free(job.lazy.grammar);
      job.lazy = null;
    }
  }

  private finish(job: Job, reason: EngineFinishReason): true {
    this.release(job, true);
    this.settle(job, reason);
    return true;
  }

  /** A failed step leaves cells the cache cannot vouch for: they are freed, not cached. */
  private fail(job: Job, err: unknown): true {
    this.release(job, false);
    if (job.slot !== "done") {
      this.setSlot(job, "done");
      this.detach(job);
      job.reject(err);
    }
    return true;
  }

  private settle(job: Job, reason: EngineFinishReason): void {
    if (job.slot === "done") return;
    this.setSlot(job, "done");
    this.detach(job);
    // An end-of-generation token is sampled but is not part of the completion.
    const completion = job.completion.length - (reason === "stop" ? 1 : 0);
    job.resolve(this.result(job.request.promptTokens.length, reason, completion, job.cached, job.drafted, job.accepted));
  }

  private detach(job: Job): void {
    if (job.onAbort !== null) job.request.signal?.removeEventListener("abort", job.onAbort);
    job.onAbort = null;
  }

  // ---- offline scoring -------------------------------------------------------------------

  /**
   * Evaluate `tokens` as one new sequence (position 0 on, nothing reused from the cache) and
   * hand every position's logits row to `onRow`; the row is a view valid only during the call.
   * For offline measurement (`moltbot quantize --eval`: perplexity, KL divergence against
   * another model), so it refuses to run beside generations instead of queueing with them.
   */
  async evaluateLogits(tokens: number[], onRow: (position: number, logits: Float32Array) => void): Promise<void> {
    this.assertOpen();
    const cache = this.cache;
    if (cache === null) throw new MoltbotError("engine_error", "this model was loaded for embeddings, which have no logits");
    if (!this.idle) throw new MoltbotError("engine_error", "logits can be evaluated only while the engine runs nothing else");
    if (tokens.length === 0 || tokens.length > this.info.contextSize) {
      throw new MoltbotError("context_length_exceeded", `evaluateLogits takes 1 to ${this.info.contextSize} tokens, got ${tokens.length}`);
    }
    cache.makeRoom(tokens.length);
    const lease = cache.acquire(tokens, false);
    if (lease === null) throw new MoltbotError("engine_error", "no free sequence to evaluate logits on");
    const seq = lease.seq;
    const L = this.lib;
    const b = this.batch;
    this.embedsRunning++; // keeps the engine busy (close() waits, generations queue)
    try {
      this.useThreads(this.threads); // whole chunks: large steps, where all threads pay
      for (let start = 0; start < tokens.length; start += b.capacity) {
        const n = Math.min(b.capacity, tokens.length - start);
        for (let k = 0; k < n; k++) {
          b.token[k] = tokens[start + k]!;
          b.pos[k] = start + k;
          b.seq[k] = seq;
          b.logits[k] = 1;
        }
        b.value.n_tokens = n;
        const rc = L.llama_decode(this.ctx, b.value);
        if (rc !== 0) throw new MoltbotError("engine_error", `llama_decode failed while evaluating logits (${rc})`);
        for (let k = 0; k < n; k++) {
          const ptr = nullable(L.llama_get_logits_ith(this.ctx, k));
          if (ptr === null) throw new MoltbotError("engine_error", "llama.cpp returned no logits row");
          onRow(start + k, floatView(ptr, this.nVocab));
          cache.append(seq, tokens[start + k]!);
        }
        await yieldToEventLoop();
      }
    } finally {
      cache.release(seq, false);
      this.embedsRunning--;
      if (this.idle) this.wakeIdle();
    }
  }

  // ---- embeddings -------------------------------------------------------------------------

  async embed(inputs: number[][]): Promise<number[][]> {
    this.assertOpen();
    this.embedsRunning++;
    try {
      return await this.embedAll(inputs);
    } finally {
      this.embedsRunning--;
      if (this.idle) this.wakeIdle();
    }
  }

  private async embedAll(inputs: number[][]): Promise<number[][]> {
    if (!this.embedding) throw new MoltbotError("model_not_embedding", "this model was not loaded for embeddings");
    const ctxSize = this.info.contextSize;
    const cap = this.batch.capacity;
    for (const [i, input] of inputs.entries()) {
      if (input.length === 0) throw new MoltbotError("invalid_request", `input ${i} is empty`);
      if (input.length > Math.min(ctxSize, cap)) {
        throw new MoltbotError("context_length_exceeded", `input ${i} has ${input.length} tokens but at most ${Math.min(ctxSize, cap)} fit`);
      }
    }
    const result: number[][] = new Array(inputs.length);
    const L = this.lib;
    const b = this.batch;
    let next = 0;
    while (next < inputs.length) {
      // Pack whole inputs, one sequence each, while they fit the batch and the sequence slots.
      // The whole batch is one ubatch (n_ubatch = n_batch), which mean pooling needs.
      let n = 0;
      const group: number[] = [];
      while (next < inputs.length && group.length < this.parallel && n + inputs[next]!.length <= cap) {
        const input = inputs[next]!;
        const seq = group.length;
        for (let k = 0; k < input.length; k++) {
          b.token[n] = input[k]!;
          b.pos[n] = k;
          b.seq[n] = seq;
          b.logits[n] = 1;
          n++;
        }
        group.push(next++);
      }
      b.value.n_tokens = n;
      this.useThreads(this.threads); // whole inputs: large steps, where all threads pay
      const rc = L.llama_decode(this.ctx, b.value);
      if (rc !== 0) throw new MoltbotError("engine_error", `llama_decode failed for embeddings (${rc})`);
      const dim = this.info.embeddingSize;
      for (let s = 0; s < group.length; s++) {
        const ptr = nullable(L.llama_get_embeddings_seq(this.ctx, s));
        if (ptr === null) throw new MoltbotError("engine_error", "no pooled embedding returned (is pooling enabled?)");
        const v = floatView(ptr, dim);
        let norm = 0;
        for (let i = 0; i < dim; i++) norm += v[i]! * v[i]!;
        norm = Math.sqrt(norm) || 1;
        const out = new Array<number>(dim);
        for (let i = 0; i < dim; i++) out[i] = v[i]! / norm;
        result[group[s]!] = out;
      }
      if (this.memory !== null) L.llama_memory_clear(this.memory, true);
      if (next < inputs.length) await yieldToEventLoop();
    }
    return result;
  }

  // ---- lifecycle --------------------------------------------------------------------------

  close(): Promise<void> {
    this.closed = true;
    this.closing ??= (async () => {
      if (!this.idle) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      this.free();
    })();
    return this.closing;
  }

  async destroy(): Promise<void> {
    this.closed = true;
    this.aborted = true;
    const err = new MoltbotError("engine_error", "engine closed while the request was running");
    for (const job of [...this.queue]) this.fail(job, err);
    this.queue.length = 0;
    for (const job of [...this.active]) this.fail(job, err);
    // The generation loop only runs between its awaits, so nothing of it touches the context
    // after this (it stops at its next turn); an embedding batch still evaluating is waited for.
    if (this.embedsRunning > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.free();
    this.wakeIdle();
  }

  private free(): void {
    if (this.freed) return;
    this.freed = true;
    this.batch.free();
    this.candidates?.free();
    if (this.threadpool !== null) this.lib.llama_detach_threadpool(this.ctx);
    this.lib.llama_free(this.ctx);
    if (this.threadpool !== null) this.lib.ggml_threadpool_free!(this.threadpool);
    this.lib.llama_model_free(this.model);
  }
}

/** koffi returns NULL as null (or 0n for some pointer shapes): normalise to null. */
function nullable<T>(p: T | null): T | null {
  return p === null || p === undefined || (p as unknown) === 0n || (p as unknown) === 0 ? null : p;
}

/**
 * The useful line of what llama.cpp said about a grammar it refused: the parser's "error
 * parsing grammar: expecting name at ..." (without the grammar it echoes after it), else the
 * first logged error ("undefined rule", "left recursion", "does not contain a 'root' symbol").
 */
/** A lazy grammar waiting for its trigger, and the text generated so far (one byte a char). */
interface LazyGrammar {
  patterns: RegExp[];
  /** Compiled and in its initial state. */
  grammar: SamplerPtr;
  text: string;
  /** Where each completion token's piece starts in `text`. */
  starts: number[];
}

/** Where the first trigger that matches says the grammar's text begins (its first capture group, else the match); -1 when none matches. */
function triggerStart(patterns: RegExp[], text: string): number {
  for (const re of patterns) {
    const m = re.exec(text);
    if (m !== null) return m.indices?.[1]?.[0] ?? m.index;
  }
  return -1;
}

function grammarProblem(text: string): string {
  const parse = /error parsing grammar: ([^\n]*)/.exec(text);
  const line = parse?.[1] ?? text.split("\n").map((l) => l.trim()).find((l) => l.length > 0 && l !== "failed to parse grammar");
  if (line === undefined) return "llama.cpp refused it";
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

/**
 * Whether `pending` (an incomplete UTF-8 sequence held back, or null) followed by `piece` is
 * well-formed UTF-8 (Unicode table 3-7: no overlong forms, surrogates or code points past
 * U+10FFFF), allowed to end inside a sequence unless `whole`.
 */
export function continuesUtf8(pending: Uint8Array | null, piece: Uint8Array, whole = false): boolean {
  let need = 0; // continuation bytes still expected
  let lo = 0x80;
  let hi = 0xbf;
  const step = (b: number): boolean => {
    if (need > 0) {
      if (b < lo || b > hi) return false;
      need--;
      lo = 0x80;
      hi = 0xbf;
      return true;
    }
    if (b < 0x80) return true;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return false;
    return true;
  };
  if (pending !== null) for (const b of pending) if (!step(b)) return false;
  for (const b of piece) if (!step(b)) return false;
  return !whole || need === 0;
}

/** Length of the longest prefix of `b` that does not end inside a UTF-8 sequence. */
export function completeUtf8Length(b: Uint8Array): number {
  const len = b.length;
  if (len === 0 || b[len - 1]! < 0x80) return len;
  for (let i = len - 1, back = 0; i >= 0 && back < 4; i--, back++) {
    const c = b[i]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return len - i >= need ? len : i;
  }
  return len;
}

/** Sequence ids: one per slot, and as many more for finished sequences kept as cached prefixes. */
function sequenceIds(parallel: number): number {
  return Math.min(LLAMA_MAX_SEQ, parallel * 2);
}

/**
 * Load a GGUF through libllama and return an Engine. Generation: one unified KV buffer of
 * `kvCacheTokens` cells (default contextSize x min(parallel, 4)) shared by every sequence, each
 * sequence holding at most `contextSize` of them. Embeddings: `parallel` inputs per batch.
 */
/** The FFI engine as loadFfiEngine returns it: an Engine, and offline logits for measurement. */
export type FfiEngineHandle = Engine & Pick<FfiEngine, "evaluateLogits">;

export async function loadFfiEngine(opts: EngineLoadOptions, ffi: FfiEngineOptions = {}): Promise<FfiEngineHandle> {
  if (!Number.isInteger(opts.parallel) || opts.parallel < 1) throw new MoltbotError("engine_error", `parallel must be a positive integer, got ${opts.parallel}`);
  if (!Number.isInteger(opts.contextSize) || opts.contextSize < 1) throw new MoltbotError("engine_error", `contextSize must be a positive integer, got ${opts.contextSize}`);
  const kvCells = opts.kvCacheTokens ?? opts.contextSize * Math.min(opts.parallel, 4);
  if (!opts.embedding && (!Number.isInteger(kvCells) || kvCells < opts.contextSize)) {
    throw new MoltbotError("engine_error", `the KV cache (${kvCells} tokens) must hold at least one context (${opts.contextSize} tokens)`);
  }
  const want = opts.placement ?? { backend: "cpu" };
  const lib = loadLibLlama(want.libraryDir);
  const choice = chooseBackend(lib, { backend: want.backend, mainGpu: want.mainGpu });
  const mp = lib.llama_model_default_params();
  const gpuLayers = choice.kind === "cpu" ? 0 : (want.gpuLayers ?? -1);
  mp.n_gpu_layers = gpuLayers;
  // Always an explicit list (NULL-terminated; empty on the CPU): llama.cpp's default is every
  // GPU of every registered backend.
  const devices = koffi.alloc("void *", choice.devices.length + 1);
  const deviceSlots = new BigUint64Array(koffi.view(devices, (choice.devices.length + 1) * 8));
  choice.devices.forEach((d, i) => (deviceSlots[i] = koffi.address(d)));
  deviceSlots[choice.devices.length] = 0n;
  mp.devices = devices;
  const freeBefore = deviceFree(lib, choice.devices);
  const model = nullable(lib.llama_model_load_from_file(opts.modelPath, mp));
  koffi.free(devices);
  if (model === null) {
    const on = choice.kind === "cpu" ? "" : ` on ${choice.device} (${choice.description}; out of device memory? lower engine.gpu_layers)`;
    throw new MoltbotError("engine_error", `llama.cpp could not load the model ${opts.modelPath}${on} (not a GGUF it supports, or unreadable)`);
  }
  // llama.cpp offloads the repeating layers from the last one down, then the output layer.
  const totalLayers = lib.llama_model_n_layer(model) + 1;
  const offloadedLayers = choice.devices.length === 0 ? 0 : Math.min(gpuLayers < 0 ? totalLayers : gpuLayers, totalLayers);

  const threads = threadsForPlacement(Math.max(1, Math.floor(opts.threads)), offloadedLayers, totalLayers);
  const cp = lib.llama_context_default_params();
  // Embeddings: the whole batch must be one ubatch for mean pooling, so n_ubatch = n_batch.
  const batchSize = opts.embedding ? opts.contextSize : Math.max(opts.parallel, ffi.batchSize ?? 512);
  cp.n_ctx = opts.embedding ? opts.contextSize * opts.parallel : kvCells;
  cp.n_batch = batchSize;
  cp.n_ubatch = opts.embedding ? batchSize : Math.min(batchSize, 512);
  cp.n_seq_max = opts.embedding ? opts.parallel : sequenceIds(opts.parallel);
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.embeddings = opts.embedding;
  cp.no_perf = true;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_AUTO;
  // One buffer for all sequences: a cell can then belong to several sequences, which is what
  // prefix sharing needs, and memory no longer grows with the slots.
  cp.kv_unified = true;
  if (opts.embedding) cp.pooling_type = LLAMA_POOLING_MEAN;
  const ctx = nullable(lib.llama_init_from_model(model, cp));
  if (ctx === null) {
    lib.llama_model_free(model);
    throw new MoltbotError("engine_error", `llama.cpp could not create a context of ${cp.n_ctx} KV cells for ${opts.modelPath} (out of memory?)`);
  }
  // Without a threadpool ggml creates and joins threads-1 threads on every graph compute, and a
  // freshly created thread queues behind whatever else runs (it starts with no sleeper credit),
  // while the calling thread spins in ggml_barrier for it.
  const poll = ffi.threadpoolPoll ?? 1;
  let threadpool: ThreadpoolPtr | null = null;
  if (threads > 1 && poll !== false && lib.ggml_threadpool_new !== null) {
    const params = lib.ggml_threadpool_params_default(threads);
    params.poll = Math.max(0, Math.min(100, Math.floor(poll)));
    params.strict_cpu = false; // no pinning: the JS thread and the server share these cores
    threadpool = nullable(lib.ggml_threadpool_new(params));
    if (threadpool !== null) lib.llama_attach_threadpool(ctx, threadpool, null);
  }
  const freeAfter = deviceFree(lib, choice.devices);
  const placement: EnginePlacement = {
    backend: choice.kind,
    device: choice.device,
    description: choice.description,
    deviceMemoryBytes: choice.kind === "cpu" ? null : Math.max(0, freeBefore - freeAfter),
    offloadedLayers,
    totalLayers,
    threads,
    skipped: choice.skipped,
    library: lib.libraryPath,
  };
  return new FfiEngine(lib, model, ctx, opts, batchSize, { threads, threadpool, adaptive: ffi.adaptiveThreads ?? true }, placement);
}

/** Free memory summed over `devices`, in bytes (0 for none). */
function deviceFree(lib: LibLlama, devices: DevicePtr[]): number {
  const free = new BigUint64Array(1);
  const total = new BigUint64Array(1);
  let sum = 0;
  for (const d of devices) {
    lib.ggml_backend_dev_memory(d, free, total);
    sum += Number(free[0]);
  }
  return sum;
}
