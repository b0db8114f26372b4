// Liveness and readiness for load balancers and systemd/k8s probes.
import type { FastifyInstance } from "fastify";
import type { ModelPool } from "../../pool/model-pool.js";

export function registerHealthRoutes(app: FastifyInstance, pool: ModelPool, isClosing: () => boolean): void {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const models = Object.fromEntries(pool.entries.map((e) => [e.name, e.served.worker.state]));
    const ready = !isClosing() && pool.isReady();
    return reply.code(ready ? 200 : 503).send({ status: ready ? "ready" : isClosing() ? "draining" : "not_ready", models });
  });
}
