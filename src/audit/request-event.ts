// The audit event of one HTTP request, built in the app's onResponse hook. Inference routes
// leave what only they know (entry, version, tokens, cost) on the request as one object
// (`auditInference`, set once when the request ends in server/generate.ts), so the hook stays
// a handful of property reads: no per-token work, one event object per request.
import type { FastifyRequest } from "fastify";
import type { AuditEvent } from "./events.js";

export interface InferenceAudit {
  model: string;
  version: string | undefined;
  status: number;
  promptTokens: number;
  completionTokens: number;
  cost: number | undefined;
  /** Only when audit.include_content (request.auditContent). */
  prompt?: string | undefined;
  completion?: string | undefined;
}

declare module "fastify" {
  interface FastifyRequest {
    /** What an inference request did, for its audit record; null for other routes. */
    auditInference: InferenceAudit | null;
    /** audit.include_content: inference routes keep prompt and completion text for the record. */
    auditContent: boolean;
    /** An inference route is running: a client that leaves now is recorded when the route ends. */
    auditPending: boolean;
    /** The record a client's leaving deferred until the route ends (inferenceEnded). */
    auditDeferred: (() => void) | null;
  }
}

/** Inference routes call this first: if the client leaves, its record waits for what the route did. */
export function inferenceStarted(req: FastifyRequest): void {
  req.auditPending = true;
}

/** The inference route's end: what it did (null: it named no served model), and a deferred record made now. */
export function inferenceEnded(req: FastifyRequest, inf: InferenceAudit | null): void {
  req.auditInference = inf;
  req.auditPending = false;
  const deferred = req.auditDeferred;
  req.auditDeferred = null;
  deferred?.();
}

/** The request's event; `status`: the reply's (499 when the client left before it was finished). */
export function requestEvent(req: FastifyRequest, status: number): AuditEvent {
  // No principal: auth is on and the request's token was missing or refused.
  const user = req.principal?.subject ?? "unauthenticated";
  const url = req.url;
  const q = url.indexOf("?");
  const inf = req.auditInference;
  const event: AuditEvent = {
    action: "request",
    user,
    method: req.method,
    route: q < 0 ? url : url.slice(0, q),
    status: inf?.status ?? status,
    ip: req.ip,
    request_id: req.id,
  };
  if (inf !== null) {
    event.model = inf.model;
    if (inf.version !== undefined) event.version = inf.version;
    event.prompt_tokens = inf.promptTokens;
    event.completion_tokens = inf.completionTokens;
    if (inf.cost !== undefined) event.cost = inf.cost;
    if (inf.prompt !== undefined || inf.completion !== undefined) event.content = { prompt: inf.prompt, completion: inf.completion };
  }
  return event;
}
