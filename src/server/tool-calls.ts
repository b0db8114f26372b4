// Tool calling on /v1/chat/completions and /v1/responses (docs/architecture.md, "tool calling").
// Every request with tools carries two renderings of its chat, and the worker that serves it
// picks one (workers/generation.ts): a model whose Jinja chat template has a tool section we can
// parse back (engine/chat-template.ts: Hermes/Qwen `<tool_call>` blocks, Llama 3.1 JSON calls)
// gets the chat in OpenAI's shape for its own template; any other model gets our generic tool
// prompt, which describes the tools in a system turn and asks for a call as JSON
// `{"name": ..., "arguments": {...}}` (an array of them for parallel calls), with the history
// rendered as turns any template understands (an assistant's `tool_calls` become that same JSON
// as its text, a `role: "tool"` result a user turn naming the call).
//
// `tool_choice: "required"` or a named function constrains the output with a grammar built from
// the functions' parameter schemas (structured-output.ts), one per call syntax, so it always
// parses and validates; `auto` makes the same grammar lazy (it applies from where a call starts,
// GenerationParams.grammarTriggers), so text stays free but a call, once begun, parses, and
// looks for a call in the output once it is complete; `none`
// describes the tools and asks for text. The output is parsed in the syntax of the model that
// served (`CallSyntax`).
import { randomBytes } from "node:crypto";
import { MoltbotError } from "../errors.js";
import type { ChatTurn, GrammarTriggers } from "../engine/types.js";
import type { NativeChat, TemplateMessage, ToolCallSyntax } from "../engine/chat-template.js";
import { grammarForSchema } from "./structured-output.js";

type Schema = Record<string, unknown>;

/** The body fields this module reads. */
export interface ToolsInput {
  tools?: Array<{ type: "function"; function: { name: string; description?: string; parameters?: Schema } }> | null;
  tool_choice?: "none" | "auto" | "required" | { type: "function"; function: { name: string } } | null;
  parallel_tool_calls?: boolean | null;
  response_format?: { type: string } | null;
  grammar?: string | null;
}

export interface HistoryMessage {
  role: string;
  tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }> | null;
  tool_call_id?: string;
}

interface FunctionDef {
  name: string;
  description: string | undefined;
  parameters: Schema;
}

/** What a request asks of tool calling, validated. */
export interface ToolPlan {
  functions: FunctionDef[];
  /** `forced`: the output is grammar-constrained to a call (required, or a named function). */
  mode: "none" | "auto" | "forced";
  /** Calls come as a JSON array (parallel calls allowed and more than one function may be chosen). */
  array: boolean;
  /** The GBNF of a call in the generic syntax (forced, or lazy with `auto`). */
  grammar?: string;
  /** The GBNF of a call in each native syntax (the worker picks its template's). */
  nativeGrammars?: Record<ToolCallSyntax, string>;
  /** With `auto`: where a call starts in each syntax, making the grammars above lazy. */
  triggers?: GrammarTriggers;
  nativeTriggers?: Record<ToolCallSyntax, GrammarTriggers>;
}

/** How a model writes calls: our generic prompt's JSON, or its own template's syntax. */
export type CallSyntax = "generic" | ToolCallSyntax;

export interface ParsedCall {
  id: string;
  name: string;
  /** JSON text, as OpenAI sends it. */
  arguments: string;
}

// An object with no properties: OpenAI's meaning of a function without `parameters`.
const NO_PARAMETERS: Schema = { type: "object", properties: {}, additionalProperties: false };
// A cap on parallel calls in one forced answer, so a model that never closes the array stops.
const MAX_PARALLEL = 8;

export const callId = () => `call_${randomBytes(12).toString("base64url")}`;

/**
 * The request's tool plan (undefined without tools), refusing with a 400 naming the field:
 * duplicate names, a choice naming an unknown function, a forced call beside another grammar.
 */
export async function toolPlan(body: ToolsInput): Promise<ToolPlan | undefined> {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? (tools.length > 0 ? "auto" : "none");
  if (tools.length === 0) {
    if (choice !== "none" && choice !== "auto") throw new MoltbotError("invalid_request", "'tool_choice' requires 'tools'", { param: "tool_choice" });
    return undefined;
  }
  const seen = new Map<string, number>();
  const functions = tools.map((t, i): FunctionDef => {
    const name = t.function.name;
    const before = seen.get(name);
    if (before !== undefined) {
      throw new MoltbotError("invalid_request", `tools[${i}].function.name: '${name}' is already the name of tools[${before}]`, { param: `tools[${i}].function.name` });
    }
    seen.set(name, i);
    return { name, description: t.function.description, parameters: t.function.parameters ?? NO_PARAMETERS };
  });
  let chosen = functions;
  if (typeof choice === "object") {
    const f = functions.find((x) => x.name === choice.function.name);
    if (!f) throw new MoltbotError("invalid_request", `tool_choice.function.name: '${choice.function.name.slice(0, 64)}' is not among the tools`, { param: "tool_choice.function.name" });
    chosen = [f];
  }
  const mode = choice === "none" ? "none" : choice === "auto" ? "auto" : "forced";
  const array = (body.parallel_tool_calls ?? true) && chosen.length > 1;
  const plan: ToolPlan = { functions, mode, array };
  if (mode === "auto") return lazyCallGrammars(plan, body);
  if (mode !== "forced") return plan;
  if (body.grammar || (body.response_format && body.response_format.type !== "text")) {
    throw new MoltbotError("invalid_request", "a forced tool call cannot be combined with 'response_format' or 'grammar'", { param: "tool_choice" });
  }
  // Each function's schema is checked on its own first, so a refusal names that function.
  for (const f of chosen) await grammarForSchema(f.parameters, `tools[${functions.indexOf(f)}].function.parameters`);
  const call = (f: FunctionDef): Schema => ({
    type: "object",
    // `name` first: a stream can name the call before its arguments are written.
    properties: { name: { const: f.name }, arguments: f.parameters },
    required: ["name", "arguments"],
    additionalProperties: false,
  });
  const one = chosen.length === 1 ? call(chosen[0]!) : { oneOf: chosen.map(call) };
  const schema = array ? { type: "array", items: one, minItems: 1, maxItems: MAX_PARALLEL } : one;
  plan.grammar = await grammarForSchema(schema, "tools");
  // Llama 3.1's JSON call names its arguments `parameters`; its templates write one call a turn.
  const llamaCall = (f: FunctionDef): Schema => ({
    type: "object",
    properties: { name: { const: f.name }, parameters: f.parameters },
    required: ["name", "parameters"],
    additionalProperties: false,
  });
  plan.nativeGrammars = {
    hermes: hermesGrammar(array ? await grammarForSchema(one, "tools") : plan.grammar, array),
    llama3: await grammarForSchema(chosen.length === 1 ? llamaCall(chosen[0]!) : { oneOf: chosen.map(llamaCall) }, "tools"),
  };
  return plan;
}

/**
 * `auto`: the call grammars, lazy. A call starts (as AutoCallSplitter holds it back) at the
 * output's first non-space character when that is `{` (`[` too for parallel generic calls),
 * or at `<tool_call>` (Hermes); llama.cpp's server triggers its lazy grammars the same way. A
 * request that has its own grammar or response_format, or a function whose parameters no
 * grammar enforces, keeps free output (malformed calls are then text, as before).
 */
async function lazyCallGrammars(plan: ToolPlan, body: ToolsInput): Promise<ToolPlan> {
  if (body.grammar || (body.response_format && body.response_format.type !== "text")) return plan;
  try {
    const one = await grammarForSchema(oneOfCalls(plan.functions, "arguments"), "tools");
    const generic = plan.array
      ? await grammarForSchema({ anyOf: [oneOfCalls(plan.functions, "arguments"), { type: "array", items: oneOfCalls(plan.functions, "arguments"), minItems: 1, maxItems: MAX_PARALLEL }] }, "tools")
      : one;
    plan.grammar = withLeadingSpace(generic);
    plan.nativeGrammars = {
      hermes: hermesGrammar(one, plan.array),
      llama3: withLeadingSpace(await grammarForSchema(oneOfCalls(plan.functions, "parameters"), "tools")),
    };
  } catch (err) {
    if (err instanceof MoltbotError) return plan;
    throw err;
  }
  const jsonStart = { patterns: [plan.array ? String.raw`^\s*[{[]` : String.raw`^\s*\{`] };
  plan.triggers = jsonStart;
  plan.nativeTriggers = { hermes: { patterns: [HERMES_OPEN] }, llama3: { patterns: [String.raw`^\s*\{`] } };
  return plan;
}

/** The schema of one call of any of the functions, its arguments under `argsKey`. */
function oneOfCalls(functions: FunctionDef[], argsKey: "arguments" | "parameters"): Schema {
  const call = (f: FunctionDef): Schema => ({
    type: "object",
    properties: { name: { const: f.name }, [argsKey]: f.parameters },
    required: ["name", argsKey],
    additionalProperties: false,
  });
  return functions.length === 1 ? call(functions[0]!) : { oneOf: functions.map(call) };
}

/** A lazy JSON call's grammar also takes the spaces before the `{` (its trigger starts at the output's start). */
function withLeadingSpace(callGbnf: string): string {
  return [String.raw`root ::= [ \t\n]* tool-call-json`, callGbnf.replace(/^root(\s*::=)/m, "tool-call-json$1")].join("\n");
}

const HERMES_OPEN = "<tool_call>";
const HERMES_CLOSE = "</tool_call>";

/**
 * Hermes/Qwen calls: each call's JSON (the generic call grammar, its root renamed) in a
 * `<tool_call>` block, as these templates print calls in the history. The converter names its
 * rules `rule0`, `val0`, `string-rule`..., never `tool-call-*`, and never refers back to `root`.
 */
function hermesGrammar(callGbnf: string, array: boolean): string {
  const json = callGbnf.replace(/^root(\s*::=)/m, "tool-call-json$1");
  const root = array ? `root ::= tool-call-block ("\\n" tool-call-block){0,${MAX_PARALLEL - 1}}` : "root ::= tool-call-block";
  return [root, `tool-call-block ::= "${HERMES_OPEN}\\n" tool-call-json "\\n${HERMES_CLOSE}"`, json].join("\n");
}

/** The system text describing the tools (the generic tool prompt). */
export function toolPrompt(plan: ToolPlan): string {
  const lines = ["You can call these functions (tools):"];
  for (const f of plan.functions) {
    lines.push(`- ${f.name}${f.description ? `: ${f.description}` : ""}`, `  parameters (JSON Schema): ${JSON.stringify(f.parameters)}`);
  }
  if (plan.mode === "none") {
    lines.push("Do not call a function now: answer in plain text.");
  } else {
    lines.push(
      'To call a function, answer with only this JSON and nothing else: {"name": "<function name>", "arguments": {<arguments matching its parameters>}}',
      plan.array ? "To call several functions at once, answer with a JSON array of such objects." : "Call one function at a time.",
      "A function's result comes back in a later message; then answer the user.",
    );
    if (plan.mode === "auto") lines.push("If no function is needed, answer in plain text.");
  }
  return lines.join("\n");
}

/** Adds the tool prompt to the turns: into the leading system turn, else as a new first turn. */
export function withToolPrompt(turns: ChatTurn[], plan: ToolPlan): ChatTurn[] {
  const text = toolPrompt(plan);
  const first = turns[0];
  if (first && (first.role === "system" || first.role === "developer")) return [{ role: first.role, content: `${first.content}\n\n${text}` }, ...turns.slice(1)];
  return [{ role: "system", content: text }, ...turns];
}

/**
 * Checks the tool history (every `role: "tool"` message answers a call id of an earlier assistant
 * message) and renders a message as a turn; `content` is its text. Returns undefined for messages
 * that are neither tool results nor assistant calls (the caller renders those as they are).
 */
export function historyTurn(m: HistoryMessage, i: number, content: string, calls: Map<string, string>): ChatTurn | undefined {
  if (m.role === "assistant" && m.tool_calls && m.tool_calls.length > 0) {
    const json = m.tool_calls.map((c, j) => {
      calls.set(c.id, c.function.name);
      let args: unknown;
      try {
        args = JSON.parse(c.function.arguments);
      } catch {
        const param = `messages[${i}].tool_calls[${j}].function.arguments`;
        throw new MoltbotError("invalid_request", `${param} is not JSON`, { param });
      }
      return JSON.stringify({ name: c.function.name, arguments: args });
    });
    const call = json.length === 1 ? json[0]! : `[${json.join(", ")}]`;
    return { role: "assistant", content: content ? `${content}\n${call}` : call };
  }
  if (m.role !== "tool") return undefined;
  const id = m.tool_call_id;
  const param = `messages[${i}].tool_call_id`;
  if (id === undefined) throw new MoltbotError("invalid_request", `${param} is required for a 'tool' message`, { param });
  const name = calls.get(id);
  if (name === undefined) throw new MoltbotError("invalid_request", `${param}: '${id.slice(0, 64)}' answers no tool call of an earlier assistant message`, { param });
  return { role: "user", content: `Result of the function call ${name} (${id}):\n${content}` };
}

/** A message of the chat, its content already text (the routes check the history with `historyTurn`). */
export interface ChatMessageText {
  role: string;
  content: string;
  tool_calls?: HistoryMessage["tool_calls"];
  tool_call_id?: string | undefined;
}

/**
 * The chat and tools in the shape Hugging Face chat templates take (OpenAI's, with a call's
 * arguments as an object and a tool result's function name), for a model's own template.
 */
export function nativeChat(messages: ChatMessageText[], plan: ToolPlan): NativeChat {
  const names = new Map<string, string>();
  const out = messages.map((m): TemplateMessage => {
    if (m.role === "assistant" && m.tool_calls && m.tool_calls.length > 0) {
      const calls = m.tool_calls.map((c) => {
        names.set(c.id, c.function.name);
        return { id: c.id, type: "function" as const, function: { name: c.function.name, arguments: JSON.parse(c.function.arguments) as Record<string, unknown> } };
      });
      return { role: "assistant", content: m.content, tool_calls: calls };
    }
    if (m.role === "tool") {
      const id = m.tool_call_id ?? "";
      const name = names.get(id);
      return { role: "tool", content: m.content, tool_call_id: id, ...(name === undefined ? {} : { name }) };
    }
    return { role: m.role === "developer" ? "system" : (m.role as TemplateMessage["role"]), content: m.content };
  });
  const tools = plan.functions.map((f) => ({
    type: "function" as const,
    function: { name: f.name, ...(f.description === undefined ? {} : { description: f.description }), parameters: f.parameters },
  }));
  return { messages: out, tools };
}

/** The calls in a complete output, or undefined when it is not (only) a call of the offered functions. */
export function parseCalls(text: string, plan: ToolPlan): ParsedCall[] | undefined {
  const t = text.trim();
  if (!t.startsWith("{") && !t.startsWith("[")) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(t);
  } catch {
    return undefined;
  }
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0 || (Array.isArray(value) && !plan.array && plan.mode !== "auto")) return undefined;
  const names = new Set(plan.functions.map((f) => f.name));
  const calls: ParsedCall[] = [];
  for (const c of list) {
    if (typeof c !== "object" || c === null) return undefined;
    const { name, arguments: args } = c as { name?: unknown; arguments?: unknown };
    if (typeof name !== "string" || !names.has(name)) return undefined;
    const parsed = typeof args === "string" ? safeParse(args) : args;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
    calls.push({ id: callId(), name, arguments: JSON.stringify(parsed) });
  }
  return calls;
}

/** A complete output as a message: text content (null when none) and calls. */
export interface ParsedOutput {
  content: string | null;
  calls: ParsedCall[];
}

/** One call object of an offered function (its arguments an object, or JSON text of one). */
function callOf(value: unknown, names: Set<string>, argsKey: "arguments" | "parameters"): ParsedCall | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const o = value as Record<string, unknown>;
  const args = o[argsKey] ?? o.arguments;
  if (typeof o.name !== "string" || !names.has(o.name)) return undefined;
  const parsed = typeof args === "string" ? safeParse(args) : args;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  return { id: callId(), name: o.name, arguments: JSON.stringify(parsed) };
}

/**
 * A complete output in the serving model's call syntax, or undefined when it holds no call, or a
 * malformed one (then it is all text, as llama.cpp's server answers it):
 * - generic: the whole output is one call object (or an array of them, parallel calls);
 * - hermes: text, then `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the
 *   last one's closing tag may be missing at the end of the output);
 * - llama3: the whole output is `{"name": ..., "parameters": {...}}` (after an optional
 *   `<|python_tag|>`).
 */
export function parseToolOutput(text: string, plan: ToolPlan, syntax: CallSyntax): ParsedOutput | undefined {
  const names = new Set(plan.functions.map((f) => f.name));
  if (syntax === "hermes") return parseHermes(text, names);
  if (syntax === "llama3") {
    const call = callOf(safeParse(text.trim().replace(/^<\|python_tag\|>/, "")), names, "parameters");
    return call && { content: null, calls: [call] };
  }
  const calls = parseCalls(text, plan);
  return calls && { content: null, calls };
}

function parseHermes(text: string, names: Set<string>): ParsedOutput | undefined {
  let pos = text.indexOf(HERMES_OPEN);
  if (pos < 0) return undefined;
  let outside = text.slice(0, pos);
  const calls: ParsedCall[] = [];
  while (pos < text.length) {
    const open = text.indexOf(HERMES_OPEN, pos);
    if (open < 0) {
      outside += text.slice(pos);
      break;
    }
    outside += text.slice(pos, open);
    const start = open + HERMES_OPEN.length;
    const close = text.indexOf(HERMES_CLOSE, start);
    const call = callOf(safeParse((close < 0 ? text.slice(start) : text.slice(start, close)).trim()), names, "arguments");
    if (!call) return undefined;
    calls.push(call);
    pos = close < 0 ? text.length : close + HERMES_CLOSE.length;
  }
  const content = outside.trim();
  return { content: content === "" ? null : content, calls };
}

/**
 * With `tool_choice: auto`, splits a streamed output into text that can go to the client at once
 * and text held back because a call may have begun there: the whole output once it starts with
 * `{`/`[` (generic, llama3), from a `<tool_call>` on (hermes; the tail that could be the start
 * of one is held until the next delta tells).
 */
export class AutoCallSplitter {
  private text = "";
  private sent = 0;
  private decided: "text" | "call" | undefined;

  constructor(private readonly syntax: CallSyntax) {}

  /** Adds a delta; returns the text that may be sent now ("" when none). */
  push(delta: string): string {
    this.text += delta;
    if (this.decided === "call") return "";
    let hold = this.text.length;
    if (this.decided === undefined && this.syntax === "hermes") {
      const at = this.text.indexOf(HERMES_OPEN, Math.max(0, this.sent - HERMES_OPEN.length));
      if (at >= 0) {
        this.decided = "call";
        hold = at;
      } else {
        hold = this.text.length - partialSuffix(this.text, HERMES_OPEN);
      }
    } else if (this.decided === undefined) {
      const start = this.text.trimStart();
      if (start === "") hold = 0;
      else if (start[0] === "{" || start[0] === "[" || start.startsWith("<|python_tag|>")) this.decided = "call";
      else this.decided = "text";
      if (this.decided === "call") hold = 0;
    }
    const out = this.text.slice(this.sent, Math.max(this.sent, hold));
    this.sent = Math.max(this.sent, hold);
    return out;
  }

  /** The text held back (where a call may be), at the end of the output. */
  get held(): string {
    return this.text.slice(this.sent);
  }
}

/** The length of the longest end of `text` that is a proper beginning of `marker`. */
function partialSuffix(text: string, marker: string): number {
  for (let k = Math.min(marker.length - 1, text.length); k > 0; k--) {
    if (text.endsWith(marker.slice(0, k))) return k;
  }
  return 0;
}

function safeParse(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** A streamed call's events: its start (index, id, name), then its arguments in pieces. */
export type CallEvent = { index: number; id: string; name: string } | { index: number; args: string };

// The head of one call as the grammar writes it (`name` before `arguments`) in each syntax,
// after what may come before it: an array's `[`, or the end of the call before (`}`) and a comma.
const CALL_HEAD: Record<CallSyntax, RegExp> = {
  generic: /^[\s[,}]*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*/,
  // After the call before it: its `}`, `</tool_call>` and a newline.
  hermes: /^(?:\s|\}|<\/tool_call>)*<tool_call>\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*/,
  llama3: /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"parameters"\s*:\s*/,
};

/**
 * Follows a forced call's text as it is generated: holds it until a call's name is known, then
 * passes its `arguments` value on piece by piece (a small JSON scanner finds where it ends).
 * Hand-written: a streaming JSON parser library would not say where a value's text ends.
 */
export class CallStreamer {
  private pending = "";
  private index = -1;
  private inArgs = false;
  private depth = 0;
  private inString = false;
  private escaped = false;
  private readonly head: RegExp;

  constructor(syntax: CallSyntax = "generic") {
    this.head = CALL_HEAD[syntax];
  }

  push(delta: string): CallEvent[] {
    const events: CallEvent[] = [];
    this.pending += delta;
    for (;;) {
      if (!this.inArgs) {
        const m = this.head.exec(this.pending);
        if (!m) return events;
        this.index += 1;
        events.push({ index: this.index, id: callId(), name: JSON.parse(m[1]!) as string });
        this.pending = this.pending.slice(m[0].length);
        this.inArgs = true;
        this.depth = 0;
      }
      // Whitespace before the value (a piece may end right after the colon) is not part of it.
      if (this.depth === 0 && !this.inString) this.pending = this.pending.trimStart();
      let end = -1;
      for (let k = 0; k < this.pending.length; k++) {
        const ch = this.pending[k]!;
        if (this.inString) {
          if (this.escaped) this.escaped = false;
          else if (ch === "\\") this.escaped = true;
          else if (ch === '"') this.inString = false;
        } else if (ch === '"') this.inString = true;
        else if (ch === "{" || ch === "[") this.depth += 1;
        else if (ch === "}" || ch === "]") {
          this.depth -= 1;
          if (this.depth === 0) {
            end = k + 1;
            break;
          }
        }
      }
      const piece = end < 0 ? this.pending : this.pending.slice(0, end);
      if (piece.length > 0) events.push({ index: this.index, args: piece });
      if (end < 0) {
        this.pending = "";
        return events;
      }
      // The rest (the call's `}`, perhaps the next call of an array) is matched by CALL_HEAD.
      this.pending = this.pending.slice(end);
      this.inArgs = false;
    }
  }
}
