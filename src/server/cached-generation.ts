// How a generation request meets the response cache (src/cache): whether it may read or write
// it, the key, and what it is admitted as: a replay of a stored response (hit), a share of an
// identical request already in flight (single-flight), or a run of the model that the others
// may join and whose result is stored (miss). A request the cache does not take is admitted by
// the pool as before (bypass).
//
// The key names the version serving when the request arrives, so after a switch the old
// version's answers are never found; a result is stored under the entry and version that
// actually ran it (a request queued across a switch runs on the new version).
import type { FastifyReply, FastifyRequest } from "fastify";
import { cacheKey, isDeterministic } from "../cache/key.js";
import type { CachedResponse } from "../cache/entry.js";
import { Flight, type FlightResult } from "../cache/single-flight.js";
import type { ResponseCache } from "../cache/response-cache.js";
import { costOf } from "../ledger/sqlite-ledger.js";
import type { GenerationAdmission, ModelPool, PoolEntry } from "../pool/model-pool.js";
import type { GenerationParams } from "../engine/types.js";
import type { PromptInput } from "../workers/protocol.js";

/** Says on every generation response where it came from. */
export const CACHE_HEADER = "x-moltbot-cache";
export type CacheStatus = "hit-l1" | "hit-l2" | "miss" | "bypass";

export interface CacheCall {
  pool: ModelPool;
  model: string | undefined;
  prompt: PromptInput;
  params: GenerationParams;
}

export interface CachedAdmission {
  admission: GenerationAdmission;
  status: CacheStatus;
  /** Answered without running the model for this request (a stored response or another's run). */
  hit: boolean;
  /**
   * What a hit was charged (0 unless cache.charge_hits); for a request that joined a flight it
   * is known when the run ends, so it is read after `run`.
   */
  charged(): number;
}

/** The body's own opt-out (`"cache": false`), checked by the route's schema (schemas.ts). */
interface CacheOptOut {
  cache?: boolean;
}

type Policy = "use" | "refresh" | "skip";

/**
 * `Cache-Control: no-store` or `"cache": false`: neither read nor write. `no-cache`: do not
 * answer from the cache, but store the fresh answer (as HTTP caches revalidate). A request whose
 * answer is not reproducible is not cached unless cache.mode is `all`.
 */
function policyOf(request: FastifyRequest, params: GenerationParams, cache: ResponseCache): Policy {
  if ((request.body as CacheOptOut | undefined)?.cache === false) return "skip";
  if (cache.mode === "deterministic" && !isDeterministic(params)) return "skip";
  const header = request.headers["cache-control"];
  const directives = new Set((Array.isArray(header) ? header.join(",") : (header ?? "")).split(",").map((d) => d.trim().toLowerCase()));
  if (directives.has("no-store")) return "skip";
  if (directives.has("no-cache")) return "refresh";
  return "use";
}

function keyFor(entry: PoolEntry, version: string, call: CacheCall): string {
  return cacheKey({
    entry: entry.name,
    model: entry.model.name,
    version,
    budgetMaxTokens: entry.maxTokens ?? null,
    contextSize: entry.served.worker.info?.contextSize ?? null,
    prompt: call.prompt,
    params: call.params,
  });
}

/** A stored response played back through the same sink a run feeds. */
function replay(entry: PoolEntry, v: CachedResponse): GenerationAdmission {
  return {
    entry,
    version: v.version,
    fallbacks: [],
    run: async (sink) => {
      sink.onStart?.(v.done.promptTokens);
      let at = 0;
      for (const [text, generated, lps] of v.deltas) {
        sink.onText(text, v.logprobs?.slice(at, (at += lps)), generated);
      }
      return v.done;
    },
  };
}

/**
 * Admit a generation through the cache. Sets the x-moltbot-cache header on `reply` (and
 * returns it, for a stream's own headers).
 */
export async function admitCached(request: FastifyRequest, reply: FastifyReply, call: CacheCall, signal: AbortSignal, requestId: string): Promise<CachedAdmission> {
  const cache = call.pool.cache;
  const who = request.principal ?? undefined;
  const decide = (status: CacheStatus) => void reply.header(CACHE_HEADER, status);
  const free = () => 0;
  if (cache === undefined) {
    decide("bypass");
    return { admission: await call.pool.admit(call.model, call.prompt, call.params, signal, requestId, who), status: "bypass", hit: false, charged: free };
  }
  const policy = policyOf(request, call.params, cache);
  if (policy === "skip") {
    cache.bypassed();
    decide("bypass");
    return { admission: await call.pool.admit(call.model, call.prompt, call.params, signal, requestId, who), status: "bypass", hit: false, charged: free };
  }
  // The entry named (model_not_found, model_not_allowed are refused here as the pool would).
  const entry = call.pool.resolve(call.model, "llm", who);
  const key = keyFor(entry, entry.served.version, call);
  // A run is admitted against its first requester's own cost limit (a token's cost_limit): a
  // requester with such a limit shares runs only with itself, so nobody gets another's refusal.
  const flightKey = who?.costLimit === undefined ? key : `${key} ${who.subject}`;
  /** A hit costs nothing, and the ledger keeps the saving; with charge_hits it is charged as the run was. */
  const settleHit = (cost: number, refuse: boolean): number => {
    if (!cache.chargeHits) {
      cache.recordSaving(entry.name, cost);
      return 0;
    }
    call.pool.chargeHit(entry, cost, who, refuse);
    return cost;
  };
  if (policy === "use") {
    const hit = cache.get(key);
    if (hit) {
      const charged = settleHit(hit.value.cost, true);
      const status = hit.level === "l1" ? "hit-l1" : "hit-l2";
      decide(status);
      return { admission: replay(entry, hit.value), status, hit: true, charged: () => charged };
    }
    const running = cache.flight<PoolEntry>(flightKey);
    if (running) {
      // Served from memory as the run it joined produces it: reported as an L1 hit.
      cache.joined();
      decide("hit-l1");
      const share = await running.join(signal);
      let charged = 0;
      const admission: GenerationAdmission = {
        ...share,
        run: async (sink, runSignal) => {
          const done = await share.run(sink, runSignal);
          charged = settleHit(costOf(done.promptTokens, done.completionTokens, share.entry.pricing, done.cachedTokens), false);
          return done;
        },
      };
      return { admission, status: "hit-l1", hit: true, charged: () => charged };
    }
  }
  // no-cache: the cache answered nothing (bypass), but the fresh answer is stored.
  const status: CacheStatus = policy === "refresh" ? "bypass" : "miss";
  if (policy === "refresh") cache.bypassed();
  else cache.missed();
  decide(status);
  const flight = new Flight<PoolEntry>((s) => call.pool.admit(call.model, call.prompt, call.params, s, requestId, who), call.params.topLogprobs !== null);
  const store = (r: FlightResult<PoolEntry>) => {
    const a = r.admission;
    cache.set(keyFor(a.entry, a.version, call), {
      entry: a.entry.name,
      version: a.version,
      text: r.text,
      deltas: r.deltas,
      logprobs: r.logprobs,
      done: { finishReason: r.done.finishReason, promptTokens: r.done.promptTokens, completionTokens: r.done.completionTokens, cachedTokens: r.done.cachedTokens },
      cost: costOf(r.done.promptTokens, r.done.completionTokens, a.entry.pricing, r.done.cachedTokens),
    });
  };
  // no-cache: this request runs alone (others do not join a run they did not ask to refresh), then stores.
  if (policy === "use") cache.startFlight(flightKey, flight, store);
  else flight.result.then(store, () => undefined);
  return { admission: await flight.join(signal), status, hit: false, charged: free };
}
