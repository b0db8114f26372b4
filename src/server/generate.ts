// Runs one generation for an HTTP request, streamed (SSE) or whole, and shapes the result
// with a route-specific formatter. Client disconnects cancel the generation at once, which
// frees the worker's slot.
import type { FastifyReply, FastifyRequest } from "fastify";
import { MoltbotError } from "../errors.js";
import type { ModelPool, PoolEntry } from "../pool/model-pool.js";
import type { GenerationParams } from "../engine/types.js";
import type { PromptInput, TokenLogprobEntry } from "../workers/protocol.js";
import type { GenerationDone } from "../workers/model-worker.js";
import { errorReply } from "./errors-http.js";
import { SseStream } from "./sse.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** OpenAI's field: how many prompt tokens came from the prompt cache. */
  prompt_tokens_details: { cached_tokens: number };
}

export interface ResponseFormatter {
  /** One streamed chunk for a text delta (with its tokens' logprobs when asked). */
  chunk(text: string, logprobs: TokenLogprobEntry[] | undefined, first: boolean): unknown;
  /** The last streamed chunk, carrying finish_reason and usage. */
  lastChunk(done: GenerationDone, usage: Usage): unknown;
  /** The usage-only chunk of `stream_options.include_usage`. */
  usageChunk(usage: Usage): unknown;
  /** The whole non-streamed body. */
  whole(text: string, logprobs: TokenLogprobEntry[] | undefined, done: GenerationDone, usage: Usage): unknown;
}

export interface GenerateCall {
  pool: ModelPool;
  /** The pool entry the client named (undefined: the first generation entry). */
  model: string | undefined;
  prompt: PromptInput;
  params: GenerationParams;
  stream: boolean;
  includeUsage: boolean;
  /** The response shape, for the entry that ends up serving (fallback may change it). */
  format: (entry: PoolEntry) => ResponseFormatter;
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

export async function serveGeneration(request: FastifyRequest, reply: FastifyReply, call: GenerateCall): Promise<void> {
  const abort = new AbortController();
  const res = reply.raw;
  // 'close' on the response fires on completion too; only an unfinished response means the client left.
  const onClose = () => {
    if (!res.writableFinished) abort.abort();
  };
  res.on("close", onClose);
  const wantLogprobs = call.params.topLogprobs !== null;

  try {
    // Admission errors (unknown model, budget, queue) are thrown before anything is written,
    // so they keep their status code and Retry-After.
    const admission = await call.pool.admit(call.model, call.prompt, call.params, abort.signal, String(request.id));
    const format = call.format(admission.entry);
    const fallbackHeader = admission.fallbacks.length > 0 ? { "x-moltbot-fallback": admission.fallbacks.join(", ") } : undefined;
    if (!call.stream) {
      let text = "";
      const logprobs: TokenLogprobEntry[] | undefined = wantLogprobs ? [] : undefined;
      const done = await admission.run(
        {
          onText(delta, lp) {
            text += delta;
            if (logprobs && lp) logprobs.push(...lp);
          },
        },
        abort.signal,
      );
      if (fallbackHeader) void reply.headers(fallbackHeader);
      await reply.send(format.whole(text, logprobs, done, usageOf(done)));
      return;
    }

    reply.hijack();
    const sse = new SseStream(res, { "x-request-id": String(request.id), ...fallbackHeader });
    let first = true;
    try {
      const done = await admission.run(
        {
          onStart() {
            // Role chunk first, as OpenAI does, so clients see the stream open before the first token.
            sse.send(format.chunk("", undefined, true));
            first = false;
          },
          onText(delta, lp) {
            sse.send(format.chunk(delta, lp, first));
            first = false;
          },
        },
        abort.signal,
      );
      const usage = usageOf(done);
      sse.send(format.lastChunk(done, usage));
      if (call.includeUsage) sse.send(format.usageChunk(usage));
      sse.end();
    } catch (err) {
      if (abort.signal.aborted) return;
      const { status, body } = errorReply(err);
      // The reply is hijacked: Fastify's error handler, which logs the others, never sees this one.
      call.pool.log[status >= 500 ? "error" : "warning"](`Stream of ${request.method} ${request.url} failed (${status}): ${body.error.message}`, { code: body.error.code, request_id: String(request.id) });
      if (!sse.started) {
        res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-request-id": String(request.id), ...retryAfter(err) });
        res.end(JSON.stringify(body));
      } else {
        sse.send(body);
        sse.end();
      }
    }
  } catch (err) {
    if (abort.signal.aborted) throw new MoltbotError("invalid_request", "client closed the connection");
    throw err;
  } finally {
    res.off("close", onClose);
  }
}
