// What the server observes about itself: Prometheus metrics (`/metrics`, prom-client, on a
// registry of this server's own so that two servers in one process do not clash) and the
// figures of `/admin/status` (totals since start, a rolling window of recent requests).
//
// Cost: the token path records nothing. A finished request is one call (requestFinished) with
// a handful of counter and histogram updates; fallback, shedding and queue wait are one call
// each where they happen. Everything that is a level rather than an event (queue depth, busy
// slots, budgets, worker state, memory and CPU) is read from its owner at scrape time.
//
// Labels are bounded by the configuration: model, version, pool entry, route, status class,
// priority, reason. Never a user, prompt or request id.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { periodOf, type BudgetLedger } from "../ledger/ledger.js";
import type { EnginePlacement } from "../engine/types.js";
import type { PoolEntry } from "../pool/model-pool.js";
import { PRIORITIES, type Priority } from "../scheduler/priority.js";
import type { WorkerState } from "../workers/worker-state.js";
import type { WorkerConfinement } from "../workers/model-worker.js";
import type { CgroupUsage } from "../workers/cgroups/manager.js";
import type { VersionedModel } from "../versions/versioned-model.js";
import { readProcStats } from "./proc-stats.js";
import { RecentRequests, type WindowFigures } from "./recent-requests.js";
import type { CacheStats } from "../cache/response-cache.js";

/** One inference request that ended, whatever its status. */
export interface FinishedRequest {
  /** The entry that served it (after fallback), else the entry it named. */
  entry: PoolEntry;
  /** The route as registered, e.g. "/v1/chat/completions". */
  route: string;
  /** HTTP status; for a stream that failed after it started, the status of its error. */
  status: number;
  /** From the request's arrival to its end. */
  latencyMs: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  /** From arrival to the first text; undefined when none came. */
  ttftMs?: number | undefined;
  /** Mean gap between this request's tokens after the first; undefined with fewer than 2. */
  interTokenMs?: number | undefined;
}

export interface ModelTotals {
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
}

/** One served model (one worker) as /admin/status reports it. */
export interface ModelStatus {
  name: string;
  version: string;
  state: WorkerState;
  pid: number | null;
  rss_bytes: number | null;
  cpu_seconds: number | null;
  restarts: number;
  slots: { busy: number; total: number };
  queue: Record<Priority, number>;
  totals: ModelTotals;
  window: WindowFigures;
  /** The worker's cgroup limits and usage; null without resource_limits. */
  resources: WorkerResources | null;
  /** Where the worker runs the model (null until it is loaded, or with node-llama-cpp). */
  placement: PlacementStatus | null;
}

/** resource_limits of a worker as status shows them: each limit enforced or not, and the group's usage. */
export interface WorkerResources {
  limits: Array<{ limit: string; value: string; enforced: boolean; reason: string | null }>;
  usage: {
    cpu_throttled_s: number | null;
    cpu_throttled_periods: number | null;
    memory_bytes: number | null;
    memory_peak_bytes: number | null;
    io_read_bytes: number | null;
    io_write_bytes: number | null;
    oom_kills: number | null;
  };
}

function resourcesOf(c: WorkerConfinement | undefined): WorkerResources | null {
  if (c === undefined) return null;
  const u = c.usage();
  const finite = (v: number | null) => (v === null || !Number.isFinite(v) ? null : v);
  return {
    limits: c.limits.map((l) => ({ limit: l.limit, value: l.value, enforced: l.enforced, reason: l.reason })),
    usage: {
      cpu_throttled_s: u.cpuThrottledSeconds === null ? null : Math.round(u.cpuThrottledSeconds * 1000) / 1000,
      cpu_throttled_periods: u.cpuThrottledPeriods,
      memory_bytes: finite(u.memoryBytes),
      memory_peak_bytes: finite(u.memoryPeakBytes),
      io_read_bytes: u.ioReadBytes,
      io_write_bytes: u.ioWriteBytes,
      oom_kills: u.oomKills,
    },
  };
}

/** A worker's backend and device, from its load. */
export interface PlacementStatus {
  backend: string;
  device: string;
  description: string;
  /** Device memory the model and its context took at load; null on the CPU. */
  device_memory_bytes: number | null;
  offloaded_layers: number;
  total_layers: number;
  threads: number;
}

function placementStatus(p: EnginePlacement | undefined): PlacementStatus | null {
  if (p === undefined) return null;
  return {
    backend: p.backend,
    device: p.device,
    description: p.description,
    device_memory_bytes: p.deviceMemoryBytes,
    offloaded_layers: p.offloadedLayers,
    total_layers: p.totalLayers,
    threads: p.threads,
  };
}

export interface EntryStatus {
  name: string;
  model: string;
  priority: Priority;
  /** limit null: unlimited. month: the UTC month the spend is counted in. */
  budget: { spent: number; limit: number | null; month: string };
}

export interface ServerMetricsOptions {
  entries: readonly PoolEntry[];
  ledger: BudgetLedger;
  /** false: no Prometheus registry and nothing recorded for it (the status figures are kept). */
  prometheus: boolean;
  /** Wall clock of the ledger's month. */
  clock?: () => Date;
  /** Monotonic milliseconds, for the rolling window. */
  now?: () => number;
}

/** A model's figures; its worker, scheduler and version are read from `served` when asked (a version switch replaces the worker). */
interface ServedModel {
  index: number;
  name: string;
  served: VersionedModel;
  totals: ModelTotals;
}

// The seed names this one: milliseconds, with le="100" and le="200".
const LATENCY_MS_BUCKETS = [5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000];
const TTFT_S_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30];
const GAP_S_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];
const WAIT_S_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60];

const statusClass = (status: number): string => `${Math.floor(status / 100)}xx`;

/** The Prometheus side: the registry and every metric object. */
class PromMetrics {
  readonly registry = new Registry();
  readonly latency: Histogram<"model" | "version" | "route" | "status">;
  readonly ttft: Histogram<"model" | "version">;
  readonly interToken: Histogram<"model" | "version">;
  readonly requests: Counter<"model" | "version" | "entry" | "route" | "status">;
  readonly tokens: Counter<"model" | "version" | "entry" | "kind">;
  readonly queueWait: Histogram<"model" | "priority">;
  readonly shed: Counter<"entry" | "reason">;
  readonly fallbacks: Counter<"entry" | "reason">;

  constructor(models: readonly ServedModel[], entries: readonly PoolEntry[], budgets: () => Map<string, { spent: number; reserved: number }>) {
    const registers = [this.registry];
    // Node's process_* and nodejs_* metrics of the main process (the workers' are below).
    // The event-loop delay monitor samples on a timer, 10 ms by default: 88 wake-ups a second
    // of an idle main process (measured), each one a chance to preempt a worker's compute
    // thread on a small machine (docs/benchmarks.md, "Metrics"). One sample a second still
    // shows a loop that lags for seconds; nodejs_eventloop_lag_seconds is measured at each
    // scrape besides.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
    // These three are gauges named like counters, which promtool's lint rejects; each is the
    // sum of its per-type sibling (nodejs_active_handles{type}, ...), so nothing is lost.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    this.latency = new Histogram({
      name: "moltbot_inference_latency",
      help: "Inference request latency in milliseconds, from arrival to the end of the response",
      labelNames: ["model", "version", "route", "status"],
      buckets: LATENCY_MS_BUCKETS,
      registers,
    });
    this.ttft = new Histogram({
      name: "moltbot_time_to_first_token_seconds",
      help: "Time from a generation request's arrival to its first token",
      labelNames: ["model", "version"],
      buckets: TTFT_S_BUCKETS,
      registers,
    });
    this.interToken = new Histogram({
      name: "moltbot_inter_token_latency_seconds",
      help: "Mean gap between consecutive tokens, one observation per request with 2 or more tokens",
      labelNames: ["model", "version"],
      buckets: GAP_S_BUCKETS,
      registers,
    });
    this.requests = new Counter({
      name: "moltbot_requests_total",
      help: "Finished inference requests by served model, pool entry, route and status class",
      labelNames: ["model", "version", "entry", "route", "status"],
      registers,
    });
    this.tokens = new Counter({
      name: "moltbot_tokens_total",
      help: "Tokens of finished requests: prompt, completion, and cached (prompt tokens reused from the KV prefix cache, a part of prompt)",
      labelNames: ["model", "version", "entry", "kind"],
      registers,
    });
    this.queueWait = new Histogram({
      name: "moltbot_queue_wait_seconds",
      help: "Time an admitted request waited for a slot, by the priority of its entry",
      labelNames: ["model", "priority"],
      buckets: WAIT_S_BUCKETS,
      registers,
    });
    this.shed = new Counter({
      name: "moltbot_requests_shed_total",
      help: "Requests refused before running: queue_full, queue_timeout (load shedding), budget_exceeded (monthly cost limit)",
      labelNames: ["entry", "reason"],
      registers,
    });
    this.fallbacks = new Counter({
      name: "moltbot_fallbacks_total",
      help: "Requests that left a pool entry for its fallback, by the entry left and why",
      labelNames: ["entry", "reason"],
      registers,
    });

    // Levels, read from their owners at scrape time: the hot path does nothing for them.
    const byModel = (m: ServedModel) => ({ model: m.name, version: m.served.version });
    new Gauge({
      name: "moltbot_queue_depth",
      help: "Requests waiting for a slot, by priority",
      labelNames: ["model", "priority"],
      registers,
      collect() {
        for (const m of models) {
          const q = m.served.scheduler.queuedByPriority();
          for (const p of PRIORITIES) this.set({ model: m.name, priority: p }, q[p]);
        }
      },
    });
    new Gauge({
      name: "moltbot_batch_slots_busy",
      help: "Requests admitted into the worker (sequences in the running batch or about to join it)",
      labelNames: ["model", "version"],
      registers,
      collect() {
        for (const m of models) this.set(byModel(m), m.served.scheduler.inflight);
      },
    });
    new Gauge({
      name: "moltbot_batch_slots",
      help: "Sequences the worker decodes together (batching.max_batch_size)",
      labelNames: ["model", "version"],
      registers,
      collect() {
        for (const m of models) this.set(byModel(m), m.served.scheduler.capacity);
      },
    });
    new Gauge({
      name: "moltbot_budget_spent",
      help: "Spend of the current UTC month per pool entry, in the pricing currency",
      labelNames: ["entry"],
      registers,
      collect() {
        const spend = budgets();
        for (const e of entries) this.set({ entry: e.name }, spend.get(e.name)?.spent ?? 0);
      },
    });
    new Gauge({
      name: "moltbot_budget_remaining",
      help: "What a pool entry with a cost limit can still reserve this UTC month: limit - spent - reserved, at least 0",
      labelNames: ["entry"],
      registers,
      collect() {
        const spend = budgets();
        for (const e of entries) {
          if (e.costLimit === undefined) continue;
          const s = spend.get(e.name);
          this.set({ entry: e.name }, Math.max(0, e.costLimit - (s?.spent ?? 0) - (s?.reserved ?? 0)));
        }
      },
    });
    new Gauge({
      name: "moltbot_worker_up",
      help: "1 when the model's worker is ready to serve, else 0",
      labelNames: ["model", "version"],
      registers,
      collect() {
        for (const m of models) this.set(byModel(m), m.served.worker.isReady() ? 1 : 0);
      },
    });
    new Counter({
      name: "moltbot_worker_restarts_total",
      help: "Times the model's worker process was restarted after it exited",
      labelNames: ["model", "version"],
      registers,
      collect() {
        this.reset();
        for (const m of models) this.inc(byModel(m), m.served.worker.restarts);
      },
    });
    new Gauge({
      name: "moltbot_worker_resident_memory_bytes",
      help: "Resident memory of the model's worker process (from /proc/<pid>/status)",
      labelNames: ["model", "version"],
      registers,
      collect() {
        this.reset();
        for (const m of models) {
          const s = m.served.worker.pid === undefined ? null : readProcStats(m.served.worker.pid);
          if (s) this.set(byModel(m), s.rssBytes);
        }
      },
    });
    // resource_limits: each worker's cgroup against its limits (workers/cgroups/), read at scrape time.
    const confined = () => models.flatMap((m) => (m.served.worker.confinement ? [{ labels: byModel(m), c: m.served.worker.confinement }] : []));
    new Gauge({
      name: "moltbot_worker_limit",
      help: "A configured resource limit of the model's worker: cores for cpu.quota, bytes for memory.*, bytes per second for io.*",
      labelNames: ["model", "version", "limit"],
      registers,
      collect() {
        this.reset();
        for (const { labels, c } of confined()) for (const l of c.limits) this.set({ ...labels, limit: l.limit }, l.amount);
      },
    });
    new Gauge({
      name: "moltbot_worker_limit_enforced",
      help: "1 when the kernel enforces the limit (its cgroup file was written), 0 when it could not be applied (the log says why)",
      labelNames: ["model", "version", "limit"],
      registers,
      collect() {
        this.reset();
        for (const { labels, c } of confined()) for (const l of c.limits) this.set({ ...labels, limit: l.limit }, l.enforced ? 1 : 0);
      },
    });
    // Counters are set from the group's own cumulative figures: reset, then inc by the total.
    const usageMetric = (kind: "gauge" | "counter", name: string, help: string, read: (u: CgroupUsage) => number | null) => {
      const collect = function (this: Gauge<"model" | "version"> | Counter<"model" | "version">) {
        this.reset();
        for (const { labels, c } of confined()) {
          const v = read(c.usage());
          if (v === null || !Number.isFinite(v)) continue;
          if (this instanceof Gauge) this.set(labels, v);
          else this.inc(labels, v);
        }
      };
      const opts = { name, help, labelNames: ["model", "version"] as const, registers, collect };
      return kind === "gauge" ? new Gauge(opts) : new Counter(opts);
    };
    usageMetric("counter", "moltbot_worker_cpu_throttled_seconds_total", "Time the model worker's cgroup was throttled by its CPU quota (cpu.stat)", (u) => u.cpuThrottledSeconds);
    usageMetric("counter", "moltbot_worker_cpu_throttled_periods_total", "CFS periods in which the model worker's cgroup was throttled (cpu.stat nr_throttled)", (u) => u.cpuThrottledPeriods);
    usageMetric("gauge", "moltbot_worker_memory_bytes", "Memory charged to the model worker's cgroup, page cache included (memory.current / memory.usage_in_bytes)", (u) => u.memoryBytes);
    usageMetric("gauge", "moltbot_worker_memory_peak_bytes", "Most memory the model worker's cgroup was charged (memory.peak / memory.max_usage_in_bytes)", (u) => u.memoryPeakBytes);
    usageMetric("counter", "moltbot_worker_io_read_bytes_total", "Bytes the model worker's cgroup read from disk (io.stat / blkio.throttle.io_service_bytes)", (u) => u.ioReadBytes);
    usageMetric("counter", "moltbot_worker_io_write_bytes_total", "Bytes the model worker's cgroup wrote to disk (io.stat / blkio.throttle.io_service_bytes)", (u) => u.ioWriteBytes);
    usageMetric("counter", "moltbot_worker_oom_kills_total", "Processes of the model worker's cgroup killed by its memory limit", (u) => u.oomKills);
    // The device labels come from the worker's load: bounded by the models and the machine.
    const placed = () => models.flatMap((m) => {
      const p = m.served.worker.isReady() ? m.served.worker.info?.placement : undefined;
      return p === undefined ? [] : [{ labels: { ...byModel(m), backend: p.backend, device: p.device }, p }];
    });
    new Gauge({
      name: "moltbot_worker_backend_info",
      help: "1 for the backend and device the model's worker runs on (device: ggml's name, CUDA0, Vulkan0 or CPU; description: the GPU's or the CPU's model)",
      labelNames: ["model", "version", "backend", "device", "description"],
      registers,
      collect() {
        this.reset();
        for (const { labels, p } of placed()) this.set({ ...labels, description: p.description }, 1);
      },
    });
    new Gauge({
      name: "moltbot_worker_device_memory_bytes",
      help: "GPU memory the model, its KV cache and compute buffers took when the worker loaded (free memory before minus after); absent on the CPU",
      labelNames: ["model", "version", "backend", "device"],
      registers,
      collect() {
        this.reset();
        for (const { labels, p } of placed()) if (p.deviceMemoryBytes !== null) this.set(labels, p.deviceMemoryBytes);
      },
    });
    new Gauge({
      name: "moltbot_worker_offloaded_layers",
      help: "Layers of the model on the GPU (0 on the CPU); moltbot_worker_layers is the whole",
      labelNames: ["model", "version", "backend", "device"],
      registers,
      collect() {
        this.reset();
        for (const { labels, p } of placed()) this.set(labels, p.offloadedLayers);
      },
    });
    new Gauge({
      name: "moltbot_worker_layers",
      help: "Layers of the model as llama.cpp counts them for offloading (the repeating layers and the output layer)",
      labelNames: ["model", "version", "backend", "device"],
      registers,
      collect() {
        this.reset();
        for (const { labels, p } of placed()) this.set(labels, p.totalLayers);
      },
    });
    new Counter({
      name: "moltbot_worker_cpu_seconds_total",
      help: "User and system CPU time of the model's current worker process (from /proc/<pid>/stat); starts over when it restarts",
      labelNames: ["model", "version"],
      registers,
      collect() {
        this.reset();
        for (const m of models) {
          const s = m.served.worker.pid === undefined ? null : readProcStats(m.served.worker.pid);
          if (s) this.inc(byModel(m), s.cpuSeconds);
        }
      },
    });
  }
}

export class ServerMetrics {
  private readonly prom: PromMetrics | undefined;
  private readonly recent: RecentRequests;
  /** One per worker, in pool order. */
  private readonly models: ServedModel[] = [];
  private readonly modelOf = new Map<string, ServedModel>();
  private readonly entries: readonly PoolEntry[];
  private readonly ledger: BudgetLedger;
  private readonly clock: () => Date;

  constructor(opts: ServerMetricsOptions) {
    this.entries = opts.entries;
    this.ledger = opts.ledger;
    this.clock = opts.clock ?? (() => new Date());
    for (const e of opts.entries) {
      if (this.modelOf.has(e.model.name)) continue;
      const m: ServedModel = {
        index: this.models.length,
        name: e.model.name,
        served: e.served,
        totals: { requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0 },
      };
      this.models.push(m);
      this.modelOf.set(m.name, m);
    }
    this.recent = new RecentRequests(undefined, opts.now);
    this.prom = opts.prometheus ? new PromMetrics(this.models, this.entries, () => this.spendByEntry()) : undefined;
  }

  /** The Prometheus text, or undefined when metrics are disabled. */
  async prometheusText(): Promise<{ contentType: string; text: string } | undefined> {
    if (!this.prom) return undefined;
    return { contentType: this.prom.registry.contentType, text: await this.prom.registry.metrics() };
  }

  requestFinished(r: FinishedRequest): void {
    const m = this.modelOf.get(r.entry.model.name)!;
    const error = r.status >= 400;
    const t = m.totals;
    t.requests++;
    if (error) t.errors++;
    t.prompt_tokens += r.promptTokens;
    t.completion_tokens += r.completionTokens;
    t.cached_tokens += r.cachedTokens;
    this.recent.add(m.index, r.latencyMs, r.completionTokens, error);
    const p = this.prom;
    if (!p) return;
    const status = statusClass(r.status);
    p.latency.observe({ model: m.name, version: m.served.version, route: r.route, status }, r.latencyMs);
    p.requests.inc({ model: m.name, version: m.served.version, entry: r.entry.name, route: r.route, status });
    if (r.promptTokens > 0) p.tokens.inc({ model: m.name, version: m.served.version, entry: r.entry.name, kind: "prompt" }, r.promptTokens);
    if (r.completionTokens > 0) p.tokens.inc({ model: m.name, version: m.served.version, entry: r.entry.name, kind: "completion" }, r.completionTokens);
    if (r.cachedTokens > 0) p.tokens.inc({ model: m.name, version: m.served.version, entry: r.entry.name, kind: "cached" }, r.cachedTokens);
    if (r.ttftMs !== undefined) p.ttft.observe({ model: m.name, version: m.served.version }, r.ttftMs / 1000);
    if (r.interTokenMs !== undefined) p.interToken.observe({ model: m.name, version: m.served.version }, r.interTokenMs / 1000);
  }

  /** A request admitted to a slot of `entry`'s model after waiting `waitedMs`. */
  queueWait(entry: PoolEntry, waitedMs: number): void {
    this.prom?.queueWait.observe({ model: entry.model.name, priority: entry.priority }, waitedMs / 1000);
  }

  /** A request refused for good by `entry` (no fallback took it). */
  shed(entry: PoolEntry, reason: "queue_full" | "queue_timeout" | "budget_exceeded"): void {
    this.prom?.shed.inc({ entry: entry.name, reason });
  }

  /** A request left `entry` for its fallback because of `reason` (an error code). */
  fallback(entry: PoolEntry, reason: string): void {
    this.prom?.fallbacks.inc({ entry: entry.name, reason });
  }

  /** Every served model, with the figures of the last `windowS` seconds. */
  modelStatus(windowS: number): ModelStatus[] {
    const window = this.recent.window(windowS, this.models.length);
    return this.models.map((m) => {
      const pid = m.served.worker.pid ?? null;
      const proc = pid === null ? null : readProcStats(pid);
      return {
        name: m.name,
        version: m.served.version,
        state: m.served.worker.state,
        pid,
        rss_bytes: proc?.rssBytes ?? null,
        cpu_seconds: proc ? Math.round(proc.cpuSeconds * 100) / 100 : null,
        restarts: m.served.worker.restarts,
        slots: { busy: m.served.scheduler.inflight, total: m.served.scheduler.capacity },
        queue: m.served.scheduler.queuedByPriority(),
        totals: { ...m.totals },
        window: window[m.index]!,
        resources: resourcesOf(m.served.worker.confinement),
        placement: placementStatus(m.served.worker.info?.placement),
      };
    });
  }

  /** Every pool entry with its spend in the current UTC month. */
  entryStatus(): EntryStatus[] {
    const month = periodOf(this.clock());
    const spend = this.spendByEntry(month);
    return this.entries.map((e) => ({
      name: e.name,
      model: e.model.name,
      priority: e.priority,
      budget: { spent: spend.get(e.name)?.spent ?? 0, limit: e.costLimit ?? null, month },
    }));
  }

  /**
   * The response cache's figures, read from it at scrape time like the other levels: hits per
   * level (l1, l2, and `flight` for a request that joined an identical one under way), misses,
   * entries and bytes per level, evictions.
   */
  watchCache(stats: () => CacheStats): void {
    const p = this.prom;
    if (!p) return;
    const registers = [p.registry];
    new Counter({
      name: "moltbot_cache_hits_total",
      help: "Generation requests answered by the response cache, by level (flight: joined an identical request under way)",
      labelNames: ["level"],
      registers,
      collect() {
        const s = stats();
        this.reset();
        this.inc({ level: "l1" }, s.l1.hits);
        this.inc({ level: "l2" }, s.l2.hits);
        this.inc({ level: "flight" }, s.joined);
      },
    });
    new Counter({
      name: "moltbot_cache_misses_total",
      help: "Cacheable generation requests the response cache could not answer (the model ran)",
      registers,
      collect() {
        this.reset();
        this.inc(stats().misses);
      },
    });
    new Counter({
      name: "moltbot_cache_bypass_total",
      help: "Generation requests that did not use the response cache (not deterministic, or opted out)",
      registers,
      collect() {
        this.reset();
        this.inc(stats().bypassed);
      },
    });
    new Counter({
      name: "moltbot_cache_evictions_total",
      help: "Entries evicted from a response cache level by its entry or size bound",
      labelNames: ["level"],
      registers,
      collect() {
        const s = stats();
        this.reset();
        this.inc({ level: "l1" }, s.l1.evictions);
        this.inc({ level: "l2" }, s.l2.evictions);
      },
    });
    new Gauge({
      name: "moltbot_cache_entries",
      help: "Entries held by each response cache level",
      labelNames: ["level"],
      registers,
      collect() {
        const s = stats();
        this.set({ level: "l1" }, s.l1.entries);
        this.set({ level: "l2" }, s.l2.entries);
      },
    });
    new Gauge({
      name: "moltbot_cache_bytes",
      help: "Bytes of stored responses in each response cache level",
      labelNames: ["level"],
      registers,
      collect() {
        const s = stats();
        this.set({ level: "l1" }, s.l1.bytes);
        this.set({ level: "l2" }, s.l2.bytes);
      },
    });
  }

  private spendByEntry(month = periodOf(this.clock())): Map<string, { spent: number; reserved: number }> {
    return new Map(this.ledger.status(month).map((s) => [s.entry, s]));
  }
}
