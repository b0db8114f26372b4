// OpenAI's Responses API (/v1/responses) for the part that maps onto chat: text or message
// input, instructions, max_output_tokens, text.format (the same grammar path as chat's
// response_format), function tools (the same tool plan, prompts and call syntaxes as chat's:
// tool-calls.ts; `function_call` and `function_call_output` input items, `function_call` output
// items) and streaming with its typed events. Nothing is stored (no previous_response_id, no
// GET /v1/responses/{id}); every other part of the API is refused by name (400
// unsupported_parameter), never silently dropped.
import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { MoltbotError } from "../../errors.js";
import type { ModelPool } from "../../pool/model-pool.js";
import type { GenerationDone } from "../../workers/model-worker.js";
import { ResponsesBody } from "../schemas.js";
import { serveGeneration, type ResponseFormatter, type Usage } from "../generate.js";
import { requestDeadlineMs } from "../deadline.js";
import { grammarForSchema } from "../structured-output.js";
import { SseEvents } from "../sse.js";
import { callSyntaxOf, chatPrompt, samplingParams } from "./openai.js";
import { AutoCallSplitter, CallStreamer, parseToolOutput, toolPlan, type CallSyntax, type ChatMessageText, type ToolPlan } from "../tool-calls.js";

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

type InputItem = Exclude<ResponsesBody["input"], string>[number];
type FunctionCallItem = Extract<InputItem, { call_id: string; name: string }>;
type FunctionCallOutputItem = Extract<InputItem, { call_id: string; output: unknown }>;

/** The text of input content parts; any other kind of part is refused by name. */
function partsText(content: string | Array<{ type: string; text?: string }>, at: string): string {
  if (typeof content === "string") return content;
  return content
    .map((p, j) => {
      if (p.text === undefined) {
        const param = `${at}[${j}].type`;
        throw new MoltbotError("unsupported_parameter", `${param}: '${p.type.slice(0, 64)}' content parts are not supported; send 'input_text' parts`, { param });
      }
      return p.text;
    })
    .join("");
}

/**
 * The input as chat messages: message items as they are, `function_call` items as an assistant
 * message's tool_calls (consecutive calls, and calls after an assistant's text, join that
 * message), `function_call_output` items as tool results, which must answer an earlier call.
 */
function messagesOf(body: ResponsesBody): ChatMessageText[] {
  const messages: ChatMessageText[] = [];
  if (body.instructions) messages.push({ role: "system", content: body.instructions });
  if (typeof body.input === "string") {
    messages.push({ role: "user", content: body.input });
    return messages;
  }
  const callIds = new Set<string>();
  body.input.forEach((item, i) => {
    if ("role" in item) {
      messages.push({ role: item.role, content: partsText(item.content, `input[${i}].content`) });
      return;
    }
    if (item.type === "function_call") {
      const c = item as FunctionCallItem;
      try {
        JSON.parse(c.arguments);
      } catch {
        throw new MoltbotError("invalid_request", `input[${i}].arguments is not JSON`, { param: `input[${i}].arguments` });
      }
      callIds.add(c.call_id);
      const call = { id: c.call_id, function: { name: c.name, arguments: c.arguments } };
      const last = messages.at(-1);
      if (last?.role === "assistant") last.tool_calls = [...(last.tool_calls ?? []), call];
      else messages.push({ role: "assistant", content: "", tool_calls: [call] });
      return;
    }
    if (item.type === "function_call_output") {
      const o = item as FunctionCallOutputItem;
      if (!callIds.has(o.call_id)) {
        const param = `input[${i}].call_id`;
        throw new MoltbotError("invalid_request", `${param}: '${o.call_id.slice(0, 64)}' answers no function_call item before it`, { param });
      }
      messages.push({ role: "tool", content: partsText(o.output, `input[${i}].output`), tool_call_id: o.call_id });
      return;
    }
    const param = `input[${i}].type`;
    throw new MoltbotError("unsupported_parameter", `${param}: '${item.type.slice(0, 64)}' items are not supported; send 'message', 'function_call' or 'function_call_output' items`, { param });
  });
  return messages;
}

/**
 * The request's tool plan (tool-calls.ts) from the Responses API's flat tool and tool_choice
 * shapes; tool types other than `function` are refused by name. The plan's refusals name the
 * chat shape's fields (`tools[0].function.name`): they are renamed to this API's.
 */
async function responsesToolPlan(body: ResponsesBody): Promise<ToolPlan | undefined> {
  const tools = (body.tools ?? []).map((t, i) => {
    if (t.type !== "function" || !("name" in t)) {
      const param = `tools[${i}].type`;
      throw new MoltbotError("unsupported_parameter", `${param}: '${t.type.slice(0, 64)}' tools are not supported; send 'function' tools`, { param });
    }
    return { type: "function" as const, function: { name: t.name, ...(t.description ? { description: t.description } : {}), ...(t.parameters ? { parameters: t.parameters } : {}) } };
  });
  const choice = body.tool_choice;
  if (typeof choice === "object" && choice !== null && !("name" in choice)) {
    throw new MoltbotError("unsupported_parameter", `tool_choice.type: '${choice.type.slice(0, 64)}' is not supported; send 'none', 'auto', 'required' or a function`, { param: "tool_choice.type" });
  }
  try {
    return await toolPlan({
      tools,
      tool_choice: typeof choice === "object" && choice !== null ? { type: "function", function: { name: choice.name } } : (choice ?? null),
      parallel_tool_calls: body.parallel_tool_calls ?? null,
      response_format: body.text?.format ? { type: body.text.format.type } : null,
    });
  } catch (err) {
    if (!(err instanceof MoltbotError)) throw err;
    const rename = (s: string) => s.replaceAll(".function.", ".").replaceAll("'response_format'", "'text.format'");
    throw new MoltbotError(err.code, rename(err.message), err.param === undefined ? undefined : { param: rename(err.param) });
  }
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

type Event = { event: string; data: Record<string, unknown> };

/**
 * The output items of one response as they are streamed: at most one message (its text), then
 * function calls, each item opened (`response.output_item.added`), filled by deltas and closed
 * (`response.output_item.done`) in output order, as OpenAI streams them.
 */
class OutputItems {
  /** The items so far, by output index: what the response object's `output` holds. */
  readonly items: Array<Record<string, unknown>> = [];
  private message: { index: number; id: string; text: string } | undefined;
  private call: { index: number; item: Record<string, unknown> } | undefined;

  constructor(private readonly event: (type: string, fields: Record<string, unknown>) => Event) {}

  private static part(text: string) {
    return { type: "output_text", text, annotations: [], logprobs: [] };
  }

  /** Opens the message item (once). */
  openMessage(out: Event[]): void {
    if (this.message !== undefined || this.items.some((i) => i.type === "message")) return;
    const index = this.items.length;
    const id = `msg_${hexId()}`;
    this.message = { index, id, text: "" };
    this.items.push({ type: "message", id, status: "in_progress", role: "assistant", content: [] });
    out.push(
      this.event("response.output_item.added", { output_index: index, item: this.items[index] }),
      this.event("response.content_part.added", { item_id: id, output_index: index, content_index: 0, part: OutputItems.part("") }),
    );
  }

  text(delta: string, out: Event[]): void {
    if (delta === "") return;
    this.openMessage(out);
    const m = this.message!;
    m.text += delta;
    out.push(this.event("response.output_text.delta", { item_id: m.id, output_index: m.index, content_index: 0, delta, logprobs: [] }));
  }

  private closeMessage(status: string, out: Event[]): void {
    const m = this.message;
    if (m === undefined) return;
    this.message = undefined;
    const at = { item_id: m.id, output_index: m.index, content_index: 0 };
    const part = OutputItems.part(m.text);
    this.items[m.index] = { type: "message", id: m.id, status, role: "assistant", content: [part] };
    out.push(
      this.event("response.output_text.done", { ...at, text: m.text, logprobs: [] }),
      this.event("response.content_part.done", { ...at, part }),
      this.event("response.output_item.done", { output_index: m.index, item: this.items[m.index] }),
    );
  }

  /** Opens a function call item (closing the item before it). */
  openCall(callId: string, name: string, out: Event[]): void {
    this.closeMessage("completed", out);
    this.closeCall("completed", out);
    const index = this.items.length;
    const item = { type: "function_call", id: `fc_${hexId()}`, call_id: callId, name, arguments: "", status: "in_progress" };
    this.items.push(item);
    this.call = { index, item };
    out.push(this.event("response.output_item.added", { output_index: index, item: { ...item } }));
  }

  args(delta: string, out: Event[]): void {
    const c = this.call;
    if (c === undefined || delta === "") return;
    c.item.arguments = `${c.item.arguments as string}${delta}`;
    out.push(this.event("response.function_call_arguments.delta", { item_id: c.item.id, output_index: c.index, delta }));
  }

  private closeCall(status: string, out: Event[]): void {
    const c = this.call;
    if (c === undefined) return;
    this.call = undefined;
    c.item.status = status;
    out.push(
      this.event("response.function_call_arguments.done", { item_id: c.item.id, output_index: c.index, name: c.item.name, arguments: c.item.arguments }),
      this.event("response.output_item.done", { output_index: c.index, item: c.item }),
    );
  }

  /** Closes what is open; a response with no item at all gets an empty message. */
  close(status: string, out: Event[]): void {
    if (this.items.length === 0) this.openMessage(out);
    this.closeMessage(status, out);
    this.closeCall(status, out);
  }
}

/** The whole response object and the streamed events, which carry snapshots of it. */
function responsesFormatter(body: ResponsesBody, model: string, tools: { plan: ToolPlan; syntax: CallSyntax } | undefined): ResponseFormatter {
  const id = `resp_${hexId()}`;
  const createdAt = Math.floor(Date.now() / 1000);
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
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: body.temperature ?? 1,
    text: { format: body.text?.format ?? { type: "text" } },
    tool_choice: body.tool_choice ?? (tools ? "auto" : "none"),
    tools: body.tools ?? [],
    top_p: body.top_p ?? 1,
    truncation: "disabled",
    usage: usage === null ? null : responsesUsage(usage),
    user: body.user ?? null,
    metadata: body.metadata ?? {},
  });
  const statusOf = (done: GenerationDone) => (incomplete(done) ? "incomplete" : "completed");

  let sequence = 0;
  const event = (type: string, fields: Record<string, unknown>): Event => ({ event: type, data: { type, sequence_number: sequence++, ...fields } });
  const items = new OutputItems(event);
  const mode = tools?.plan.mode ?? "none";
  const streamer = mode === "forced" ? new CallStreamer(tools!.syntax) : undefined;
  const splitter = mode === "auto" ? new AutoCallSplitter(tools!.syntax) : undefined;
  /** The calls of a finished output (undefined: it is text), in the serving model's syntax. */
  const parsed = (text: string, done: GenerationDone) => (tools && mode !== "none" && done.finishReason === "stop" ? parseToolOutput(text, tools.plan, tools.syntax) : undefined);
  /** Writes a finished output's text and calls as items. */
  const writeOutput = (text: string, done: GenerationDone, out: Event[]) => {
    const calls = parsed(text, done);
    if (!calls) return items.text(text, out);
    if (calls.content !== null) items.text(calls.content, out);
    for (const c of calls.calls) {
      items.openCall(c.id, c.name, out);
      items.args(c.arguments, out);
    }
  };
  return {
    chunk: (delta, _lp, first) => {
      const out: Event[] = [];
      if (first) {
        const snapshot = response("in_progress", [], null);
        out.push(event("response.created", { response: snapshot }), event("response.in_progress", { response: snapshot }));
        // Text (no tools, or `none`) opens its message at once; calls open their items as they come.
        if (mode === "none") items.openMessage(out);
      }
      if (streamer) {
        for (const e of streamer.push(delta)) {
          if ("name" in e) items.openCall(e.id, e.name, out);
          else items.args(e.args, out);
        }
      } else if (splitter) {
        items.text(splitter.push(delta), out);
      } else {
        items.text(delta, out);
      }
      return new SseEvents(out);
    },
    lastChunk: (done, usage) => {
      const out: Event[] = [];
      if (splitter && splitter.held !== "") writeOutput(splitter.held, done, out);
      const status = statusOf(done);
      items.close(status, out);
      const whole = response(status, items.items, usage, done);
      out.push(event(status === "completed" ? "response.completed" : "response.incomplete", { response: whole }));
      return new SseEvents(out);
    },
    usageChunk: () => new SseEvents([]),
    whole: (text, _lp, done, usage) => {
      const out: Event[] = [];
      writeOutput(text, done, out);
      const status = statusOf(done);
      items.close(status, out);
      return response(status, items.items, usage, done);
    },
    streamError: (error) => new SseEvents([event("error", { code: error.code, message: error.message, param: error.param })]),
  };
}

export function registerResponsesRoute(app: FastifyInstance, pool: ModelPool, requestTimeoutMs: number | undefined): void {
  app.post<{ Body: ResponsesBody }>("/v1/responses", { schema: { body: ResponsesBody } }, async (req, reply) => {
    const body = req.body;
    refuseUnsupported(body as Record<string, unknown>);
    const params = samplingParams({ temperature: body.temperature ?? null, top_p: body.top_p ?? null }, body.max_output_tokens ?? null, null);
    const plan = await responsesToolPlan(body);
    const grammar = plan?.grammar ?? (await textFormatGrammar(body));
    if (grammar !== undefined) params.grammar = grammar;
    if (plan?.nativeGrammars) params.nativeToolGrammars = plan.nativeGrammars;
    if (plan?.triggers) params.grammarTriggers = plan.triggers;
    if (plan?.nativeTriggers) params.nativeToolTriggers = plan.nativeTriggers;
    await serveGeneration(req, reply, {
      pool,
      model: body.model,
      prompt: chatPrompt(messagesOf(body), plan),
      params,
      stream: body.stream === true,
      includeUsage: false,
      format: (entry) => responsesFormatter(body, entry.name, plan && { plan, syntax: callSyntaxOf(entry) }),
      deadlineMs: requestDeadlineMs(requestTimeoutMs, body.timeout),
    });
  });
}
