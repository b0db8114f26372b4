// OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.
// All OpenAI JSON shapes live here; workers only ever see typed prompts and parameters.
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply } from "fastify";
import { MoltbotError } from "../../errors.js";
import type { ChatTurn } from "../../engine/types.js";
import type { ModelPool } from "../../pool/model-pool.js";
import type { GenerationParams } from "../../engine/types.js";
import type { TokenLogprobEntry } from "../../workers/protocol.js";
import type { GenerationDone } from "../../workers/model-worker.js";
import { ChatCompletionBody, CompletionBody, EmbeddingBody } from "../schemas.js";
import { failedStatus, modelVersionHeader, recordInference, serveGeneration, type InferenceOutcome, type ResponseFormatter } from "../generate.js";
import { RequestLifetime, requestDeadlineMs } from "../deadline.js";
import type { Principal } from "../../auth/principal.js";
import { requestGrammar } from "../structured-output.js";
import { inferenceStarted } from "../../audit/request-event.js";
import { AutoCallSplitter, CallStreamer, historyTurn, nativeChat, parseToolOutput, toolPlan, withToolPrompt, type CallSyntax, type ChatMessageText, type ParsedCall, type ToolPlan } from "../tool-calls.js";
import type { PromptInput } from "../../workers/protocol.js";
import type { PoolEntry } from "../../pool/model-pool.js";

const now = () => Math.floor(Date.now() / 1000);
const bytesOf = (s: string) => [...Buffer.from(s, "utf8")];

interface SamplingInput {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  ignore_eos?: boolean;
  min_tokens?: number;
  cache_prompt?: boolean;
}

/** Validated body fields -> worker parameters, refusing what cannot be honoured. */
export function samplingParams(body: SamplingInput, maxTokens: number | null, topLogprobs: number | null): GenerationParams {
  if (body.n !== undefined && body.n !== null && body.n !== 1) {
    throw new MoltbotError("unsupported_parameter", "'n' > 1 is not supported: send one request per choice", { param: "n" });
  }
  const stop = body.stop === undefined || body.stop === null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  return {
    maxTokens,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    seed: body.seed ?? undefined,
    minTokens: body.min_tokens ?? 0,
    ignoreEos: body.ignore_eos ?? false,
    stop: stop.filter((s) => s.length > 0),
    topLogprobs,
    cachePrompt: body.cache_prompt ?? true,
  };
}

/** The text of a message's content parts; any other kind of part is refused by name. */
function partsText(parts: Array<{ type: string; text?: string }>, i: number): string {
  return parts
    .map((p, j) => {
      if (p.type !== "text" || p.text === undefined) {
        const param = `messages[${i}].content[${j}].type`;
        throw new MoltbotError("unsupported_parameter", `${param}: '${p.type.slice(0, 64)}' content parts are not supported; send 'text' parts`, { param });
      }
      return p.text;
    })
    .join("");
}

/** The messages with their content as text (refusing what cannot be). */
function messagesText(messages: ChatCompletionBody["messages"]): ChatMessageText[] {
  return messages.map((m, i) => {
    const content = m.content === null || m.content === undefined ? "" : typeof m.content === "string" ? m.content : partsText(m.content, i);
    if ((m.content === null || m.content === undefined) && m.role !== "assistant") throw new MoltbotError("invalid_request", `messages[${i}].content is null`, { param: `messages[${i}].content` });
    return { role: m.role, content, tool_calls: m.tool_calls ?? undefined, tool_call_id: m.tool_call_id };
  });
}

/**
 * The prompt of a chat: its turns (with the generic tool prompt when tools are offered) and,
 * with tools, the chat for a model's own tool template. Checks the tool history.
 */
export function chatPrompt(messages: ChatMessageText[], plan: ToolPlan | undefined): PromptInput {
  /** Call ids of the assistant messages so far -> function names, for `role: "tool"` results. */
  const calls = new Map<string, string>();
  const turns = messages.map((m, i): ChatTurn => historyTurn(m, i, m.content, calls) ?? { role: m.role as ChatTurn["role"], content: m.content });
  if (!plan) return { kind: "chat", turns };
  return { kind: "chat", turns: withToolPrompt(turns, plan), native: nativeChat(messages, plan) };
}

/** The call syntax of the model that serves (its worker's tool template, else the generic prompt's). */
export const callSyntaxOf = (entry: PoolEntry): CallSyntax => entry.served.worker.info?.toolCallSyntax ?? "generic";

function chatLogprobs(entries: TokenLogprobEntry[] | undefined) {
  if (!entries) return null;
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob,
      bytes: bytesOf(e.token),
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytesOf(t.token) })),
    })),
  };
}

function completionLogprobs(entries: TokenLogprobEntry[] | undefined, startOffset: number) {
  if (!entries) return null;
  let offset = startOffset;
  const text_offset: number[] = [];
  for (const e of entries) {
    text_offset.push(offset);
    offset += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

function chatFormatter(id: string, model: string): ResponseFormatter {
  const created = now();
  const base = { id, object: "chat.completion.chunk", created, model, system_fingerprint: "moltbot" } as const;
  return {
    chunk: (text, lp, first) => ({
      ...base,
      choices: [{ index: 0, delta: first ? { role: "assistant", content: text } : { content: text }, logprobs: chatLogprobs(lp), finish_reason: null }],
    }),
    lastChunk: (done, usage) => ({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: done.finishReason }], usage }),
    usageChunk: (usage) => ({ ...base, choices: [], usage }),
    whole: (text, lp, done, usage) => ({
      id,
      object: "chat.completion",
      created,
      model,
      system_fingerprint: "moltbot",
      choices: [{ index: 0, message: { role: "assistant", content: text }, logprobs: chatLogprobs(lp), finish_reason: done.finishReason }],
      usage,
    }),
  };
}

/** OpenAI's tool_calls of a whole message. */
const toolCallsOf = (calls: ParsedCall[]) => calls.map((c) => ({ id: c.id, type: "function" as const, function: { name: c.name, arguments: c.arguments } }));

/**
 * The chat formatter with tools offered, for output in `syntax`. A forced call streams as OpenAI
 * streams one (each call's id and name, then its arguments in pieces); with `auto`, text is
 * streamed until a call may begin (AutoCallSplitter), the rest is held to its end and sent as
 * calls if it parses as calls, else as text.
 */
function toolChatFormatter(id: string, model: string, plan: ToolPlan, syntax: CallSyntax): ResponseFormatter {
  const plain = chatFormatter(id, model);
  if (plan.mode === "none") return plain;
  const base = { id, object: "chat.completion.chunk", created: now(), model, system_fingerprint: "moltbot" } as const;
  const delta = (d: Record<string, unknown>, finish: string | null = null) => ({ ...base, choices: [{ index: 0, delta: d, logprobs: null, finish_reason: finish }] });
  const streamer = new CallStreamer(syntax);
  const splitter = new AutoCallSplitter(syntax);
  let called = false;
  const finish = (done: GenerationDone) => (called && done.finishReason === "stop" ? "tool_calls" : done.finishReason);
  return {
    chunk: (text, lp, first) => {
      if (first && text === "") return delta({ role: "assistant", content: plan.mode === "forced" ? null : "" });
      if (plan.mode === "forced") {
        return streamer.push(text).map((e) => {
          if ("name" in e) {
            called = true;
            return delta({ tool_calls: [{ index: e.index, id: e.id, type: "function", function: { name: e.name, arguments: "" } }] });
          }
          return delta({ tool_calls: [{ index: e.index, function: { arguments: e.args } }] });
        });
      }
      const ready = splitter.push(text);
      return ready === "" ? undefined : plain.chunk(ready, lp, first);
    },
    lastChunk: (done, usage) => {
      const out: unknown[] = [];
      const held = plan.mode === "auto" ? splitter.held : "";
      if (held !== "") {
        const parsed = done.finishReason === "stop" ? parseToolOutput(held, plan, syntax) : undefined;
        if (parsed) {
          called = true;
          if (parsed.content !== null) out.push(delta({ content: parsed.content }));
          parsed.calls.forEach((c, index) => out.push(delta({ tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }] })));
        } else {
          out.push(delta({ content: held }));
        }
      }
      out.push({ ...delta({}, finish(done)), usage });
      return out;
    },
    usageChunk: plain.usageChunk,
    whole: (text, lp, done, usage) => {
      const parsed = done.finishReason === "stop" ? parseToolOutput(text, plan, syntax) : undefined;
      if (!parsed) return plain.whole(text, lp, done, usage);
      const body = plain.whole(text, lp, done, usage) as { choices: Array<Record<string, unknown>> };
      body.choices[0] = { index: 0, message: { role: "assistant", content: parsed.content, tool_calls: toolCallsOf(parsed.calls) }, logprobs: null, finish_reason: "tool_calls" };
      return body;
    },
  };
}

function completionFormatter(id: string, model: string, echo: string): ResponseFormatter {
  const created = now();
  const base = { id, object: "text_completion", created, model, system_fingerprint: "moltbot" } as const;
  let offset = echo.length;
  return {
    chunk: (text, lp, first) => {
      const out = { ...base, choices: [{ index: 0, text: first ? echo + text : text, logprobs: completionLogprobs(lp, offset), finish_reason: null }] };
      offset += text.length;
      return out;
    },
    lastChunk: (done, usage) => ({ ...base, choices: [{ index: 0, text: "", logprobs: null, finish_reason: done.finishReason }], usage }),
    usageChunk: (usage) => ({ ...base, choices: [], usage }),
    whole: (text, lp, done, usage) => ({
      ...base,
      choices: [{ index: 0, text: echo + text, logprobs: completionLogprobs(lp, echo.length), finish_reason: done.finishReason }],
      usage,
    }),
  };
}

/** `requestTimeoutMs`: server.request_timeout_ms (undefined: no deadline unless a body asks). */
export function registerOpenAIRoutes(app: FastifyInstance, pool: ModelPool, requestTimeoutMs: number | undefined): void {
  app.get("/v1/models", async (req) => ({
    object: "list",
    // A token with a `models` claim sees only the entries it may use.
    data: pool.entries.filter((e) => req.principal?.models === undefined || req.principal.models.includes(e.name)).map((e) => ({
      id: e.name,
      object: "model",
      created: e.created,
      owned_by: "moltbot",
      type: e.type,
      version: e.model.active.version,
      versions: e.model.versions,
      context_length: e.served.worker.info?.contextSize ?? null,
      // Prompts with tools use the model's own chat template (engine/chat-template.ts), else the generic tool prompt.
      tools_native: e.served.worker.info?.toolCallSyntax !== undefined,
      ready: e.served.worker.isReady(),
    })),
  }));

  app.get<{ Params: { id: string } }>("/v1/models/:id", async (req) => {
    const e = pool.entries.find((x) => x.name === req.params.id);
    if (!e) throw new MoltbotError("model_not_found", `The model '${req.params.id}' does not exist`, { param: "model" });
    if (req.principal?.models !== undefined && !req.principal.models.includes(e.name)) throw new MoltbotError("model_not_allowed", `the token may not use model '${e.name}'`, { param: "model" });
    return { id: e.name, object: "model", created: e.created, owned_by: "moltbot", version: e.model.active.version, tools_native: e.served.worker.info?.toolCallSyntax !== undefined };
  });

  app.post<{ Body: ChatCompletionBody }>("/v1/chat/completions", { schema: { body: ChatCompletionBody } }, async (req, reply) => {
    const body = req.body;
    const topLogprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
    if (!body.logprobs && body.top_logprobs) {
      throw new MoltbotError("invalid_request", "'top_logprobs' requires 'logprobs': true", { param: "top_logprobs" });
    }
    const params = samplingParams(body, body.max_completion_tokens ?? body.max_tokens ?? null, topLogprobs);
    const tools = await toolPlan(body);
    const grammar = tools?.grammar ?? (await requestGrammar(body));
    if (grammar !== undefined) params.grammar = grammar;
    if (tools?.nativeGrammars) params.nativeToolGrammars = tools.nativeGrammars;
    if (tools?.triggers) params.grammarTriggers = tools.triggers;
    if (tools?.nativeTriggers) params.nativeToolTriggers = tools.nativeTriggers;
    await serveGeneration(req, reply, {
      pool,
      model: body.model,
      prompt: chatPrompt(messagesText(body.messages), tools),
      params,
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
      format: (entry) => {
        const id = `chatcmpl-${randomUUID()}`;
        return tools ? toolChatFormatter(id, entry.name, tools, callSyntaxOf(entry)) : chatFormatter(id, entry.name);
      },
      deadlineMs: requestDeadlineMs(requestTimeoutMs, body.timeout),
    });
  });

  app.post<{ Body: CompletionBody }>("/v1/completions", { schema: { body: CompletionBody } }, async (req, reply) => {
    const body = req.body;
    if (Array.isArray(body.prompt) && body.prompt.length > 1) {
      throw new MoltbotError("unsupported_parameter", "a list of several prompts is not supported: send one request per prompt", { param: "prompt" });
    }
    if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) {
      throw new MoltbotError("unsupported_parameter", "'best_of' > 1 is not supported", { param: "best_of" });
    }
    if (body.suffix) throw new MoltbotError("unsupported_parameter", "'suffix' (fill-in-the-middle) is not supported", { param: "suffix" });
    const prompt = typeof body.prompt === "string" ? body.prompt : body.prompt[0]!;
    // OpenAI's legacy completions default to 16 tokens.
    const params = samplingParams(body, body.max_tokens === undefined ? 16 : body.max_tokens, body.logprobs ?? null);
    const grammar = await requestGrammar(body);
    if (grammar !== undefined) params.grammar = grammar;
    await serveGeneration(req, reply, {
      pool,
      model: body.model,
      prompt: { kind: "text", text: prompt },
      params,
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
      format: (entry) => completionFormatter(`cmpl-${randomUUID()}`, entry.name, body.echo ? prompt : ""),
      deadlineMs: requestDeadlineMs(requestTimeoutMs, body.timeout),
    });
  });

  app.post<{ Body: EmbeddingBody }>("/v1/embeddings", { schema: { body: EmbeddingBody } }, async (req, reply) => {
    const body = req.body;
    const outcome: InferenceOutcome = { entry: undefined, status: 200, promptTokens: 0, completionTokens: 0, cachedTokens: 0, firstTextMs: -1, doneMs: 0 };
    inferenceStarted(req);
    try {
      return await embeddings(body, reply, outcome, req.principal ?? undefined);
    } catch (err) {
      outcome.status = failedStatus(err, false);
      throw err;
    } finally {
      recordInference(req, reply, pool, body.model, "embedding", outcome);
    }
  });

  async function embeddings(body: EmbeddingBody, reply: FastifyReply, outcome: InferenceOutcome, who: Principal | undefined) {
    const inputs = typeof body.input === "string" ? [body.input] : body.input;
    // A queued embedding leaves the queue at its deadline; one already evaluating (shared with
    // other requests in one batch) finishes in the worker and is charged, but the answer is 504.
    const life = new RequestLifetime(reply, requestDeadlineMs(requestTimeoutMs, body.timeout));
    let embedded: Awaited<ReturnType<ModelPool["embed"]>>;
    try {
      embedded = await Promise.race([pool.embed(body.model, inputs, life.signal, who), life.whenEnded()]);
    } finally {
      life.close();
    }
    const { entry, version, data, promptTokens } = embedded;
    outcome.entry = entry;
    outcome.promptTokens = promptTokens;
    const dims = body.dimensions;
    if (dims !== undefined && data[0] && dims > data[0].length) {
      throw new MoltbotError("invalid_request", `'dimensions' is ${dims} but the model's embeddings have ${data[0].length}`, { param: "dimensions" });
    }
    void reply.headers(modelVersionHeader(version));
    return {
      object: "list",
      model: entry.name,
      data: data.map((vec, index) => {
        const v = dims === undefined ? vec : renormalise(vec.slice(0, dims));
        return { object: "embedding", index, embedding: body.encoding_format === "base64" ? Buffer.from(new Float32Array(v).buffer).toString("base64") : v };
      }),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    };
  }
}

function renormalise(v: number[]): number[] {
  const n = Math.hypot(...v) || 1;
  return v.map((x) => x / n);
}
