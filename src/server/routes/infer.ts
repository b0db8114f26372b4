// The seed's own route: {"input", "max_tokens"} -> {"output", "model", "usage"}.
import type { FastifyInstance } from "fastify";
import type { ModelPool } from "../../pool/model-pool.js";
import { InferBody } from "../schemas.js";
import { serveGeneration } from "../generate.js";
import { requestDeadlineMs } from "../deadline.js";
import { samplingParams } from "./openai.js";

export function registerInferRoute(app: FastifyInstance, pool: ModelPool, requestTimeoutMs: number | undefined): void {
  app.post<{ Body: InferBody }>("/infer", { schema: { body: InferBody } }, async (req, reply) => {
    const body = req.body;
    await serveGeneration(req, reply, {
      pool,
      model: body.model,
      prompt: { kind: "text", text: body.input },
      params: samplingParams(body, body.max_tokens ?? 128, null),
      deadlineMs: requestDeadlineMs(requestTimeoutMs, body.timeout),
      stream: false,
      includeUsage: false,
      format: (entry, version) => ({
        chunk: () => undefined,
        lastChunk: () => undefined,
        usageChunk: () => undefined,
        whole: (text, _lp, done, usage) => ({ output: text, model: entry.name, version, finish_reason: done.finishReason, usage }),
      }),
    });
  });
}
