// Builds the Fastify app: body parsing and validation, routes, the one error mapping, and
// an access log line per request. Knows nothing about processes or files.
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import { randomUUID } from "node:crypto";
import type { ServerOptions as HttpsServerOptions } from "node:https";
import type { AuditSink } from "../audit/events.js";
import { requestEvent } from "../audit/request-event.js";
import { MoltbotError } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import type { ServerMetrics } from "../observe/metrics.js";
import type { ModelPool } from "../pool/model-pool.js";
import { errorReply, shortUrl } from "./errors-http.js";
import { MAX_URL_LENGTH, applyNodeTimeouts, httpLimitOptions, type HttpTimeouts } from "./http-limits.js";
import { registerAdminRoutes, type ServerInfo } from "./routes/admin.js";
import { registerModelAdminRoutes } from "./routes/admin-models.js";
import { registerCacheAdminRoutes } from "./routes/admin-cache.js";
import type { VersionedModel } from "../versions/versioned-model.js";
import { registerHealthRoutes } from "./routes/health.js";
import { registerInferRoute } from "./routes/infer.js";
import { registerMetricsRoute } from "./routes/metrics.js";
import { registerOpenAIRoutes } from "./routes/openai.js";
import { registerResponsesRoute } from "./routes/responses.js";
import { authHook, type ServerAuth } from "../auth/server-auth.js";

export interface AppOptions {
  pool: ModelPool;
  log: Logger;
  bodyLimitBytes: number;
  isClosing: () => boolean;
  timeouts: HttpTimeouts;
  /** server.request_timeout_ms: an inference request's deadline (undefined: none). */
  requestTimeoutMs: number | undefined;
  metrics: ServerMetrics;
  /** URL path of the Prometheus metrics; undefined: not served. */
  metricsPath: string | undefined;
  info: ServerInfo;
  /** The served models by name, whose versions the admin API switches. */
  versions: ReadonlyMap<string, VersionedModel>;
  /** Serve HTTPS only, with these options (security.tls, see tls.ts); undefined: plain HTTP. */
  https?: HttpsServerOptions | undefined;
  /** Tokens and scopes (security.jwt / security.api_keys); undefined: auth is off, every request is ANONYMOUS. */
  auth?: ServerAuth | undefined;
  /** Where every request and admin action is recorded (src/audit); undefined: nowhere. */
  audit?: AuditSink | undefined;
  /** audit.include_content: inference routes keep prompt and completion text for the record. */
  auditContent?: boolean;
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimitBytes,
    genReqId: (req) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
    },
    ajv: {
      // Wrong types are a 400, never silently coerced; unknown fields are left alone.
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false },
    },
    // Our onRequest hook answers while draining, in OpenAI's shape with Retry-After (Fastify's own 503 has neither).
    return503OnClosing: false,
    // Typed as the plain-HTTP instance either way: nothing here depends on the transport.
    ...((opts.https === undefined ? {} : { https: opts.https }) as object),
    ...httpLimitOptions(opts.timeouts, opts.log),
    // Router refusals (bad percent-encoding, an over-long path segment) in OpenAI's shape too.
    frameworkErrors: (err, _req, reply) => {
      const { status, body } = errorReply(err);
      void (reply as FastifyReply).code(status).send(body);
    },
  });
  applyNodeTimeouts(app.server, opts.timeouts);
  const log = opts.log.child("api");

  app.addHook("onRequest", async (req, reply) => {
    reply.header("x-request-id", req.id);
    if (req.url.length > MAX_URL_LENGTH) throw new MoltbotError("uri_too_long", `the URL is ${req.url.length} characters; at most ${MAX_URL_LENGTH} are accepted`);
    if (opts.isClosing() && req.url !== "/healthz" && req.url !== "/readyz") {
      throw new MoltbotError("server_shutting_down", "the server is shutting down; retry on another instance");
    }
  });

  app.decorateRequest("principal", null);
  // After the draining check, before the body is read: an unauthenticated request costs no parsing.
  app.addHook("onRequest", authHook(opts.auth, opts.metricsPath));

  app.decorateRequest("auditInference", null);
  app.decorateRequest("auditContent", opts.auditContent === true);
  const audit = opts.audit;
  app.addHook("onResponse", async (req, reply) => {
    log.info(`${req.method} ${shortUrl(req.url)} ${reply.statusCode} ${reply.elapsedTime.toFixed(1)}ms`, { request_id: req.id });
    audit?.record(requestEvent(req, reply.statusCode));
  });
  // A client that leaves before the response is finished gets no onResponse (nor, once its
  // request was read, an onRequestAbort: a stream it abandons ends no other way): recorded when
  // the connection closes, with nginx's 499 (client closed); during an inference route, once the
  // route has ended, so the record has the model, version, tokens and cost of what was done.
  app.decorateRequest("auditPending", false);
  app.decorateRequest("auditDeferred", null);
  if (audit !== undefined) {
    app.addHook("onRequest", async (req, reply) => {
      reply.raw.once("close", () => {
        if (reply.raw.writableFinished) return; // onResponse recorded it
        if (req.auditPending) req.auditDeferred = () => audit.record(requestEvent(req, 499));
        else audit.record(requestEvent(req, 499));
      });
    });
  }

  app.setErrorHandler(async (err, req, reply) => {
    const { status, body } = errorReply(err);
    // Fields, so `moltbot logs --grep <id>` finds every line of a request and JSON logs carry them as keys.
    const fields = { code: body.error.code, request_id: req.id };
    // A deadline a client or the operator set is not a fault of the server.
    if (status === 504) log.warning(`${req.method} ${shortUrl(req.url)}: ${body.error.message}`, fields);
    else if (status >= 500) log.error(`${req.method} ${shortUrl(req.url)}: ${body.error.message}`, err instanceof MoltbotError ? fields : { ...fields, error: (err as Error).stack ?? String(err) });
    else if (status !== 404) log.warning(`Request refused ${req.method} ${shortUrl(req.url)} (${status}): ${body.error.message}`, fields);
    const retryAfterS = err instanceof MoltbotError ? err.retryAfterS : undefined;
    if (retryAfterS !== undefined) reply.header("retry-after", String(retryAfterS));
    else if (status === 503) reply.header("retry-after", "1");
    return reply.code(status).send(body);
  });

  app.setNotFoundHandler(async (req, reply) => {
    const { status, body } = errorReply(new MoltbotError("route_not_found", `no route ${req.method} ${shortUrl(req.url)}`));
    return reply.code(status).send(body);
  });

  registerHealthRoutes(app, opts.pool, opts.isClosing);
  registerOpenAIRoutes(app, opts.pool, opts.requestTimeoutMs);
  registerResponsesRoute(app, opts.pool, opts.requestTimeoutMs);
  registerInferRoute(app, opts.pool, opts.requestTimeoutMs);
  registerAdminRoutes(app, opts.metrics, opts.info);
  registerModelAdminRoutes(app, opts.versions, audit);
  registerCacheAdminRoutes(app, opts.pool);
  if (opts.metricsPath !== undefined) registerMetricsRoute(app, opts.metrics, opts.metricsPath);
  return app;
}
