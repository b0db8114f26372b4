// HTTP body schemas: one TypeBox schema per body gives Fastify's validation and our types.
// Fields OpenAI, vLLM and llama.cpp's server accept are listed; unknown fields are ignored
// as OpenAI's API does (additionalProperties stays open), wrong types are a 400.
import { Type, type Static, type TSchema } from "@sinclair/typebox";

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const TextPart = Type.Object({ type: Type.Literal("text"), text: Type.String() });
// Every other part OpenAI defines (image_url, input_audio, file, ...) passes the schema so the
// route can refuse it by name as unsupported, instead of a 400 about a missing `text`.
const OtherPart = Type.Object({ type: Type.String({ not: { const: "text" } }) });

// Tool calling (tool-calls.ts). `arguments` is a JSON string, as OpenAI sends it.
const ToolCall = Type.Object({
  id: Type.String({ minLength: 1 }),
  type: Type.Literal("function"),
  function: Type.Object({ name: Type.String({ minLength: 1 }), arguments: Type.String() }),
});

const ChatMessage = Type.Object({
  role: Type.Union([Type.Literal("system"), Type.Literal("developer"), Type.Literal("user"), Type.Literal("assistant"), Type.Literal("tool")]),
  content: Type.Optional(Nullable(Type.Union([Type.String(), Type.Array(Type.Union([TextPart, OtherPart]))]))),
  name: Type.Optional(Type.String()),
  tool_calls: Type.Optional(Nullable(Type.Array(ToolCall))),
  tool_call_id: Type.Optional(Type.String()),
});

const FunctionTool = Type.Object({
  type: Type.Literal("function"),
  function: Type.Object({
    name: Type.String({ minLength: 1, maxLength: 64, pattern: "^[a-zA-Z0-9_-]+$" }),
    description: Type.Optional(Type.String()),
    // Checked as JSON Schema (and for what a grammar can enforce) by tool-calls.ts.
    parameters: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    strict: Type.Optional(Nullable(Type.Boolean())),
  }),
});

const ToolChoice = Type.Union([
  Type.Literal("none"),
  Type.Literal("auto"),
  Type.Literal("required"),
  Type.Object({ type: Type.Literal("function"), function: Type.Object({ name: Type.String({ minLength: 1 }) }) }),
]);

const Stop = Nullable(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 16 })]));

/** Seconds this request may take (queued and generating), capped by server.request_timeout_ms. */
const RequestTimeout = { timeout: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0 }))) };

// The schema itself is checked by structured-output.ts (JSON Schema's meta-schema, then what a
// grammar can enforce), with messages naming the keyword.
const ResponseFormat = Type.Object({
  type: Type.String(),
  json_schema: Type.Optional(
    Type.Object({
      name: Type.String({ minLength: 1, maxLength: 64 }),
      description: Type.Optional(Type.String()),
      schema: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      strict: Type.Optional(Nullable(Type.Boolean())),
    }),
  ),
});

/** `"cache": false` opts a generation out of the response cache (server/cached-generation.ts). */
const CacheOptOut = { cache: Type.Optional(Type.Boolean()) };

/** Sampling fields shared by both generation routes. */
const SamplingFields = {
  ...CacheOptOut,
  model: Type.Optional(Type.String({ minLength: 1 })),
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 1 }))),
  seed: Type.Optional(Nullable(Type.Integer())),
  stop: Type.Optional(Stop),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({ include_usage: Type.Optional(Type.Boolean()) }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  // vLLM / llama.cpp server extensions
  ignore_eos: Type.Optional(Type.Boolean()),
  min_tokens: Type.Optional(Type.Integer({ minimum: 0 })),
  // llama.cpp server's: false evaluates the whole prompt instead of reusing cached KV cells.
  cache_prompt: Type.Optional(Type.Boolean()),
  // accepted for compatibility; see docs/api.md for what is honoured
  presence_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  frequency_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  user: Type.Optional(Type.String()),
  // Structured outputs (structured-output.ts): OpenAI's response_format, llama.cpp server's grammar.
  response_format: Type.Optional(Nullable(ResponseFormat)),
  grammar: Type.Optional(Nullable(Type.String({ maxLength: 65536 }))),
  ...RequestTimeout,
};

export const ChatCompletionBody = Type.Object({
  ...SamplingFields,
  messages: Type.Array(ChatMessage, { minItems: 1 }),
  max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  logprobs: Type.Optional(Nullable(Type.Boolean())),
  top_logprobs: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 20 }))),
  tools: Type.Optional(Nullable(Type.Array(FunctionTool, { maxItems: 128 }))),
  tool_choice: Type.Optional(Nullable(ToolChoice)),
  parallel_tool_calls: Type.Optional(Nullable(Type.Boolean())),
});
export type ChatCompletionBody = Static<typeof ChatCompletionBody>;

export const CompletionBody = Type.Object({
  ...SamplingFields,
  prompt: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })]),
  logprobs: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 20 }))),
  echo: Type.Optional(Nullable(Type.Boolean())),
  suffix: Type.Optional(Nullable(Type.String())),
  best_of: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
});
export type CompletionBody = Static<typeof CompletionBody>;

export const EmbeddingBody = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1 })),
  input: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1, maxItems: 2048 })]),
  encoding_format: Type.Optional(Type.Union([Type.Literal("float"), Type.Literal("base64")])),
  dimensions: Type.Optional(Type.Integer({ minimum: 1 })),
  user: Type.Optional(Type.String()),
  ...RequestTimeout,
});
export type EmbeddingBody = Static<typeof EmbeddingBody>;

/** The seed's own route. */
export const InferBody = Type.Object({
  input: Type.String(),
  max_tokens: Type.Optional(Type.Integer({ minimum: 1 })),
  model: Type.Optional(Type.String({ minLength: 1 })),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  top_p: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
  seed: Type.Optional(Type.Integer()),
  stop: Type.Optional(Stop),
  cache_prompt: Type.Optional(Type.Boolean()),
  ...CacheOptOut,
  ...RequestTimeout,
});
export type InferBody = Static<typeof InferBody>;

// The Responses API (/v1/responses), for what maps onto chat. Item and part types it does not
// support pass the schema so the route refuses them by name (unsupported_parameter).
const InputTextPart = Type.Object({ type: Type.Union([Type.Literal("input_text"), Type.Literal("output_text")]), text: Type.String() });
const OtherInputPart = Type.Object({ type: Type.String({ not: { enum: ["input_text", "output_text"] } }) });
const InputMessage = Type.Object({
  type: Type.Optional(Type.Literal("message")),
  role: Type.Union([Type.Literal("user"), Type.Literal("assistant"), Type.Literal("system"), Type.Literal("developer")]),
  content: Type.Union([Type.String(), Type.Array(Type.Union([InputTextPart, OtherInputPart]))]),
});
// A call the model made and its result, sent back in the next request's input (tool calling).
const FunctionCallItem = Type.Object({
  type: Type.Literal("function_call"),
  call_id: Type.String({ minLength: 1 }),
  name: Type.String({ minLength: 1 }),
  arguments: Type.String(),
  id: Type.Optional(Nullable(Type.String())),
  status: Type.Optional(Nullable(Type.String())),
});
const FunctionCallOutputItem = Type.Object({
  type: Type.Literal("function_call_output"),
  call_id: Type.String({ minLength: 1 }),
  output: Type.Union([Type.String(), Type.Array(Type.Union([InputTextPart, OtherInputPart]))]),
  id: Type.Optional(Nullable(Type.String())),
  status: Type.Optional(Nullable(Type.String())),
});
const OtherInputItem = Type.Object({ type: Type.String({ not: { enum: ["message", "function_call", "function_call_output"] } }) });

// Responses tools are flat (`name` beside `type`); other tool types (web_search, file_search,
// mcp, ...) pass the schema so the route refuses them by name.
const ResponsesFunctionTool = Type.Object({
  type: Type.Literal("function"),
  name: Type.String({ minLength: 1, maxLength: 64, pattern: "^[a-zA-Z0-9_-]+$" }),
  description: Type.Optional(Nullable(Type.String())),
  parameters: Type.Optional(Nullable(Type.Record(Type.String(), Type.Unknown()))),
  strict: Type.Optional(Nullable(Type.Boolean())),
});
const OtherTool = Type.Object({ type: Type.String({ not: { const: "function" } }) });
const ResponsesToolChoice = Type.Union([
  Type.Literal("none"),
  Type.Literal("auto"),
  Type.Literal("required"),
  Type.Object({ type: Type.Literal("function"), name: Type.String({ minLength: 1 }) }),
  Type.Object({ type: Type.String({ not: { const: "function" } }) }),
]);

const TextFormat = Type.Union([
  Type.Object({ type: Type.Literal("text") }),
  Type.Object({ type: Type.Literal("json_object") }),
  Type.Object({
    type: Type.Literal("json_schema"),
    name: Type.String({ minLength: 1, maxLength: 64 }),
    description: Type.Optional(Type.String()),
    schema: Type.Record(Type.String(), Type.Unknown()),
    strict: Type.Optional(Nullable(Type.Boolean())),
  }),
]);

export const ResponsesBody = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1 })),
  input: Type.Union([Type.String(), Type.Array(Type.Union([InputMessage, FunctionCallItem, FunctionCallOutputItem, OtherInputItem]), { minItems: 1 })]),
  instructions: Type.Optional(Nullable(Type.String())),
  max_output_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 1 }))),
  text: Type.Optional(Nullable(Type.Object({ format: Type.Optional(TextFormat) }))),
  stream: Type.Optional(Nullable(Type.Boolean())),
  tools: Type.Optional(Nullable(Type.Array(Type.Union([ResponsesFunctionTool, OtherTool]), { maxItems: 128 }))),
  tool_choice: Type.Optional(Nullable(ResponsesToolChoice)),
  parallel_tool_calls: Type.Optional(Nullable(Type.Boolean())),
  // Nothing is ever stored: `false` or absent; `true` is refused by the route, by name.
  store: Type.Optional(Nullable(Type.Boolean())),
  // Accepted and ignored: nothing is stored for them to label.
  metadata: Type.Optional(Nullable(Type.Record(Type.String(), Type.String()))),
  user: Type.Optional(Nullable(Type.String())),
  ...CacheOptOut,
  ...RequestTimeout,
});
export type ResponsesBody = Static<typeof ResponsesBody>;
