// The document a server's `GET /admin/status` answers, as `moltbot status` reads it. Read by
// hand rather than with a TypeBox schema: loading TypeBox costs more than the rest of the
// command's start-up (bench/cli-startup.ts), and the reader is deliberately lenient field by
// field (a missing or mistyped figure shows as "-") so that a CLI and a server of neighbouring
// versions still work together. Only the overall shape is required.
import { isObject, obj, num, str, type Json } from "./lenient-json.js";

export interface StatusDoc {
  server: {
    version: string;
    pid: number | null;
    startedAt: string | null;
    uptimeS: number | null;
    listen: string | null;
  };
  windowS: number | null;
  models: ModelStatus[];
  entries: EntryStatus[];
}

export interface ModelStatus {
  name: string;
  version: string;
  state: string;
  pid: number | null;
  rssBytes: number | null;
  cpuSeconds: number | null;
  restarts: number | null;
  slots: { busy: number | null; total: number | null };
  queue: { high: number | null; normal: number | null; low: number | null };
  totals: { requests: number | null; errors: number | null; completionTokens: number | null };
  window: { requests: number | null; errors: number | null; completionTokens: number | null; p50Ms: number | null; p95Ms: number | null };
  /** resource_limits: each limit and whether it is enforced, and the cgroup's usage; null without. */
  resources: {
    limits: Array<{ limit: string; value: string; enforced: boolean; reason: string | null }>;
    cpuThrottledS: number | null;
    memoryBytes: number | null;
    memoryPeakBytes: number | null;
    oomKills: number | null;
  } | null;
  /** Absent from servers before GPU support, and until the worker is loaded. */
  placement: { backend: string; device: string; description: string; deviceMemoryBytes: number | null; offloadedLayers: number | null; totalLayers: number | null; threads: number | null } | null;
}

export interface EntryStatus {
  name: string;
  model: string;
  priority: string;
  budget: { spent: number | null; limit: number | null; month: string | null } | null;
}


/** The parsed document, or a reason why `body` is not one. */
export function readStatusDoc(body: unknown): StatusDoc | { invalid: string } {
  if (!isObject(body) || !isObject(body.server) || !Array.isArray(body.models)) {
    return { invalid: "not a status document (expected {server, models, entries})" };
  }
  const s = body.server;
  return {
    server: { version: str(s.version) ?? "?", pid: num(s.pid), startedAt: str(s.started_at), uptimeS: num(s.uptime_s), listen: str(s.listen) },
    windowS: num(body.window_s),
    models: body.models.filter(isObject).map(readModel),
    entries: (Array.isArray(body.entries) ? body.entries : []).filter(isObject).map(readEntry),
  };
}

function readModel(m: Json): ModelStatus {
  const slots = obj(m.slots);
  const queue = obj(m.queue);
  const totals = obj(m.totals);
  const window = obj(m.window);
  const latency = obj(window.latency_ms);
  return {
    name: str(m.name) ?? "?",
    version: str(m.version) ?? "?",
    state: str(m.state) ?? "?",
    pid: num(m.pid),
    rssBytes: num(m.rss_bytes),
    cpuSeconds: num(m.cpu_seconds),
    restarts: num(m.restarts),
    slots: { busy: num(slots.busy), total: num(slots.total) },
    queue: { high: num(queue.high), normal: num(queue.normal), low: num(queue.low) },
    totals: { requests: num(totals.requests), errors: num(totals.errors), completionTokens: num(totals.completion_tokens) },
    window: { requests: num(window.requests), errors: num(window.errors), completionTokens: num(window.completion_tokens), p50Ms: num(latency.p50), p95Ms: num(latency.p95) },
    resources: readResources(m.resources),
    placement: readPlacement(m.placement),
  };
}

function readPlacement(p: unknown): ModelStatus["placement"] {
  if (!isObject(p)) return null;
  return {
    backend: str(p.backend) ?? "?",
    device: str(p.device) ?? "?",
    description: str(p.description) ?? "?",
    deviceMemoryBytes: num(p.device_memory_bytes),
    offloadedLayers: num(p.offloaded_layers),
    totalLayers: num(p.total_layers),
    threads: num(p.threads),
  };
}

function readResources(r: unknown): ModelStatus["resources"] {
  if (!isObject(r)) return null;
  const usage = obj(r.usage);
  const limits = (Array.isArray(r.limits) ? r.limits : []).filter(isObject).map((l) => ({ limit: str(l.limit) ?? "?", value: str(l.value) ?? "?", enforced: l.enforced === true, reason: str(l.reason) }));
  return { limits, cpuThrottledS: num(usage.cpu_throttled_s), memoryBytes: num(usage.memory_bytes), memoryPeakBytes: num(usage.memory_peak_bytes), oomKills: num(usage.oom_kills) };
}

function readEntry(e: Json): EntryStatus {
  const budget = isObject(e.budget) ? { spent: num(e.budget.spent), limit: num(e.budget.limit), month: str(e.budget.month) } : null;
  return { name: str(e.name) ?? "?", model: str(e.model) ?? "?", priority: str(e.priority) ?? "?", budget };
}




