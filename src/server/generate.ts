// Runs one generation for an HTTP request, streamed (SSE) or whole, and shapes the result
// with a route-specific formatter. A client that leaves, or a request past its deadline, cancels
// the generation at once (./deadline.ts), which frees the worker's slot.
//
// Past the deadline the client gets 504 request_timeout (503 server_shutting_down when the
// server's drain deadline cuts it); a stream that already sent its headers gets one last event
// in OpenAI's error shape (`data: {"error": {...}}`), then `[DONE]`.
//
// Each request that named a served model is recorded once when it ends (metrics and
// /admin/status), whatever its status; nothing is recorded per token.
import type { FastifyReply, FastifyRequest } from "fastify";
import { MoltbotError } from "../errors.js";
import type { GenerationAdmission, ModelPool, PoolEntry } from "../pool/model-pool.js";
import type { GenerationParams } from "../engine/types.js";
import type { PromptInput, TokenLogprobEntry } from "../workers/protocol.js";
import type { GenerationDone } from "../workers/model-worker.js";
import { costOf } from "../ledger/sqlite-ledger.js";
import { errorReply, shortUrl } from "./errors-http.js";
type OpenAIErrorBody = ReturnType<typeof errorReply>["body"];
import { RequestLifetime } from "./deadline.js";
import { SseStream } from "./sse.js";
import { inferenceEnded, inferenceStarted } from "../audit/request-event.js";
import { admitCached, CACHE_HEADER, type CachedAdmission } from "./cached-generation.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** OpenAI's field: how many prompt tokens came from the prompt cache. */
  prompt_tokens_details: { cached_tokens: number };
}

/**
 * Streamed chunks may also be an array of several chunks or undefined (none): tool calls hold
 * text back and later send several chunks at once (tool-calls.ts).
 */
export interface ResponseFormatter {
  /** One streamed chunk for a text delta (with its tokens' logprobs when asked). */
  chunk(text: string, logprobs: TokenLogprobEntry[] | undefined, first: boolean): unknown;
  /** The last streamed chunk, carrying finish_reason and usage. */
  lastChunk(done: GenerationDone, usage: Usage): unknown;
  /** The usage-only chunk of `stream_options.include_usage`. */
  usageChunk(usage: Usage): unknown;
  /** The whole non-streamed body. */
  whole(text: string, logprobs: TokenLogprobEntry[] | undefined, done: GenerationDone, usage: Usage): unknown;
  /**
   * Event-typed streams (the Responses API) shape their own error event and end without
   * `data: [DONE]`; without this, a failed stream ends with OpenAI's `{"error": ...}` and [DONE].
   */
  streamError?(error: OpenAIErrorBody["error"]): unknown;
}

export interface GenerateCall {
  pool: ModelPool;
  /** The pool entry the client named (undefined: the first generation entry). */
  model: string | undefined;
  prompt: PromptInput;
  params: GenerationParams;
  stream: boolean;
  includeUsage: boolean;
  /** The response shape, for the entry and version that end up serving (fallback and version switches may change them). */
  format: (entry: PoolEntry, version: string) => ResponseFormatter;
  /** Milliseconds from the request's arrival to its 504; undefined: none (see ./deadline.ts). */
  deadlineMs: number | undefined;
}

function sendChunks(sse: SseStream, chunks: unknown): void {
  if (chunks === undefined) return;
  for (const c of Array.isArray(chunks) ? chunks : [chunks]) sse.send(c);
}

/** Names the version of the model that served an inference response (the fallback's, after one). */
const MODEL_VERSION_HEADER = "x-moltbot-model-version";

export function modelVersionHeader(version: string): Record<string, string> {
  return { [MODEL_VERSION_HEADER]: version };
}

function retryAfter(err: unknown): Record<string, string> {
  return err instanceof MoltbotError && err.retryAfterS !== undefined ? { "retry-after": String(err.retryAfterS) } : {};
}

function usageOf(done: GenerationDone): Usage {
  return {
    prompt_tokens: done.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: done.promptTokens + done.completionTokens,
    prompt_tokens_details: { cached_tokens: done.cachedTokens },
  };
}

/** What one inference request did, for `recordInference`. */
export interface InferenceOutcome {
  /** The entry that served it; undefined when it never got one (the named entry is used). */
  entry: PoolEntry | undefined;
  status: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  /** Milliseconds since the request arrived (reply.elapsedTime) at its first text, -1 if none. */
  firstTextMs: number;
  /** At its end, when it finished normally. */
  doneMs: number;
  /** The version that served it, once admitted. */
  version?: string | undefined;
  /** Answered from the response cache (a stored response or an identical request's run): what it was charged. */
  cacheHit?: { charged: number } | undefined;
  /** Prompt and completion text, kept only with audit.include_content (request.auditContent). */
  prompt?: string | undefined;
  completion?: string | undefined;
}

// nginx's code for a client that closed the connection before the response: counted as an error.
const CLIENT_CLOSED = 499;

/** The status a failed request ends with, for the record. */
export function failedStatus(err: unknown, clientLeft: boolean): number {
  return clientLeft ? CLIENT_CLOSED : errorReply(err).status;
}

/** The request's cost as the ledger charged it; undefined rather than a throw in a request's `finally`. */
function auditCost(o: InferenceOutcome, entry: PoolEntry): number | undefined {
  try {
    return costOf(o.promptTokens, o.completionTokens, entry.pricing, o.cachedTokens);
  } catch {
    return undefined;
  }
}

/**
 * Records a finished inference request (metrics, and what its audit record needs, left on the
 * request); one that named no served model is not recorded.
 */
export function recordInference(request: FastifyRequest, reply: FastifyReply, pool: ModelPool, named: string | undefined, type: "llm" | "embedding", o: InferenceOutcome): void {
  let entry = o.entry;
  if (!entry) {
    try {
      entry = pool.resolve(named, type);
    } catch {
      inferenceEnded(request, null);
      return;
    }
  }
  inferenceEnded(request, {
    model: entry.name,
    version: o.version,
    status: o.status,
    promptTokens: o.promptTokens,
    completionTokens: o.completionTokens,
    cost: o.entry === undefined ? undefined : o.cacheHit ? o.cacheHit.charged : auditCost(o, entry),
    prompt: o.prompt,
    completion: o.completion,
  });
  const metrics = pool.metrics;
  if (!metrics) return;
  const latencyMs = reply.elapsedTime;
  // A cache hit made no tokens: the model's token counts and gaps stay the model's own work.
  const made = o.cacheHit ? { promptTokens: 0, completionTokens: 0, cachedTokens: 0 } : o;
  const gaps = made.completionTokens - 1;
  metrics.requestFinished({
    entry,
    route: request.routeOptions.url ?? "unknown",
    status: o.status,
    latencyMs,
    promptTokens: made.promptTokens,
    completionTokens: made.completionTokens,
    cachedTokens: made.cachedTokens,
    ttftMs: o.firstTextMs >= 0 ? o.firstTextMs : undefined,
    // The last text arrives with `done` (one IPC message per engine step), so the span from
    // the first text to done over the gaps is the mean inter-token gap, at no per-token cost.
    interTokenMs: o.firstTextMs >= 0 && o.doneMs > 0 && gaps > 0 ? (o.doneMs - o.firstTextMs) / gaps : undefined,
  });
}

/**
 * Codes of a request whose worker went away: it died or was killed while the request waited or
 * ran, is restarting, or was switched out for another version and drains.
 */
const WORKER_LOSS: ReadonlySet<string> = new Set(["worker_crashed", "worker_unavailable"]);

export async function serveGeneration(request: FastifyRequest, reply: FastifyReply, call: GenerateCall): Promise<void> {
  inferenceStarted(request);
  const life = new RequestLifetime(reply, call.deadlineMs);
  const res = reply.raw;
  const requestId = String(request.id);
  const wantLogprobs = call.params.topLogprobs !== null;
  const outcome: InferenceOutcome = { entry: undefined, status: 200, promptTokens: 0, completionTokens: 0, cachedTokens: 0, firstTextMs: -1, doneMs: 0 };
  // audit.include_content: the text is kept for the audit record (streams accumulate it only then).
  const keepText = request.auditContent;
  if (keepText) outcome.prompt = call.prompt.kind === "text" ? call.prompt.text : JSON.stringify(call.prompt.turns);
  const ended = (done: GenerationDone) => {
    outcome.promptTokens = done.promptTokens;
    outcome.completionTokens = done.completionTokens;
    outcome.cachedTokens = done.cachedTokens;
    outcome.doneMs = reply.elapsedTime;
  };
  /** The stream's writer once the reply is hijacked (Fastify no longer answers for it). */
  let hijacked: SseStream | undefined;
  /** The formatter of the stream under way (it shapes the stream's error event). */
  let streamFormat: ResponseFormatter | undefined;
  /**
   * A streamed reply's end on failure: the error's status and body when nothing was written yet,
   * else a last error event and [DONE].
   */
  const failStream = (caught: unknown, sse: SseStream): void => {
    const clientLeft = life.clientLeft;
    const err = life.ended ? life.reason : caught;
    outcome.status = failedStatus(err, clientLeft);
    if (clientLeft) return;
    const { status, body } = errorReply(err);
    // The reply is hijacked: Fastify's error handler, which logs the others, never sees this one.
    call.pool.log[status >= 500 ? "error" : "warning"](`Stream of ${request.method} ${shortUrl(request.url)} failed (${status}): ${body.error.message}`, { code: body.error.code, request_id: requestId });
    if (!sse.started) {
      res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-request-id": requestId, ...retryAfter(err) });
      res.end(JSON.stringify(body));
    } else if (streamFormat?.streamError) {
      sse.send(streamFormat.streamError(body.error));
      sse.end(false);
    } else {
      sse.send(body);
      sse.end();
    }
  };
  let retried = false;
  /**
   * A request whose worker went away before the client got a byte is tried once more, on the
   * restarted worker, the new version or the entry's fallback (whichever can take it first);
   * a stream already under way cannot be replayed and ends with an error event.
   */
  const retryAfterLoss = async (err: unknown): Promise<boolean> => {
    if (retried || life.ended || !(err instanceof MoltbotError) || !WORKER_LOSS.has(err.code)) return false;
    retried = true;
    call.pool.log.warning(`Worker lost before the response began, retrying once: ${err.message}`, { code: err.code, request_id: requestId });
    try {
      await call.pool.recovered(call.model, life.signal, request.principal ?? undefined);
    } catch {
      return false; // nothing came back in time: the client gets the first error
    }
    outcome.promptTokens = outcome.completionTokens = 0;
    outcome.firstTextMs = -1;
    return true;
  };

  try {
    for (;;) {
      let admission: GenerationAdmission;
      let cached: CachedAdmission;
      try {
        // Admission errors (unknown model, budget, queue) are thrown before anything is written,
        // so they keep their status code and Retry-After. The response cache may answer instead
        // of the model, or share an identical request's run (cached-generation.ts).
        cached = await admitCached(request, reply, call, life.signal, requestId);
        admission = cached.admission;
      } catch (err) {
        if (await retryAfterLoss(err)) continue;
        if (hijacked) return failStream(err, hijacked);
        throw err;
      }
      outcome.entry = admission.entry;
      outcome.version = admission.version;
      const format = call.format(admission.entry, admission.version);
      const fallbackHeader = admission.fallbacks.length > 0 ? { "x-moltbot-fallback": admission.fallbacks.join(", ") } : undefined;
      const servedHeaders = { ...modelVersionHeader(admission.version), ...fallbackHeader, [CACHE_HEADER]: cached.status };
      // Recorded as a hit also when it fails or its client leaves: the model's work is the run's.
      outcome.cacheHit = cached.hit ? { charged: 0 } : undefined;
      const hitEnded = () => {
        if (cached.hit) outcome.cacheHit = { charged: cached.charged() };
      };
      if (!call.stream) {
        let text = "";
        const logprobs: TokenLogprobEntry[] | undefined = wantLogprobs ? [] : undefined;
        let done: GenerationDone;
        try {
          done = await admission.run(
            {
              onStart(n) {
                outcome.promptTokens = n;
              },
              onText(delta, lp, n) {
                if (outcome.firstTextMs < 0) outcome.firstTextMs = reply.elapsedTime;
                outcome.completionTokens = n;
                text += delta;
                if (logprobs && lp) logprobs.push(...lp);
              },
            },
            life.signal,
          );
        } catch (err) {
          if (await retryAfterLoss(err)) continue;
          throw err;
        }
        ended(done);
        hitEnded();
        if (keepText) outcome.completion = text;
        void reply.headers(servedHeaders);
        await reply.send(format.whole(text, logprobs, done, usageOf(done)));
        return;
      }

      // Streamed from here on: Fastify no longer answers for this reply, every error is written here.
      reply.hijack();
      const sse = new SseStream(res, { "x-request-id": requestId, ...servedHeaders });
      hijacked = sse;
      streamFormat = format;
      let first = true;
      try {
        const done = await admission.run(
          {
            onStart(n) {
              outcome.promptTokens = n;
              // Role chunk first, as OpenAI does, so clients see the stream open before the first token.
              sendChunks(sse, format.chunk("", undefined, true));
              first = false;
            },
            onText(delta, lp, n) {
              if (outcome.firstTextMs < 0) outcome.firstTextMs = reply.elapsedTime;
              outcome.completionTokens = n;
              if (keepText) outcome.completion = (outcome.completion ?? "") + delta;
              sendChunks(sse, format.chunk(delta, lp, first));
              first = false;
            },
          },
          life.signal,
        );
        ended(done);
        hitEnded();
        const usage = usageOf(done);
        sendChunks(sse, format.lastChunk(done, usage));
        if (call.includeUsage) sse.send(format.usageChunk(usage));
        sse.end(format.streamError === undefined);
        return;
      } catch (caught) {
        if (!sse.started && (await retryAfterLoss(caught))) continue;
        return failStream(caught, sse);
      }
    }
  } catch (err) {
    const clientLeft = life.clientLeft;
    const failure = life.ended ? life.reason : err;
    outcome.status = failedStatus(failure, clientLeft);
    throw failure;
  } finally {
    life.close();
    recordInference(request, reply, call.pool, call.model, "llm", outcome);
  }
}
