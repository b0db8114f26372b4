// OpenAI's Responses API (/v1/responses) for the part that maps onto chat: text or message
// input, instructions, max_output_tokens, text.format (the same grammar path as chat's
// response_format) and streaming with its typed events. Nothing is stored (no
// previous_response_id, no GET /v1/responses/{id}); every other part of the API is refused by
// name (400 unsupported_parameter), never silently dropped.
import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { MoltbotError } from "../../errors.js";
import type { ChatTurn } from "../../engine/types.js";
import type { ModelPool } from "../../pool/model-pool.js";
import type { GenerationDone } from "../../workers/model-worker.js";
import { ResponsesBody } from "../schemas.js";
import { serveGeneration, type ResponseFormatter, type Usage } from "../generate.js";
import { requestDeadlineMs } from "../deadline.js";
import { grammarForSchema } from "../structured-output.js";
import { SseEvents } from "../sse.js";
import { samplingParams } from "./openai.js";

/**
 * Fields of the Responses API this server does not implement, with the values that ask for
 * nothing (absent and null always do): any other value is refused by name.
 */
const UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  previous_response_id: () => false,
  conversation: () => false,
  prompt: () => false,
  reasoning: () => false,
  background: (v) => v === false,
  include: (v) => Array.isArray(v) && v.length === 0,
  tools: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === "none" || v === "auto",
  max_tool_calls: () => false,
  top_logprobs: (v) => v === 0,
  truncation: (v) => v === "disabled",
  context_management: () => false,
  moderation: () => false,
};

function refuseUnsupported(body: Record<string, unknown>): void {
  for (const [name, harmless] of Object.entries(UNSUPPORTED)) {
    const v = body[name];
    if (v === undefined || v === null || harmless(v)) continue;
    throw new MoltbotError("unsupported_parameter", `'${name}' is not supported on /v1/responses`, { param: name });
  }
  if (body.store === true) {
    throw new MoltbotError("unsupported_parameter", "'store': true is not supported: responses are never stored; send 'store': false", { param: "store" });
  }
}

function turnsOf(body: ResponsesBody): ChatTurn[] {
  const turns: ChatTurn[] = [];
  if (body.instructions) turns.push({ role: "system", content: body.instructions });
  if (typeof body.input === "string") {
    turns.push({ role: "user", content: body.input });
    return turns;
  }
  body.input.forEach((item, i) => {
    if (!("role" in item)) {
      const param = `input[${i}].type`;
      throw new MoltbotError("unsupported_parameter", `${param}: '${item.type.slice(0, 64)}' items are not supported; send 'message' items`, { param });
    }
    const content =
      typeof item.content === "string"
        ? item.content
        : item.content
            .map((p, j) => {
              if (!("text" in p)) {
                const param = `input[${i}].content[${j}].type`;
                throw new MoltbotError("unsupported_parameter", `${param}: '${p.type.slice(0, 64)}' content parts are not supported; send 'input_text' parts`, { param });
              }
              return p.text;
            })
            .join("");
    turns.push({ role: item.role, content });
  });
  return turns;
}

async function textFormatGrammar(body: ResponsesBody): Promise<string | undefined> {
  const format = body.text?.format;
  if (format === undefined || format.type === "text") return undefined;
  if (format.type === "json_object") return grammarForSchema({ type: "object", additionalProperties: true }, "text.format");
  return grammarForSchema(format.schema, "text.format.schema");
}

const hexId = () => randomUUID().replaceAll("-", "");

function responsesUsage(u: Usage) {
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details.cached_tokens },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}

/** The whole response object and the streamed events, which carry snapshots of it. */
function responsesFormatter(body: ResponsesBody, model: string): ResponseFormatter {
  const id = `resp_${hexId()}`;
  const itemId = `msg_${hexId()}`;
  const createdAt = Math.floor(Date.now() / 1000);
  const at = { item_id: itemId, output_index: 0, content_index: 0 };
  const part = (text: string) => ({ type: "output_text", text, annotations: [], logprobs: [] });
  const message = (status: string, content: unknown[]) => ({ type: "message", id: itemId, status, role: "assistant", content });
  const incomplete = (done: GenerationDone) => done.finishReason === "length";
  const response = (status: string, output: unknown[], usage: Usage | null, done?: GenerationDone) => ({
    id,
    object: "response",
    created_at: createdAt,
    status,
    error: null,
    incomplete_details: done && incomplete(done) ? { reason: "max_output_tokens" } : null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model,
    output,
    parallel_tool_calls: false,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: body.temperature ?? 1,
    text: { format: body.text?.format ?? { type: "text" } },
    tool_choice: "none",
    tools: [],
    top_p: body.top_p ?? 1,
    truncation: "disabled",
    usage: usage === null ? null : responsesUsage(usage),
    user: body.user ?? null,
    metadata: body.metadata ?? {},
  });
  const finished = (text: string, done: GenerationDone, usage: Usage) => {
    const status = incomplete(done) ? "incomplete" : "completed";
    return response(status, [message(status, [part(text)])], usage, done);
  };

  let sequence = 0;
  let text = "";
  const event = (type: string, fields: Record<string, unknown>) => ({ event: type, data: { type, sequence_number: sequence++, ...fields } });
  return {
    chunk: (delta, _lp, first) => {
      const events = [];
      if (first) {
        const snapshot = response("in_progress", [], null);
        events.push(
          event("response.created", { response: snapshot }),
          event("response.in_progress", { response: snapshot }),
          event("response.output_item.added", { output_index: 0, item: message("in_progress", []) }),
          event("response.content_part.added", { ...at, part: part("") }),
        );
      }
      if (delta.length > 0) {
        text += delta;
        events.push(event("response.output_text.delta", { ...at, delta, logprobs: [] }));
      }
      return new SseEvents(events);
    },
    lastChunk: (done, usage) => {
      const whole = finished(text, done, usage);
      return new SseEvents([
        event("response.output_text.done", { ...at, text, logprobs: [] }),
        event("response.content_part.done", { ...at, part: part(text) }),
        event("response.output_item.done", { output_index: 0, item: whole.output[0] }),
        event(whole.status === "completed" ? "response.completed" : "response.incomplete", { response: whole }),
      ]);
    },
    usageChunk: () => new SseEvents([]),
    whole: (whole, _lp, done, usage) => finished(whole, done, usage),
    streamError: (error) => new SseEvents([event("error", { code: error.code, message: error.message, param: error.param })]),
  };
}

export function registerResponsesRoute(app: FastifyInstance, pool: ModelPool, requestTimeoutMs: number | undefined): void {
  app.post<{ Body: ResponsesBody }>("/v1/responses", { schema: { body: ResponsesBody } }, async (req, reply) => {
    const body = req.body;
    refuseUnsupported(body as Record<string, unknown>);
    const params = samplingParams({ temperature: body.temperature ?? null, top_p: body.top_p ?? null }, body.max_output_tokens ?? null, null);
    const grammar = await textFormatGrammar(body);
    if (grammar !== undefined) params.grammar = grammar;
    await serveGeneration(req, reply, {
      pool,
      model: body.model,
      prompt: { kind: "chat", turns: turnsOf(body) },
      params,
      stream: body.stream === true,
      includeUsage: false,
      format: (entry) => responsesFormatter(body, entry.name),
      deadlineMs: requestDeadlineMs(requestTimeoutMs, body.timeout),
    });
  });
}
