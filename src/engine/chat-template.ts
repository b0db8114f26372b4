// A model's own Jinja chat template (GGUF `tokenizer.chat_template`) for prompts that offer
// tools. llama_chat_apply_template (the FFI engine's renderer) knows no tools, so a prompt with
// tools is rendered here with @huggingface/jinja instead, when the template has a tool section
// whose call syntax we can parse back (docs/architecture.md, "tool calling").
//
// Detection follows llama.cpp's common/chat.cpp and minja's capability probes: the syntax comes
// from markers in the template text (`<tool_call>`: Hermes 2 Pro / Qwen 2.5; an `ipython` header:
// Llama 3.1+ JSON calls), and the template must actually render a tool definition and an
// assistant's tool call (probed with made-up names) before it is trusted. Anything else keeps the
// generic tool prompt. This runs in the worker (it owns the model, whichever entry or fallback
// serves); the engine hands over the template and its special tokens' texts (measured: reading
// them from the GGUF metadata again cost a worker's start 38 ms for a 32K vocabulary).
import type { Template } from "@huggingface/jinja";
import { MoltbotError } from "../errors.js";
import type { ChatTemplateSource } from "./types.js";

/** The call syntaxes parsed back (src/server/tool-calls.ts): see `detectSyntax`. */
export type ToolCallSyntax = "hermes" | "llama3";

/** A message in the shape Hugging Face chat templates expect (OpenAI's, with arguments as objects). */
export interface TemplateMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string | null;
  tool_calls?: Array<{ id: string; type: "function"; function: { name: string; arguments: Record<string, unknown> } }>;
  tool_call_id?: string;
  /** A tool result's function name (some templates print it). */
  name?: string;
}

/** OpenAI's function list, as templates render it. */
export interface TemplateTool {
  type: "function";
  function: { name: string; description?: string; parameters: Record<string, unknown> };
}

/** A chat with tools to render with the model's own template. */
export interface NativeChat {
  messages: TemplateMessage[];
  tools: TemplateTool[];
}

/** Template markers of each syntax (what the template prints around a call in the history). */
function detectSyntax(source: string): ToolCallSyntax | undefined {
  if (source.includes("<tool_call>")) return "hermes";
  if (source.includes("<|start_header_id|>ipython<|end_header_id|>") || (source.includes("ipython") && source.includes('"parameters"'))) return "llama3";
  return undefined;
}

const PROBE_TOOL = "moltbot_probe_tool";
const PROBE_CALL = "moltbot_probe_call";

export class ToolTemplate {
  private constructor(
    private readonly template: Template,
    readonly syntax: ToolCallSyntax,
    private readonly bosToken: string,
    private readonly eosToken: string,
    /** The tokenizer adds BOS itself. */
    private readonly addsBos: boolean,
  ) {}

  /**
   * The model's template when it renders tools in a syntax we parse; undefined otherwise (no
   * template, a template that does not parse, no tool section, an unknown syntax).
   */
  static async of(source: ChatTemplateSource | null): Promise<ToolTemplate | undefined> {
    if (source === null) return undefined;
    const syntax = detectSyntax(source.template);
    if (syntax === undefined) return undefined;
    let template: Template;
    try {
      // Loaded only for a template with a tool section: other workers never pay for it.
      const jinja = await import("@huggingface/jinja");
      template = new jinja.Template(source.template);
    } catch {
      return undefined;
    }
    const t = new ToolTemplate(template, syntax, source.bosToken, source.eosToken, source.addsBos);
    return t.probe() ? t : undefined;
  }

  /** Does the template print a tool's definition, and an assistant's call followed by its result? */
  private probe(): boolean {
    try {
      const tools: TemplateTool[] = [{ type: "function", function: { name: PROBE_TOOL, description: "probe", parameters: { type: "object", properties: {} } } }];
      const withTools = this.renderRaw({ messages: [{ role: "user", content: "hi" }], tools });
      const withCall = this.renderRaw({
        messages: [
          { role: "user", content: "hi" },
          { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: PROBE_CALL, arguments: { a: 1 } } }] },
          { role: "tool", content: "42", tool_call_id: "call_1", name: PROBE_CALL },
        ],
        tools,
      });
      return withTools.includes(PROBE_TOOL) && withCall.includes(PROBE_CALL);
    } catch {
      return false;
    }
  }

  private renderRaw(chat: NativeChat): string {
    return this.template.render({
      messages: chat.messages,
      tools: chat.tools,
      add_generation_prompt: true,
      bos_token: this.bosToken,
      eos_token: this.eosToken,
    });
  }

  /**
   * The prompt text, ending with the assistant cue. A leading BOS text is dropped when the
   * tokenizer adds BOS itself (the worker tokenizes with the model's own rule), so the prompt
   * does not start with two (llama.cpp does the same). A template that refuses the chat (raise_exception, e.g. roles out of order) or fails
   * is `chat_template_error`.
   */
  render(chat: NativeChat): string {
    let text: string;
    try {
      text = this.renderRaw(chat);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new MoltbotError("chat_template_error", `the model's chat template failed to render this chat with tools: ${why.slice(0, 300)}`, { param: "messages" });
    }
    return this.addsBos && this.bosToken !== "" && text.startsWith(this.bosToken) ? text.slice(this.bosToken.length) : text;
  }
}
