// The model pool: the entries clients name in `model`, each serving a repository model with
// its own budget, priority and fallback. A generation is admitted here, in this order:
//   prepare (tokenize in the worker) -> per-inference token cap -> reserve the worst-case cost
//   in the ledger -> a slot from the model's scheduler (queued by priority, maybe shed)
// and when the entry cannot take it (over budget, worker down, queue full) and its strategy
// allows, the next entry is tried. The real cost is settled when the generation ends, also
// when it fails or the client leaves.
import { MoltbotError, type ErrorCode } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import type { ServerMetrics } from "../observe/metrics.js";
import type { RepositoryModel } from "../repository/repository.js";
import type { SlotLease } from "../scheduler/model-scheduler.js";
import type { Priority } from "../scheduler/priority.js";
import type { BudgetLedger, Reservation } from "../ledger/ledger.js";
import { costOf } from "../ledger/sqlite-ledger.js";
import type { GenerationParams } from "../engine/types.js";
import type { GenerationDone, GenerationSink, ModelWorker, PreparedPrompt } from "../workers/model-worker.js";
import type { VersionedModel } from "../versions/versioned-model.js";
import type { PromptInput } from "../workers/protocol.js";
import type { Principal } from "../auth/principal.js";
import type { ResponseCache } from "../cache/response-cache.js";

export interface Pricing {
  input_per_1k: number;
  output_per_1k: number;
  /** Prompt tokens reused from the KV prefix cache; absent = input_per_1k. */
  cached_input_per_1k?: number;
}

export interface PoolEntry {
  name: string;
  type: "llm" | "embedding";
  /** The repository model; its `active` version is the one serving (switched by `served`). */
  model: RepositoryModel;
  /** The model's serving worker, its scheduler and its versions. Entries may share one. */
  served: VersionedModel;
  /** Epoch seconds the entry was created (OpenAI's `created`). */
  created: number;
  priority: Priority;
  /** false: never; true: the next entry of the same type in pool order; a name: that entry. */
  fallback: boolean | string;
  /** Cap on prompt + completion tokens of one inference. */
  maxTokens: number | undefined;
  /** Monthly spend cap; undefined = unlimited (spend is still recorded). */
  costLimit: number | undefined;
  pricing: Pricing;
}

/** What a config reload may change on a running entry (SIGHUP; src/server/reload.ts). */
export type EntrySettings = Pick<PoolEntry, "name" | "priority" | "maxTokens" | "costLimit" | "pricing">;

/** A generation that passed admission: it holds a slot and a reservation until `run` ends. */
export interface GenerationAdmission {
  entry: PoolEntry;
  /** The model version that runs it (x-moltbot-model-version): its worker's, fixed at admission. */
  version: string;
  /** One "<code> (<entry>)" per hop when the request left the entry it named. */
  fallbacks: string[];
  run(sink: GenerationSink, signal: AbortSignal): Promise<GenerationDone>;
}

/** Errors after which a request may go to the next entry. */
const FALLBACK_CODES: ReadonlySet<ErrorCode> = new Set(["budget_exceeded", "worker_unavailable", "worker_crashed", "queue_full"]);

/** Refusals counted as shed when no fallback takes the request. */
type ShedCode = "queue_full" | "queue_timeout" | "budget_exceeded";
const SHED_CODES: ReadonlySet<ErrorCode> = new Set<ShedCode>(["queue_full", "queue_timeout", "budget_exceeded"]);
const isShed = (err: unknown): err is MoltbotError & { code: ShedCode } => err instanceof MoltbotError && SHED_CODES.has(err.code);

/** Bounds the wait for a restarting worker when the queue wait is unlimited. */
const MAX_RECOVERY_WAIT_MS = 120_000;

/** Whether a principal may use an entry: a token's `models` claim names the entries it may use. */
const mayUse = (e: PoolEntry, who: Principal | undefined): boolean => who?.models === undefined || who.models.includes(e.name);

/**
 * The ledger key of a subject's own monthly cap (a token's `cost_limit`): '@' cannot start a
 * pool entry's name, so it never meets an entry's spend.
 */
export const subjectLedgerKey = (subject: string): string => `@sub:${subject}`;

function secondsToNextMonth(now: Date): number {
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

export class ModelPool {
  private readonly byName = new Map<string, PoolEntry>();
  /** The "inference" logger; lines about a request carry its `request_id`. */
  readonly log: Logger;

  constructor(
    readonly entries: PoolEntry[],
    private readonly ledger: BudgetLedger,
    log: Logger,
    private readonly clock: () => Date = () => new Date(),
    /** Where fallbacks, shedding and queue waits are counted. */
    readonly metrics?: ServerMetrics,
    /** The response cache generation requests go through (server/cached-generation.ts); undefined: cache.mode off. */
    readonly cache?: ResponseCache,
  ) {
    for (const e of entries) this.byName.set(e.name, e);
    this.log = log.child("inference");
  }

  /** The entry for `name`; without a name, the first entry of the wanted type (that `who` may use). */
  resolve(name: string | undefined, type: "llm" | "embedding", who?: Principal): PoolEntry {
    if (name === undefined) {
      const e = this.entries.find((x) => x.type === type && mayUse(x, who));
      if (e) return e;
      if (who?.models !== undefined && this.entries.some((x) => x.type === type)) {
        throw new MoltbotError("model_not_allowed", `the token may use only ${who.models.join(", ") || "no model"}; pass one of them as "model"`, { param: "model" });
      }
      throw new MoltbotError("model_not_found", `no ${type === "llm" ? "generation" : "embedding"} model is served here; pass "model"`, { param: "model" });
    }
    const e = this.byName.get(name);
    if (!e) {
      const known = this.entries.map((x) => x.name).join(", ");
      throw new MoltbotError("model_not_found", `The model '${name}' does not exist (served: ${known})`, { param: "model" });
    }
    if (!mayUse(e, who)) throw new MoltbotError("model_not_allowed", `the token may not use model '${name}' (its models claim allows: ${who!.models!.join(", ") || "none"})`, { param: "model" });
    if (e.type !== type) {
      throw new MoltbotError(
        type === "embedding" ? "model_not_embedding" : "invalid_request",
        type === "embedding" ? `model '${name}' is a generation model and cannot embed; use an embedding model` : `model '${name}' is an embedding model and cannot generate text`,
        { param: "model" },
      );
    }
    return e;
  }

  /**
   * New budgets, priority and pricing for existing entries, all or none. Requests admitted from
   * now on see them; admitted ones keep their reservation and queue place.
   */
  applySettings(settings: readonly EntrySettings[]): void {
    const unknown = settings.find((s) => !this.byName.has(s.name));
    if (unknown) throw new Error(`no pool entry named ${unknown.name}`);
    for (const s of settings) Object.assign(this.byName.get(s.name)!, { priority: s.priority, maxTokens: s.maxTokens, costLimit: s.costLimit, pricing: s.pricing });
  }

  isReady(): boolean {
    return this.entries.some((e) => e.served.worker.isReady());
  }

  /**
   * Embed on an embedding entry: a slot from its scheduler, and the budget. The cost of an
   * embedding is known only after tokenizing, so the reservation uses a bound that cannot be
   * beaten (a token covers at least one byte, plus BOS/EOS per input).
   */
  async embed(name: string | undefined, inputs: string[], signal?: AbortSignal, who?: Principal): Promise<{ entry: PoolEntry; version: string; data: number[][]; promptTokens: number }> {
    const entry = this.resolve(name, "embedding", who);
    const bound = inputs.reduce((n, t) => n + Buffer.byteLength(t) + 2, 0);
    const limited = entry.costLimit !== undefined;
    const subjectHold = who?.costLimit !== undefined ? this.reserveSubject(who, costOf(bound, 0, entry.pricing)) : null;
    const reservation = limited ? this.ledger.reserve(entry.name, costOf(bound, 0, entry.pricing), entry.costLimit!) : null;
    if (limited && reservation === null) {
      if (subjectHold) this.ledger.settle(subjectHold, 0);
      this.metrics?.shed(entry, "budget_exceeded");
      throw new MoltbotError("budget_exceeded", `${entry.name} has reached its monthly cost limit (${entry.costLimit})`, { retryAfterS: secondsToNextMonth(this.clock()) });
    }
    let cost = 0;
    try {
      const lease = await this.slot(entry, signal).catch((err: unknown) => {
        if (isShed(err)) this.metrics?.shed(entry, err.code);
        throw err;
      });
      try {
        const worker = entry.served.worker;
        const r = await worker.embed(inputs);
        const promptTokens = r.tokens.reduce((a, b) => a + b, 0);
        cost = costOf(promptTokens, 0, entry.pricing);
        return { entry, version: worker.init.version, data: r.data, promptTokens };
      } finally {
        lease.release();
      }
    } finally {
      if (reservation) this.ledger.settle(reservation, cost);
      else if (cost > 0) this.ledger.record(entry.name, cost);
      if (subjectHold) this.ledger.settle(subjectHold, cost);
    }
  }

  /**
   * A generation whose worker went away before the client got a byte is tried once more
   * (generate.ts). This waits until the entry it named, or that entry's fallback, can take it:
   * at most the model's `queue.max_wait_ms` (the longest a request may wait for a slot), or
   * until the request ends. Rejects when neither is back by then.
   */
  async recovered(name: string | undefined, signal: AbortSignal, who?: Principal): Promise<void> {
    const entry = this.resolve(name, "llm", who);
    if (entry.served.worker.isReady()) return;
    if (this.fallbackOf(entry, new Set([entry.name]), who)?.served.worker.isReady()) return;
    await entry.served.whenReady(signal, Math.min(entry.served.scheduler.maxWaitMs, MAX_RECOVERY_WAIT_MS));
  }

  /** The entry a request goes to when `from` cannot take it, or undefined. */
  private fallbackOf(from: PoolEntry, tried: Set<string>, who: Principal | undefined): PoolEntry | undefined {
    if (from.fallback === false) return undefined;
    if (typeof from.fallback === "string") {
      const e = this.byName.get(from.fallback);
      return e && !tried.has(e.name) && mayUse(e, who) ? e : undefined;
    }
    const i = this.entries.indexOf(from);
    return this.entries.slice(i + 1).find((e) => e.type === from.type && !tried.has(e.name) && mayUse(e, who));
  }

  /** Admit a generation on the named entry or, by its strategy, a fallback. */
  async admit(name: string | undefined, prompt: PromptInput, params: GenerationParams, signal: AbortSignal, requestId?: string, who?: Principal): Promise<GenerationAdmission> {
    let entry = this.resolve(name, "llm", who);
    const tried = new Set<string>();
    const fallbacks: string[] = [];
    for (;;) {
      tried.add(entry.name);
      try {
        return await this.admitOn(entry, prompt, params, signal, fallbacks, requestId, who);
      } catch (err) {
        const next = err instanceof MoltbotError && FALLBACK_CODES.has(err.code) ? this.fallbackOf(entry, tried, who) : undefined;
        if (!next) {
          if (isShed(err)) this.metrics?.shed(entry, err.code);
          throw err;
        }
        const code = (err as MoltbotError).code;
        this.metrics?.fallback(entry, code);
        this.log.warning(`Fallback from ${entry.name} to ${next.name}`, { code, request_id: requestId });
        fallbacks.push(`${code} (${entry.name})`);
        entry = next;
      }
    }
  }

  /**
   * The admitted generation: it holds `lease` until it ends, counts the tokens as they come,
   * and hands the real cost to `charge` when it ends, also on failure or disconnect.
   */
  private admission(
    entry: PoolEntry,
    worker: ModelWorker,
    fallbacks: string[],
    lease: SlotLease,
    prompt: PromptInput | PreparedPrompt,
    params: GenerationParams,
    charge: (cost: number) => void,
    requestId: string | undefined,
  ): GenerationAdmission {
    return {
      entry,
      version: worker.init.version,
      fallbacks,
      run: async (sink, runSignal) => {
        // Nothing is charged for a generation the worker refused before it started (no room).
        let promptTokens = 0;
        let generated = 0;
        let cached = 0;
        try {
          const done = await worker.generate(
            prompt,
            params,
            {
              onStart(n) {
                promptTokens = n;
                sink.onStart?.(n);
              },
              onText(text, logprobs, n) {
                generated = n;
                sink.onText(text, logprobs, n);
              },
            },
            runSignal,
            requestId,
          );
          promptTokens = done.promptTokens;
          generated = done.completionTokens;
          cached = done.cachedTokens;
          return done;
        } finally {
          lease.release();
          charge(costOf(promptTokens, generated, entry.pricing, cached));
        }
      },
    };
  }

  /** A slot from the entry's scheduler; the wait is observed. */
  private slot(entry: PoolEntry, signal: AbortSignal | undefined): Promise<SlotLease> {
    const metrics = this.metrics;
    if (!metrics) return entry.served.scheduler.acquire(entry.priority, signal);
    const t0 = performance.now();
    return entry.served.scheduler.acquire(entry.priority, signal).then((lease) => {
      metrics.queueWait(entry, performance.now() - t0);
      return lease;
    });
  }

  /**
   * A response answered from the cache with cache.charge_hits: charged what its run cost, within
   * the entry's and the subject's monthly limits (`refuse`: over a limit is budget_exceeded;
   * otherwise, for a request whose answer is already made, it is recorded all the same).
   */
  chargeHit(entry: PoolEntry, cost: number, who: Principal | undefined, refuse: boolean): void {
    const charge = (key: string, limit: number | undefined, what: string) => {
      if (limit === undefined || !refuse) return this.ledger.record(key, cost);
      const hold = this.ledger.reserve(key, cost, limit);
      if (hold === null) throw new MoltbotError("budget_exceeded", `${what} has reached its monthly cost limit (${limit})`, { retryAfterS: secondsToNextMonth(this.clock()) });
      this.ledger.settle(hold, cost);
    };
    if (cost <= 0) return;
    if (who?.costLimit !== undefined) charge(subjectLedgerKey(who.subject), who.costLimit, `'${who.subject}'`);
    charge(entry.name, entry.costLimit, entry.name);
  }

  /** Spend of an entry without a cost limit is recorded after the fact, and only when priced. */
  private recorder(entry: PoolEntry): (cost: number) => void {
    return (cost) => {
      if (cost > 0) this.ledger.record(entry.name, cost);
    };
  }

  /** Reserve `amount` against the subject's own monthly cap (beside the entry's), or refuse. */
  private reserveSubject(who: Principal, amount: number): Reservation {
    const hold = this.ledger.reserve(subjectLedgerKey(who.subject), amount, who.costLimit!);
    if (hold === null) {
      throw new MoltbotError("budget_exceeded", `'${who.subject}' has reached its monthly cost limit (${who.costLimit}); this request could cost up to ${amount.toFixed(6)}`, {
        retryAfterS: secondsToNextMonth(this.clock()),
      });
    }
    return hold;
  }

  private async admitOn(entry: PoolEntry, prompt: PromptInput, params: GenerationParams, signal: AbortSignal, fallbacks: string[], requestId: string | undefined, who?: Principal): Promise<GenerationAdmission> {
    const worker = entry.served.worker;
    if (entry.maxTokens === undefined && entry.costLimit === undefined && who?.costLimit === undefined) {
      // Nothing to check before it runs: skip the prepare round trip and the reservation
      // (measured: together ~2 ms of time to first token on the demo model).
      if (!worker.isReady()) throw worker.notReadyError();
      const lease = await this.slot(entry, signal);
      // The worker serving when the slot is granted: a version switch while it waited sends it to the new one.
      return this.admission(entry, entry.served.worker, fallbacks, lease, prompt, params, this.recorder(entry), requestId);
    }
    const prepared = await worker.prepare(prompt);
    const promptTokens = prepared.promptTokens;
    let reservation: Reservation | null = null;
    let subjectHold: Reservation | null = null;
    try {
      // The worker owns the context room (it refuses a prompt that leaves none); here the
      // context only bounds the worst-case completion the reservation must cover.
      const room = Math.max(0, (worker.info?.contextSize ?? 0) - promptTokens);
      let maxTokens = params.maxTokens;
      if (entry.maxTokens !== undefined) {
        if (promptTokens >= entry.maxTokens) {
          throw new MoltbotError("token_limit_exceeded", `prompt is ${promptTokens} tokens but ${entry.name} allows ${entry.maxTokens} tokens per inference (budget.max_tokens, prompt + completion)`, { param: "messages" });
        }
        const allowed = entry.maxTokens - promptTokens;
        if (maxTokens !== null && maxTokens > allowed) this.log.warning(`Token limit exceeded (${promptTokens + maxTokens}/${entry.maxTokens})`, { request_id: requestId });
        maxTokens = maxTokens === null ? allowed : Math.min(maxTokens, allowed);
      }
      // Cached prompt tokens are known only after the run: reserve at the dearer prompt price.
      const pricier = (entry.pricing.cached_input_per_1k ?? 0) > entry.pricing.input_per_1k ? promptTokens : 0;
      const worst = costOf(promptTokens, Math.min(maxTokens ?? room, room), entry.pricing, pricier);
      if (who?.costLimit !== undefined) subjectHold = this.reserveSubject(who, worst);
      if (entry.costLimit !== undefined) {
        reservation = this.ledger.reserve(entry.name, worst, entry.costLimit);
        if (reservation === null) {
          throw new MoltbotError("budget_exceeded", `${entry.name} has reached its monthly cost limit (${entry.costLimit}); this request could cost up to ${worst.toFixed(6)}`, {
            retryAfterS: secondsToNextMonth(this.clock()),
          });
        }
      }
      const lease = await this.slot(entry, signal);
      const held = reservation;
      const entryCharge = held ? (cost: number) => this.ledger.settle(held, cost) : this.recorder(entry);
      const subjectHeld = subjectHold;
      const charge = subjectHeld ? (cost: number) => (entryCharge(cost), this.ledger.settle(subjectHeld, cost)) : entryCharge;
      const serving = entry.served.worker;
      if (serving !== worker) {
        // The version switched while this request waited: its tokens are in the old worker,
        // which takes no new work; the new one tokenizes the prompt again.
        worker.discard(prepared);
        return this.admission(entry, serving, fallbacks, lease, prompt, { ...params, maxTokens }, charge, requestId);
      }
      return this.admission(entry, worker, fallbacks, lease, prepared, { ...params, maxTokens }, charge, requestId);
    } catch (err) {
      if (reservation) this.ledger.settle(reservation, 0);
      if (subjectHold) this.ledger.settle(subjectHold, 0);
      worker.discard(prepared);
      throw err;
    }
  }
}
