// The Engine contract on node-llama-cpp's JS API (3.22.x, prebuilt binaries only: nothing is
// downloaded or compiled at run time). One LlamaContext holds `parallel` sequences; each
// generate() takes a free sequence (FIFO queue when all are busy), drives node-llama-cpp's
// token generator itself and clears the sequence's KV cells before handing the slot back.
// node-llama-cpp batches the decode steps of concurrently running sequences on its own.

import { randomInt } from "node:crypto";
import {
  getLlama,
  LlamaLogLevel,
  readGgufFileInfo,
  resolveChatWrapper,
  SpecialToken,
  SpecialTokensText,
  TokenBias,
} from "node-llama-cpp";
import type {
  ChatHistoryItem,
  ChatWrapper,
  GgufFileInfo,
  Llama,
  LlamaContext,
  LlamaContextSequence,
  LlamaEmbeddingContext,
  LlamaModel,
  LlamaText,
  SequenceEvaluateOptions,
  Token,
} from "node-llama-cpp";
import { MoltbotError } from "../errors.js";
import type {
  ChatTemplateSource,
  ChatTurn,
  Engine,
  EngineLoadOptions,
  EngineModelInfo,
  GeneratedToken,
  GenerateRequest,
  GenerateResult,
  TokenLogprob,
} from "./types.js";

export interface NlcEngineOptions {
  /** `false` (default) keeps everything on the CPU; "auto" lets node-llama-cpp pick a GPU backend. */
  gpu?: false | "auto";
  /** Seed source for requests without a seed (injected so tests can fix it). */
  randomSeed?: () => number;
}

// A partial UTF-8 character spans at most 4 byte tokens; after that the bytes are invalid
// and are emitted as U+FFFD rather than held forever.
const MAX_HELD_TOKENS = 4;
// Tokens of already emitted text passed to detokenize as context (SentencePiece leading spaces).
const DETOKENIZE_CONTEXT_TOKENS = 4;
const POOLING_MEAN = 1;

// One Llama (native backend) per process and GPU choice: disposing it frees the backend for
// every model in the process, so engines share it and only dispose their own model/contexts.
const llamas = new Map<string, Promise<Llama>>();

function sharedLlama(gpu: false | "auto"): Promise<Llama> {
  const key = String(gpu);
  let llama = llamas.get(key);
  if (llama === undefined) {
    // maxThreads 0: the per-context `threads` is then exactly what llama.cpp uses, instead of
    // a hint that node-llama-cpp scales down while other contexts evaluate.
    llama = getLlama({ gpu, build: "never", skipDownload: true, logLevel: LlamaLogLevel.warn, maxThreads: 0, progressLogs: false });
    llama.catch(() => llamas.delete(key));
    llamas.set(key, llama);
  }
  return llama;
}

function engineError(message: string, cause?: unknown): MoltbotError {
  return new MoltbotError("engine_error", message, cause === undefined ? undefined : { cause });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function loadNlcEngine(opts: EngineLoadOptions, options: NlcEngineOptions = {}): Promise<Engine> {
  const gpu = options.gpu ?? false;
  let fileInfo: GgufFileInfo;
  try {
    fileInfo = await readGgufFileInfo(opts.modelPath, { readTensorInfo: false, logWarnings: false });
  } catch (err) {
    throw engineError(`cannot read GGUF metadata of ${opts.modelPath}: ${messageOf(err)}`, err);
  }
  const architecture = fileInfo.metadata.general.architecture;
  const archMeta = (fileInfo.metadata as unknown as Record<string, { pooling_type?: number } | undefined>)[architecture];
  // A generative model has no pooling type, and llama.cpp then returns the last token's hidden
  // state; the contract wants mean pooling, so embedding loads override it (a model's own
  // pooling, e.g. CLS for BERT, is kept).
  const metadataOverrides =
    opts.embedding && (archMeta?.pooling_type === undefined || archMeta.pooling_type <= 0)
      ? ({ [architecture]: { pooling_type: POOLING_MEAN } } as Record<string, unknown>)
      : undefined;

  let llama: Llama;
  try {
    llama = await sharedLlama(gpu);
  } catch (err) {
    throw engineError(`node-llama-cpp has no usable prebuilt binary (gpu: ${String(gpu)}): ${messageOf(err)}`, err);
  }
  let model: LlamaModel;
  try {
    model = await llama.loadModel({
      modelPath: opts.modelPath,
      ...(metadataOverrides === undefined ? {} : { metadataOverrides: metadataOverrides as never }),
    });
  } catch (err) {
    throw engineError(`cannot load model ${opts.modelPath}: ${messageOf(err)}`, err);
  }

  try {
    if (opts.embedding) {
      const embeddingContext = await model.createEmbeddingContext({
        contextSize: opts.contextSize,
        // Pooled embeddings need the whole input in one micro-batch.
        batchSize: opts.contextSize,
        threads: opts.threads,
      });
      return new NlcEngine(model, undefined, embeddingContext, opts, options);
    }
    // node-llama-cpp's contextSize is per sequence: it allocates contextSize * sequences KV
    // cells (padded up to a multiple of 256) and gives each sequence its own contextSize.
    const context = await model.createContext({
      sequences: opts.parallel,
      contextSize: opts.contextSize,
      threads: opts.threads,
      batching: { itemPrioritizationStrategy: "maximumParallelism" },
    });
    return new NlcEngine(model, context, undefined, opts, options);
  } catch (err) {
    await model.dispose().catch(() => undefined);
    if (err instanceof MoltbotError) throw err;
    throw engineError(`cannot create a context for ${opts.modelPath} (contextSize ${opts.contextSize}, parallel ${opts.parallel}): ${messageOf(err)}`, err);
  }
}

/** What one step of node-llama-cpp's evaluation generator yields. */
interface EvaluationStep {
  token: number;
  probabilities?: Map<number, number>;
}

class NlcEngine implements Engine {
  readonly info: EngineModelInfo;
  private readonly model: LlamaModel;
  private readonly context: LlamaContext | undefined;
  private readonly embeddingContext: LlamaEmbeddingContext | undefined;
  private readonly freeSequences: LlamaContextSequence[] = [];
  private readonly waiters: Array<(sequence: LlamaContextSequence | undefined) => void> = [];
  private readonly randomSeed: () => number;
  private chatWrapper: ChatWrapper | null | undefined;
  private noBias: TokenBias | undefined;
  private eogBias: TokenBias | undefined;
  /** Set by destroy (and by close once drained): the model is being disposed. */
  private closing: Promise<void> | undefined;
  private draining: Promise<void> | undefined;
  /** Generations and embeddings under way; a drain waits for none. */
  private running = 0;
  private readonly drainWaiters: Array<() => void> = [];

  constructor(
    model: LlamaModel,
    context: LlamaContext | undefined,
    embeddingContext: LlamaEmbeddingContext | undefined,
    opts: EngineLoadOptions,
    options: NlcEngineOptions,
  ) {
    this.model = model;
    this.context = context;
    this.embeddingContext = embeddingContext;
    this.randomSeed = options.randomSeed ?? (() => randomInt(0, 2 ** 31));
    if (context !== undefined) for (let i = 0; i < opts.parallel; i++) this.freeSequences.push(context.getSequence());
    const meta = model.fileInfo.metadata;
    this.info = {
      architecture: meta.general.architecture,
      trainContextSize: model.trainContextSize,
      // node-llama-cpp may pad the cells up (multiples of 256 over all sequences); the limit
      // enforced and reported stays the configured one so both engines behave alike.
      contextSize: Math.min(opts.contextSize, context?.contextSize ?? opts.contextSize),
      vocabSize: meta.tokenizer.ggml.tokens.length,
      embeddingSize: model.embeddingVectorSize,
      parameterCount: model.fileInsights.totalParameters,
      hasChatTemplate: typeof meta.tokenizer.chat_template === "string" && meta.tokenizer.chat_template !== "",
      // node-llama-cpp gives each sequence its own context; no shared buffer, no prefix cache.
      kvCacheTokens: 0,
      kvBytesPerToken: 0,
    };
  }

  tokenize(text: string, addSpecial: boolean): number[] {
    this.ensureOpen();
    // Special-token text is parsed (a rendered chat template contains it); BOS is added
    // unless the text already starts with it, so templates that render BOS don't get two.
    const tokens = this.model.tokenize(text, true);
    const bos = this.model.tokens.bos;
    if (addSpecial && bos !== null && this.model.tokens.shouldPrependBosToken && tokens[0] !== bos) tokens.unshift(bos);
    return tokens as number[];
  }

  detokenize(tokens: number[]): string {
    this.ensureOpen();
    this.checkTokens(tokens, "tokens");
    return this.model.detokenize(tokens as Token[], false);
  }

  chatTemplateSource(): ChatTemplateSource | null {
    const template = this.model.fileInfo.metadata.tokenizer.chat_template;
    if (typeof template !== "string" || template === "") return null;
    const tokens = this.model.tokens;
    return { template, bosToken: tokens.bosString ?? "", eosToken: tokens.eosString ?? "", addsBos: tokens.shouldPrependBosToken };
  }

  formatChat(turns: ChatTurn[]): string {
    this.ensureOpen();
    const wrapper = this.resolveChatWrapper();
    if (wrapper === null) return plainChat(turns);
    const history: ChatHistoryItem[] = turns.map((turn): ChatHistoryItem => {
      switch (turn.role) {
        case "system":
        case "developer":
          return { type: "system", text: turn.content };
        case "assistant":
          return { type: "model", response: [turn.content] };
        case "user":
        case "tool":
          return { type: "user", text: turn.content };
      }
    });
    history.push({ type: "model", response: [] });
    try {
      const { contextText } = wrapper.generateContextState({ chatHistory: history });
      return this.renderLlamaText(contextText);
    } catch (err) {
      throw engineError(`chat template (${wrapper.wrapperName}) failed to render: ${messageOf(err)}`, err);
    }
  }

  generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.counted(() => this.generateNow(request));
  }

  /** Runs `work` counted as under way, so a drain (close) waits for it. */
  private async counted<T>(work: () => Promise<T>): Promise<T> {
    this.ensureOpen();
    this.running++;
    try {
      return await work();
    } finally {
      if (--this.running === 0) for (const wake of this.drainWaiters.splice(0)) wake();
    }
  }

  private async generateNow(request: GenerateRequest): Promise<GenerateResult> {
    if (this.context === undefined) throw engineError("this model was loaded for embeddings; it cannot generate");
    const { promptTokens, params, onToken, signal } = request;
    const promptCount = promptTokens.length;
    if (promptCount === 0) throw new MoltbotError("invalid_request", "the prompt is empty (0 tokens)");
    this.checkTokens(promptTokens, "prompt");
    // The worker resolved the room (prompt + maxTokens <= contextSize); node-llama-cpp keeps
    // one cell free, which is the completion's last token, never evaluated.
    const limit = request.maxTokens;
    if (promptCount + limit > this.info.contextSize) throw new MoltbotError("internal_error", `generation of ${promptCount} + ${limit} tokens exceeds the context (${this.info.contextSize})`);
    const result = (finishReason: GenerateResult["finishReason"], completionTokens: number): GenerateResult => ({
      finishReason,
      promptTokens: promptCount,
      completionTokens,
      cachedTokens: 0,
      draftTokens: 0,
      acceptedDraftTokens: 0,
    });
    if (signal?.aborted) return result("aborted", 0);
    // A lazy grammar (`tool_choice: auto`) is best effort: this engine runs without it, as auto
    // calls ran before there were lazy grammars (a malformed call comes back as text).
    if (params.grammar !== undefined && params.grammar.length > 0 && params.grammarTriggers === undefined) {
      throw new MoltbotError("unsupported_parameter", "grammars and response_format need the default engine (ffi); this worker runs node-llama-cpp", { param: "grammar" });
    }
    if (limit <= 0) return result("length", 0);

    const sequence = await this.acquireSequence(signal);
    if (sequence === undefined) {
      if (this.closing !== undefined) throw engineError("the engine closed while the request waited for a free sequence");
      return result("aborted", 0);
    }
    let generated = 0;
    const model = this.model;
    const suppressEog = params.ignoreEos || params.minTokens > 0;
    const eogBias = suppressEog ? this.eogSuppressionBias() : undefined;
    const noBias = this.emptyBias();
    const evaluateOptions: SequenceEvaluateOptions = {
      temperature: params.temperature,
      topP: params.topP,
      topK: 0, // 0 = whole vocabulary; node-llama-cpp would default to 40
      minP: 0,
      seed: params.seed ?? this.randomSeed(),
      yieldEogToken: true,
      ...(eogBias === undefined
        ? {}
        : { tokenBias: () => (params.ignoreEos || generated < params.minTokens ? eogBias : noBias) }),
      contextShift: {
        strategy: () => {
          // Unreachable while `limit` holds; a silent shift would corrupt the output.
          throw engineError("context shift requested; the generation limit should have prevented it");
        },
      },
    };
    const wantLogprobs = params.topLogprobs !== null;
    const steps = (
      wantLogprobs
        ? sequence.evaluateWithMetadata(promptTokens as Token[], { probabilities: true }, evaluateOptions)
        : sequence.evaluateWithMetadata(promptTokens as Token[], {}, evaluateOptions)
    ) as AsyncGenerator<EvaluationStep, void, void>;

    const emitted: number[] = [];
    const held: number[] = [];
    let finishReason: GenerateResult["finishReason"] = "stop";
    try {
      for (;;) {
        if (signal?.aborted) {
          finishReason = "aborted";
          break;
        }
        const step = await steps.next();
        if (step.done) break; // node-llama-cpp ended the generator (sampler disposed)
        const token = step.value.token;
        if (model.isEogToken(token as Token)) break;
        generated++;

        const context = emitted.slice(-DETOKENIZE_CONTEXT_TOKENS) as Token[];
        const altContext = wantLogprobs ? ([...context, ...held] as Token[]) : context;
        held.push(token);
        let text = model.detokenize(held as Token[], false, context);
        if (text.endsWith("\uFFFD") && held.length < MAX_HELD_TOKENS) {
          text = ""; // an incomplete UTF-8 character: wait for its remaining byte tokens
        } else {
          for (const t of held) emitted.push(t);
          held.length = 0;
        }
        const out: GeneratedToken = { id: token, text };
        if (wantLogprobs) this.addLogprobs(out, step.value.probabilities, params.topLogprobs ?? 0, altContext);

        if (!onToken(out)) {
          finishReason = "aborted";
          break;
        }
        if (generated >= limit) {
          finishReason = "length";
          break;
        }
      }
    } catch (err) {
      if (err instanceof MoltbotError) throw err;
      throw engineError(`generation failed after ${generated} tokens: ${messageOf(err)}`, err);
    } finally {
      await steps.return(undefined).catch(() => undefined);
      await this.releaseSequence(sequence);
    }
    if (finishReason === "stop" && signal?.aborted) finishReason = "aborted";
    return result(finishReason, generated);
  }

  embed(inputs: number[][]): Promise<number[][]> {
    return this.counted(() => this.embedNow(inputs));
  }

  private async embedNow(inputs: number[][]): Promise<number[][]> {
    if (this.embeddingContext === undefined) {
      throw new MoltbotError("model_not_embedding", "this model was loaded for generation; load it with embedding enabled to embed");
    }
    const out: number[][] = [];
    for (const [i, tokens] of inputs.entries()) {
      if (tokens.length === 0) throw new MoltbotError("invalid_request", `input ${i} is empty (0 tokens)`, { param: "input" });
      this.checkTokens(tokens, `input ${i}`);
      if (tokens.length >= this.info.contextSize) {
        throw new MoltbotError(
          "context_length_exceeded",
          `input ${i} has ${tokens.length} tokens; this model's embedding context holds at most ${this.info.contextSize - 1}`,
          { param: "input" },
        );
      }
      let vector: readonly number[];
      try {
        vector = (await this.embeddingContext.getEmbeddingFor(tokens as Token[])).vector;
      } catch (err) {
        throw engineError(`embedding input ${i} failed: ${messageOf(err)}`, err);
      }
      out.push(l2Normalise(vector));
    }
    return out;
  }

  close(): Promise<void> {
    this.draining ??= (async () => {
      if (this.running > 0) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
      await this.destroy();
    })();
    return this.draining;
  }

  destroy(): Promise<void> {
    this.closing ??= (async () => {
      for (const wake of this.waiters.splice(0)) wake(undefined);
      // Disposing the model disposes its contexts and sequences too.
      await this.model.dispose();
    })();
    return this.closing;
  }

  private ensureOpen(): void {
    if (this.closing !== undefined || this.draining !== undefined) throw engineError("the engine is closed or closing");
  }

  /** Out-of-range token ids would crash llama.cpp, so they are refused here. */
  private checkTokens(tokens: readonly number[], what: string): void {
    const n = this.info.vocabSize;
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= n) {
        throw new MoltbotError("invalid_request", `${what} contains token id ${t}, outside this model's vocabulary (0..${n - 1})`);
      }
    }
  }

  private acquireSequence(signal: AbortSignal | undefined): Promise<LlamaContextSequence | undefined> {
    const free = this.freeSequences.pop();
    if (free !== undefined) return Promise.resolve(free);
    return new Promise((resolve) => {
      const onAbort = (): void => {
        const i = this.waiters.indexOf(wake);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(undefined);
      };
      const wake = (sequence: LlamaContextSequence | undefined): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(sequence);
      };
      this.waiters.push(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private async releaseSequence(sequence: LlamaContextSequence): Promise<void> {
    if (this.closing !== undefined || sequence.disposed) return;
    try {
      await sequence.clearHistory();
    } catch (err) {
      // The slot's KV state is unknown: retire it rather than hand it to the next request.
      await sequence.dispose().catch(() => undefined);
      const replacement = this.context !== undefined && this.context.sequencesLeft > 0 ? this.context.getSequence() : undefined;
      if (replacement === undefined) throw engineError(`could not clear a sequence's KV cache: ${messageOf(err)}`, err);
      sequence = replacement;
    }
    const next = this.waiters.shift();
    if (next !== undefined) next(sequence);
    else this.freeSequences.push(sequence);
  }

  /** `context`: the tokens before this one, so alternatives detokenize as they would appear. */
  private addLogprobs(out: GeneratedToken, probabilities: Map<number, number> | undefined, top: number, context: Token[]): void {
    if (probabilities === undefined) return;
    // These are the probabilities of the distribution actually sampled from (after token
    // bias, top-p and temperature), which is also what greedy decoding reads: raw softmax.
    const p = probabilities.get(out.id) ?? 0;
    out.logprob = p > 0 ? Math.log(p) : -1e9;
    const list: TokenLogprob[] = [];
    if (top > 0) {
      for (const [token, prob] of probabilities) {
        if (list.length >= top || prob <= 0) break; // the map is sorted, most probable first
        list.push({ token: this.model.detokenize([token as Token], false, context), logprob: Math.log(prob) });
      }
    }
    out.top = list;
  }

  private emptyBias(): TokenBias {
    this.noBias ??= TokenBias.for(this.model);
    return this.noBias;
  }

  /**
   * TokenBias.set() silently ignores EOG tokens, so the suppression bias is written into its
   * internal map (what node-llama-cpp hands to llama.cpp's logit-bias sampler). Checked here
   * so a node-llama-cpp upgrade that changes it fails loudly instead of ignoring ignoreEos.
   */
  private eogSuppressionBias(): TokenBias {
    if (this.eogBias !== undefined) return this.eogBias;
    const bias = TokenBias.for(this.model);
    const biases = (bias as unknown as { _biases?: unknown })._biases;
    if (!(biases instanceof Map)) throw engineError("this node-llama-cpp version cannot suppress end-of-generation tokens (TokenBias internals changed)");
    for (const token of this.model.iterateAllTokens()) if (this.model.isEogToken(token)) biases.set(token as number, -Infinity);
    this.eogBias = bias;
    return bias;
  }

  private resolveChatWrapper(): ChatWrapper | null {
    if (this.chatWrapper === undefined) {
      this.chatWrapper = null;
      if (this.info.hasChatTemplate) {
        try {
          this.chatWrapper = resolveChatWrapper(this.model, { warningLogs: false });
        } catch {
          this.chatWrapper = null; // an unusable template: the plain format is better than nothing
        }
      }
    }
    return this.chatWrapper;
  }

  /** LlamaText to the string that tokenize(text, true) turns back into the same tokens. */
  private renderLlamaText(text: LlamaText): string {
    const tokens = this.model.tokens;
    let out = "";
    for (const value of text.values) {
      if (typeof value === "string") out += value;
      else if (value instanceof SpecialTokensText) out += value.value;
      else if (value instanceof SpecialToken) {
        const s = { BOS: tokens.bosString, EOS: tokens.eosString, EOT: tokens.eotString, NL: tokens.nlString, SEP: tokens.sepString }[value.value];
        out += s ?? "";
      }
    }
    return out;
  }
}

/** The format used when the GGUF carries no chat template. */
function plainChat(turns: ChatTurn[]): string {
  const label: Record<ChatTurn["role"], string> = {
    system: "System",
    developer: "System",
    user: "User",
    tool: "Tool",
    assistant: "Assistant",
  };
  let out = "";
  for (const turn of turns) out += `${label[turn.role]}: ${turn.content}\n`;
  return out + "Assistant:";
}

function l2Normalise(vector: readonly number[]): number[] {
  let sum = 0;
  for (const x of vector) sum += x * x;
  const norm = Math.sqrt(sum);
  if (norm === 0 || !Number.isFinite(norm)) throw engineError(`the model produced an embedding with norm ${norm}`);
  return vector.map((x) => x / norm);
}
