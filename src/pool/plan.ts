// Turns moltbot.yaml's model_pool and the repository into a plan: which models get a worker
// (with how many slots and what queue) and which entries route to them, with their budgets,
// priorities and fallbacks. Pure and synchronous, so every mistake in the pool is reported at
// start with its key path, before any process is spawned.
import type { MoltbotConfig } from "../config/schema.js";
import { parseBytes } from "../config/units.js";
import { MoltbotError } from "../errors.js";
import type { RepositoryModel } from "../repository/repository.js";
import type { Priority } from "../scheduler/priority.js";
import type { Pricing } from "./model-pool.js";
import { resolveLimits, type ResourceLimits } from "../workers/cgroups/limits.js";

export interface ModelPlan {
  model: RepositoryModel;
  /** Sequences decoded together (the scheduler's slots). */
  parallel: number;
  queue: { maxSize: number; maxWaitMs: number };
  /** Context per sequence set by a pool entry; else the model's own. */
  contextSize: number | undefined;
  /** Cells of the shared KV buffer; undefined = the engine's default. */
  kvCacheTokens: number | undefined;
  /** N-gram speculative decoding. */
  speculative: boolean;
  /** Host memory for finished sequences' saved KV cells (0: none). */
  promptCacheBytes: number;
  /** cgroup limits of the worker: the entry's resource_limits over the global ones. */
  limits: ResourceLimits;
  /** The pool entry's `gpu`: an index, false for the CPU, undefined for engine.* as set. */
  gpu: number | false | undefined;
}

export interface EntryPlan {
  name: string;
  type: "llm" | "embedding";
  /** Repository model name. */
  model: string;
  priority: Priority;
  fallback: boolean | string;
  maxTokens: number | undefined;
  costLimit: number | undefined;
  pricing: Pricing;
}

export interface PoolPlan {
  models: ModelPlan[];
  entries: EntryPlan[];
}

function fail(message: string): never {
  throw new MoltbotError("config_invalid", message);
}

function parallelOf(batching: MoltbotConfig["batching"] | undefined): number | undefined {
  if (!batching) return undefined;
  return batching.enabled ? batching.max_batch_size : 1;
}

export function planPool(cfg: MoltbotConfig, repo: RepositoryModel[], source = "config"): PoolPlan {
  const byName = new Map(repo.map((m) => [m.name, m]));
  const pool =
    cfg.model_pool.length > 0
      ? cfg.model_pool
      : repo.map((m) => ({ name: m.name, type: m.active.config.type, strategy: { priority: "normal" as const, fallback: false } }) as MoltbotConfig["model_pool"][number]);

  const entries: EntryPlan[] = pool.map((e, i) => {
    if (typeof e.gpu === "number" && cfg.engine.backend === "cpu") fail(`${source}: model_pool[${i}].gpu: ${e.gpu}, but engine.backend is cpu (set it to auto, cuda or vulkan)`);
    const modelName = e.model ?? e.name;
    const model = byName.get(modelName);
    if (!model) fail(`${source}: model_pool[${i}]${e.model ? ".model" : ".name"}: no model "${modelName}" in the repository (found: ${repo.map((m) => m.name).join(", ")})`);
    if (model.active.config.type !== e.type) {
      fail(`${source}: model_pool[${i}].type: "${e.type}", but model "${modelName}" is of type "${model.active.config.type}" (its config.json)`);
    }
    return {
      name: e.name,
      type: e.type,
      model: modelName,
      priority: e.strategy.priority,
      fallback: e.strategy.fallback,
      maxTokens: e.budget?.max_tokens,
      costLimit: e.budget?.cost_limit,
      pricing: e.pricing ?? model.active.config.pricing ?? { input_per_1k: 0, output_per_1k: 0 },
    };
  });

  // Named fallbacks must exist, serve the same kind of request, and never loop.
  const index = new Map(entries.map((e, i) => [e.name, i]));
  entries.forEach((e, i) => {
    if (typeof e.fallback !== "string") return;
    const j = index.get(e.fallback);
    if (j === undefined) fail(`${source}: model_pool[${i}].strategy.fallback: no pool entry named "${e.fallback}"`);
    if (entries[j]!.type !== e.type) fail(`${source}: model_pool[${i}].strategy.fallback: "${e.fallback}" is an ${entries[j]!.type} entry, "${e.name}" is ${e.type}`);
    const seen = [e.name];
    let k: number | undefined = j;
    while (k !== undefined) {
      const next: EntryPlan = entries[k]!;
      if (seen.includes(next.name)) fail(`${source}: model_pool[${i}].strategy.fallback: fallback cycle ${[...seen, next.name].join(" -> ")}`);
      seen.push(next.name);
      k = typeof next.fallback === "string" ? index.get(next.fallback) : undefined;
    }
  });

  const models: ModelPlan[] = [];
  for (const model of repo) {
    const first = pool.find((e) => (e.model ?? e.name) === model.name);
    if (!first && cfg.model_pool.length > 0) continue; // not in the pool: not loaded
    const queue = first?.queue ?? cfg.queue;
    models.push({
      model,
      parallel: parallelOf(first?.batching) ?? model.active.config.parallel ?? parallelOf(cfg.batching)!,
      queue: { maxSize: queue.max_size, maxWaitMs: queue.max_wait_ms },
      contextSize: first?.context_size,
      kvCacheTokens: first?.batching?.kv_cache_tokens ?? cfg.batching.kv_cache_tokens,
      speculative: first?.batching?.speculative ?? cfg.batching.speculative,
      promptCacheBytes: parseBytes(first?.batching?.cache_ram ?? cfg.batching.cache_ram),
      limits: resolveLimits(cfg.resource_limits, first?.resource_limits, source, `model_pool[${first ? pool.indexOf(first) : 0}].resource_limits`),
      gpu: first?.gpu,
    });
  }
  return { models, entries };
}
