// The typed IPC protocol between the main process and a model worker. One schema per
// message kind; the worker's init spec is checked once at start. Per-token messages are
// NOT validated at run time (hot path): both ends are our own code and share these types.
import { Type, type Static } from "@sinclair/typebox";
import type { ErrorCode } from "../errors.js";
import type { NativeChat } from "../engine/chat-template.js";
import type { ChatTurn, EngineModelInfo, GenerationParams, TokenLogprob } from "../engine/types.js";

export const WorkerInitSchema = Type.Object({
  name: Type.String(),
  version: Type.String(),
  modelPath: Type.String(),
  contextSize: Type.Integer({ minimum: 16 }),
  parallel: Type.Integer({ minimum: 1 }),
  threads: Type.Integer({ minimum: 1 }),
  embedding: Type.Boolean(),
  kvCacheTokens: Type.Optional(Type.Integer({ minimum: 16 })),
  speculative: Type.Boolean(),
  promptCacheBytes: Type.Integer({ minimum: 0 }),
  engine: Type.Union([Type.Literal("ffi"), Type.Literal("node-llama-cpp")]),
  /** Wait for "load" before loading: the main process first moves the worker into its cgroups, so the load is limited too. */
  awaitPlacement: Type.Optional(Type.Boolean()),
  /** engine.* and the pool entry's `gpu`, resolved by the main process; the worker picks the device. Absent: the shipped CPU build. */
  placement: Type.Optional(Type.Object({
    backend: Type.Union([Type.Literal("auto"), Type.Literal("cpu"), Type.Literal("cuda"), Type.Literal("vulkan")]),
    gpuLayers: Type.Optional(Type.Integer({ minimum: 0 })),
    mainGpu: Type.Optional(Type.Integer({ minimum: 0 })),
    libraryDir: Type.Optional(Type.String({ minLength: 1 })),
  })),
});
export type WorkerInit = Static<typeof WorkerInitSchema>;

/**
 * A chat's `native` part is the same chat with its tools in OpenAI's shape: a worker whose model
 * template renders tools uses it (engine/chat-template.ts), any other the `turns`, which carry
 * the generic tool prompt.
 */
export type PromptInput = { kind: "text"; text: string } | { kind: "chat"; turns: ChatTurn[]; native?: NativeChat };

export interface TokenLogprobEntry {
  token: string;
  logprob: number;
  top: TokenLogprob[];
}

export type MainToWorker =
  /** Tokenize a prompt and keep the tokens under `id` for a later generate (budgets need the count first). */
  | { type: "prepare"; id: number; prompt: PromptInput }
  /** Generate from the prompt given, or from the one prepared under `id` when `prompt` is absent. */
  | { type: "generate"; id: number; prompt?: PromptInput; params: GenerationParams }
  /** Drop a prepared prompt that will not be generated (refused, shed, routed elsewhere). */
  | { type: "discard"; id: number }
  | { type: "embed"; id: number; inputs: string[] }
  | { type: "cancel"; id: number }
  /** Heartbeat: the worker answers "pong" when its thread is free (model-worker.ts). */
  | { type: "ping" }
  | { type: "shutdown" }
  /** Load the model now (sent once, only to a worker started with awaitPlacement). */
  | { type: "load" };

export type FinishReason = "stop" | "length";

export type WorkerToMain =
  | { type: "ready"; info: EngineModelInfo; loadMs: number }
  | { type: "prepared"; id: number; promptTokens: number }
  | { type: "started"; id: number; promptTokens: number }
  /**
   * A text delta and the number of tokens generated so far (`n`; held-back text can make a delta
   * span several tokens). `logprobs` has one entry per token behind it when requested.
   */
  | { type: "text"; id: number; text: string; n: number; logprobs?: TokenLogprobEntry[] }
  /** `cachedTokens`: prompt tokens served from the KV prefix cache (OpenAI's cached_tokens). */
  | { type: "done"; id: number; finishReason: FinishReason; promptTokens: number; completionTokens: number; cachedTokens: number }
  /** One vector and one token count per input. */
  | { type: "embedded"; id: number; data: number[][]; tokens: number[] }
  | { type: "failed"; id: number; code: ErrorCode; message: string }
  | { type: "fatal"; code: ErrorCode; message: string }
  | { type: "pong" }
  | { type: "log"; level: "DEBUG" | "INFO" | "WARNING" | "ERROR"; component: string; message: string }
  /**
   * Several messages in one IPC write, in the order they were sent: the worker flushes what
   * one engine step produced (every sequence's delta) at once. Never nested.
   */
  | { type: "batch"; msgs: WorkerToMain[] };
