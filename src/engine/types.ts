// The engine contract: everything that touches llama.cpp lives behind this interface and
// runs only inside a worker process. Two implementations may exist (node-llama-cpp's JS API
// and a direct libllama binding through koffi); the worker picks one, benchmarks decide which.
// Inputs are already-validated native values: no JSON shapes, no OpenAI field names.
import type { ToolCallSyntax } from "./chat-template.js";

export interface EngineLoadOptions {
  /** Path of a GGUF file. */
  modelPath: string;
  /** Context length of each sequence, in tokens. */
  contextSize: number;
  /** Number of sequences decoded together (parallel slots). */
  parallel: number;
  /** CPU threads for decoding. */
  threads: number;
  /** Load for embeddings (pooling on) instead of generation. */
  embedding: boolean;
  /**
   * Cells of the one KV buffer the sequences share (running ones and cached prompt prefixes).
   * Default: contextSize x min(parallel, 4).
   */
  kvCacheTokens?: number;
  /**
   * Bytes of host memory for finished sequences' KV cells saved when they leave the buffer, so
   * a later prompt starting the same way restores them (0: none). Default 0.
   */
  promptCacheBytes?: number;
  /** Draft tokens by prompt lookup (n-gram speculative decoding). Default true. */
  speculative?: boolean;
  /** Backend, devices and library (engine.*, a pool entry's `gpu`). Default: the shipped CPU build. */
  placement?: PlacementRequest;
}

/** Where a model is asked to run: engine.backend, gpu_layers, main_gpu, library_dir. */
export interface PlacementRequest {
  backend: "auto" | "cpu" | "cuda" | "vulkan";
  /** Layers offloaded on a GPU backend; undefined = all. */
  gpuLayers?: number | undefined;
  /** Only this GPU of the backend; undefined = every GPU of it. */
  mainGpu?: number | undefined;
  /** An operator's llama.cpp build used instead of the shipped binaries. */
  libraryDir?: string | undefined;
}

/** Where a model runs, as the worker found it at load. */
export interface EnginePlacement {
  backend: "cpu" | "cuda" | "vulkan";
  /** ggml's device name (CUDA0, Vulkan0, CPU) and description (the GPU's or the CPU's model). */
  device: string;
  description: string;
  /** Device memory the model, its KV cache and compute buffers took at load (free before - after); null on the CPU. */
  deviceMemoryBytes: number | null;
  /** Layers on the GPU, of all (llama.cpp counts the output layer as one). */
  offloadedLayers: number;
  totalLayers: number;
  /** CPU threads the engine decodes with. */
  threads: number;
  /** GPU backends `auto` passed over, and why. */
  skipped: { kind: string; reason: string }[];
  /** The libllama file loaded. */
  library: string;
}

export interface EngineModelInfo {
  architecture: string;
  /** Context length the model was trained with (GGUF metadata). */
  trainContextSize: number;
  /** Context length each sequence actually gets. */
  contextSize: number;
  vocabSize: number;
  embeddingSize: number;
  parameterCount: number;
  /** True when the GGUF carries a chat template (tokenizer.chat_template). */
  hasChatTemplate: boolean;
  /** Cells of the shared KV buffer (0 when the engine does not share one). */
  kvCacheTokens: number;
  /** Bytes of KV cache per cell (one token of one sequence), keys and values of every layer. */
  kvBytesPerToken: number;
  /**
   * The tool-call syntax of the model's own chat template, when prompts with tools are rendered
   * with it (engine/chat-template.ts); absent: the generic tool prompt. Set by the worker, not
   * the engine.
   */
  toolCallSyntax?: ToolCallSyntax;
  /** Backend and device (the FFI engine; absent with node-llama-cpp). */
  placement?: EnginePlacement;
}

/**
 * One request's generation parameters, validated and defaulted by the HTTP layer. The same
 * value travels from the pool through the worker to the engine; only the pool changes it
 * (the budget's per-inference cap lowers `maxTokens`).
 */
export interface GenerationParams {
  /** Completion tokens the client allows; null = until the context is full. */
  maxTokens: number | null;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  /** Fixed seed for reproducible sampling; undefined = random. */
  seed: number | undefined;
  /** The end-of-generation token is suppressed until this many tokens were produced. */
  minTokens: number;
  /** Never stop on the end-of-generation token. */
  ignoreEos: boolean;
  /** Stop strings, matched on the text by the worker. */
  stop: string[];
  /** Number of top alternatives per token to report; null = no logprobs at all. */
  topLogprobs: number | null;
  /** Reuse KV cells of a cached prompt prefix (default true). */
  cachePrompt: boolean;
  /**
   * A GBNF grammar (root rule `root`) every completion token must keep the text inside;
   * absent = unconstrained. The HTTP layer builds it from `response_format` or takes the
   * body's `grammar`; the engine refuses one that does not parse (`invalid_grammar`).
   */
  grammar?: string;
  /**
   * Makes `grammar` lazy: the output is free until one of these regular expressions (JavaScript
   * syntax) matches the text generated so far; the grammar then applies from where the match
   * (its first capture group, when it has one) begins, which must be the start of a token, to
   * the end. `tool_choice: auto` uses it so that text answers stay free but a call, once it
   * starts, always parses (llama.cpp's server does the same with its lazy grammars).
   */
  grammarTriggers?: GrammarTriggers;
  /**
   * A forced tool call's grammar in each native call syntax: the worker uses the one of its
   * template's syntax instead of `grammar` (the generic call's) when it renders the prompt's
   * tools with the model's own template (the prompt's `native` part).
   */
  nativeToolGrammars?: Partial<Record<ToolCallSyntax, string>>;
  /** With `nativeToolGrammars`, the triggers that make each one lazy (`tool_choice: auto`). */
  nativeToolTriggers?: Partial<Record<ToolCallSyntax, GrammarTriggers>>;
}

export interface GrammarTriggers {
  patterns: string[];
}

export interface TokenLogprob {
  token: string;
  logprob: number;
}

export interface GeneratedToken {
  id: number;
  /** Detokenized text of this token (may be "" for a partial UTF-8 sequence held back). */
  text: string;
  /** Present when GenerationParams.topLogprobs is not null. */
  logprob?: number;
  top?: TokenLogprob[];
}

export type EngineFinishReason = "stop" | "length" | "aborted";

export interface GenerateResult {
  finishReason: EngineFinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose KV cells were reused from the cache instead of evaluated. */
  cachedTokens: number;
  /** Speculative decoding: draft tokens proposed and accepted for this sequence. */
  draftTokens: number;
  acceptedDraftTokens: number;
}

export interface GenerateRequest {
  /** Prompt tokens (already tokenized with `tokenize`), fewer than the context holds. */
  promptTokens: number[];
  params: GenerationParams;
  /**
   * Completion tokens at most: the worker's resolution of `params.maxTokens` against the
   * context room (>= 1, and prompt + maxTokens <= contextSize). The engine trusts it.
   */
  maxTokens: number;
  /**
   * Called once per generated token. Return false to stop generating (stop string matched,
   * client gone); the result then has finishReason "aborted" unless the caller overrides it.
   */
  onToken: (token: GeneratedToken) => boolean;
  signal?: AbortSignal;
}

export interface ChatTurn {
  role: "system" | "user" | "assistant" | "tool" | "developer";
  content: string;
}

/** A model's Jinja chat template and the texts it renders for special tokens. */
export interface ChatTemplateSource {
  template: string;
  bosToken: string;
  eosToken: string;
  /** The tokenizer adds BOS itself (`tokenize(text, true)`). */
  addsBos: boolean;
}

export interface Engine {
  readonly info: EngineModelInfo;
  /** Tokenize text; `addSpecial` adds BOS where the model wants it. */
  tokenize(text: string, addSpecial: boolean): number[];
  detokenize(tokens: number[]): string;
  /** Render chat turns with the model's template (or a plain fallback) ending with the assistant cue. */
  formatChat(turns: ChatTurn[]): string;
  /** The GGUF's chat template (`tokenizer.chat_template`), for rendering outside the engine (chat-template.ts); null without one. */
  chatTemplateSource(): ChatTemplateSource | null;
  /** Generate on a free sequence; concurrent calls share decode steps up to `parallel`. */
  generate(request: GenerateRequest): Promise<GenerateResult>;
  /** One embedding vector per input (mean pooled, L2-normalised). */
  embed(inputs: number[][]): Promise<number[][]>;
  /** Drain: refuse new work, let queued and running work finish, then free the model. Idempotent. */
  close(): Promise<void>;
  /** Abort: fail queued and running work at once, then free the model. Idempotent. */
  destroy(): Promise<void>;
}
