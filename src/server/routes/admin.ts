// GET /admin/status: what `moltbot status` shows over SSH. The server, each served model (its
// worker process, slots, queue, totals since start and a rolling window of recent requests)
// and each pool entry's budget. The JSON shape is a contract with the CLI: add fields, never
// rename them.
//
// Guarded by scope `admin` when auth is on (src/auth/server-auth.ts).
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { MoltbotError } from "../../errors.js";
import type { ServerMetrics } from "../../observe/metrics.js";

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const Percentiles = Type.Object({ p50: Nullable(Type.Number()), p95: Nullable(Type.Number()) });
const Totals = Type.Object({
  requests: Type.Integer(),
  errors: Type.Integer(),
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  cached_tokens: Type.Integer(),
});

/** The response body (also the type `moltbot status` reads). */
export const AdminStatus = Type.Object({
  server: Type.Object({
    version: Type.String(),
    pid: Type.Integer(),
    started_at: Type.String(),
    uptime_s: Type.Number(),
    listen: Type.String(),
  }),
  window_s: Type.Integer(),
  models: Type.Array(
    Type.Object({
      name: Type.String(),
      version: Type.String(),
      state: Type.String(),
      pid: Nullable(Type.Integer()),
      rss_bytes: Nullable(Type.Integer()),
      cpu_seconds: Nullable(Type.Number()),
      restarts: Type.Integer(),
      slots: Type.Object({ busy: Type.Integer(), total: Type.Integer() }),
      queue: Type.Object({ high: Type.Integer(), normal: Type.Integer(), low: Type.Integer() }),
      totals: Totals,
      window: Type.Object({ requests: Type.Integer(), errors: Type.Integer(), completion_tokens: Type.Integer(), latency_ms: Percentiles }),
      // resource_limits of the worker (null without): each limit enforced or not, and the cgroup's usage.
      resources: Nullable(
        Type.Object({
          limits: Type.Array(Type.Object({ limit: Type.String(), value: Type.String(), enforced: Type.Boolean(), reason: Nullable(Type.String()) })),
          usage: Type.Object({
            cpu_throttled_s: Nullable(Type.Number()),
            cpu_throttled_periods: Nullable(Type.Integer()),
            memory_bytes: Nullable(Type.Integer()),
            memory_peak_bytes: Nullable(Type.Integer()),
            io_read_bytes: Nullable(Type.Integer()),
            io_write_bytes: Nullable(Type.Integer()),
            oom_kills: Nullable(Type.Integer()),
          }),
        }),
      ),
      /** Backend and device of the worker (null until loaded, or with node-llama-cpp). */
      placement: Nullable(
        Type.Object({
          backend: Type.String(),
          device: Type.String(),
          description: Type.String(),
          device_memory_bytes: Nullable(Type.Integer()),
          offloaded_layers: Type.Integer(),
          total_layers: Type.Integer(),
          threads: Type.Integer(),
        }),
      ),
    }),
  ),
  entries: Type.Array(
    Type.Object({
      name: Type.String(),
      model: Type.String(),
      priority: Type.String(),
      budget: Type.Object({ spent: Type.Number(), limit: Nullable(Type.Number()), month: Type.String() }),
    }),
  ),
});
export type AdminStatus = Static<typeof AdminStatus>;

// Query strings are strings and the app never coerces types: the pattern checks, parse converts.
const StatusQuery = Type.Object({ window: Type.Optional(Type.String({ pattern: "^[0-9]{1,4}$" })) });
type StatusQuery = Static<typeof StatusQuery>;

const DEFAULT_WINDOW_S = 5;
const MAX_WINDOW_S = 3600;

export interface ServerInfo {
  pid: number;
  startedAt: Date;
  /** performance.now() at start, for the uptime. */
  startedMono: number;
  /** "http://host:port", known once listening. */
  listen(): string;
}

/** The version in the package.json above this file (dist/src/... once built, src/... under tsx). */
function productVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  try {
    return String((JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { version?: unknown }).version ?? "unknown");
  } catch {
    return "unknown";
  }
}

export function registerAdminRoutes(app: FastifyInstance, metrics: ServerMetrics, info: ServerInfo): void {
  const version = productVersion();
  app.get<{ Querystring: StatusQuery }>("/admin/status", { schema: { querystring: StatusQuery, response: { 200: AdminStatus } } }, async (req): Promise<AdminStatus> => {
    const windowS = req.query.window === undefined ? DEFAULT_WINDOW_S : Number(req.query.window);
    if (windowS < 1 || windowS > MAX_WINDOW_S) {
      throw new MoltbotError("invalid_request", `'window' must be 1..${MAX_WINDOW_S} seconds, got ${req.query.window}`, { param: "window" });
    }
    return {
      server: {
        version,
        pid: info.pid,
        started_at: info.startedAt.toISOString(),
        uptime_s: Math.round(performance.now() - info.startedMono) / 1000,
        listen: info.listen(),
      },
      window_s: windowS,
      models: metrics.modelStatus(windowS),
      entries: metrics.entryStatus(),
    };
  });
}
