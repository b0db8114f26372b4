// The response cache's admin API, what `moltbot cache` drives:
//   GET  /admin/cache         its figures (levels, hits, misses, evictions, sizes)
//   POST /admin/cache/clear   {"model"?}: drop every entry, or one pool entry's, from both levels
// Guarded by scope `admin` when auth is on (src/auth/server-auth.ts).
import { Type, type Static } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import type { ResponseCache } from "../../cache/response-cache.js";
import { MoltbotError } from "../../errors.js";
import type { ModelPool } from "../../pool/model-pool.js";

const ClearBody = Type.Object({ model: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) });
type ClearBody = Static<typeof ClearBody>;

export function registerCacheAdminRoutes(app: FastifyInstance, pool: ModelPool): void {
  const cache: ResponseCache | undefined = pool.cache;
  app.get("/admin/cache", async () => cache?.stats() ?? { mode: "off" });
  app.post<{ Body: ClearBody }>("/admin/cache/clear", { schema: { body: ClearBody } }, async (req) => {
    const model = req.body.model;
    if (model !== undefined && !pool.entries.some((e) => e.name === model)) {
      throw new MoltbotError("model_not_found", `no pool entry '${model}' (served: ${pool.entries.map((e) => e.name).join(", ")})`, { param: "model" });
    }
    const cleared = cache?.clear(model) ?? { l1: 0, l2: 0 };
    pool.log.info(`Response cache cleared${model === undefined ? "" : ` for ${model}`}: ${cleared.l1} in memory, ${cleared.l2} stored`);
    return { model: model ?? null, cleared };
  });
}
