// Tool calling on /v1/chat/completions with a generic tool prompt (docs/architecture.md,
// "Tool calling"). Native chat templates with tool sections are not used yet: every model gets
// our own prompt, which describes the tools in a system turn and asks for a call as JSON
// `{"name": ..., "arguments": {...}}` (an array of them for parallel calls). History in OpenAI's
// shape is rendered as turns any template understands: an assistant's `tool_calls` become that
// same JSON as the assistant's text, a `role: "tool"` result becomes a user turn naming the call.
//
// `tool_choice: "required"` or a named function constrains the output with a grammar built from
// the functions' parameter schemas (structured-output.ts), so it always parses and validates;
// `auto` looks for a JSON call in the output once it is complete; `none` describes the tools
// and asks for text.
import { randomBytes } from "node:crypto";
import { MoltbotError } from "../errors.js";
import type { ChatTurn } from "../engine/types.js";
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
  /** The GBNF of a forced call. */
  grammar?: string;
}

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
  return plan;
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

function safeParse(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** A streamed call's events: its start (index, id, name), then its arguments in pieces. */
export type CallEvent = { index: number; id: string; name: string } | { index: number; args: string };

// The head of one call as the grammar writes it (`name` before `arguments`), after what may
// come before it: an array's `[`, or the end of the call before (`}`) and a comma.
const CALL_HEAD = /^[\s[,}]*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*/;

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

  push(delta: string): CallEvent[] {
    const events: CallEvent[] = [];
    this.pending += delta;
    for (;;) {
      if (!this.inArgs) {
        const m = CALL_HEAD.exec(this.pending);
        if (!m) return events;
        this.index += 1;
        events.push({ index: this.index, id: callId(), name: JSON.parse(m[1]!) as string });
        this.pending = this.pending.slice(m[0].length);
        this.inArgs = true;
        this.depth = 0;
      }
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
