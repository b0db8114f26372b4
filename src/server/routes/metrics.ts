// GET <metrics.path> (default /metrics): the Prometheus text exposition of this server's
// registry. Not registered when metrics are disabled, so the path is a plain 404.
// No authentication yet: scrape access control comes with the auth work.
import type { FastifyInstance } from "fastify";
import type { ServerMetrics } from "../../observe/metrics.js";

export function registerMetricsRoute(app: FastifyInstance, metrics: ServerMetrics, path: string): void {
  app.get(path, async (_req, reply) => {
    const exposition = await metrics.prometheusText();
    if (!exposition) return reply.callNotFound();
    return reply.header("content-type", exposition.contentType).send(exposition.text);
  });
}
