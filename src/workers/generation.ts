// One generation inside a worker: prompt -> tokens -> engine -> text deltas over IPC.
// Engine-agnostic policy lives here: this is the one owner of the context room (a prompt that
// leaves no room for a completion token is refused; "until the context is full" and a
// max_tokens past the room both resolve to the room), stop strings, logprob packaging. Nothing here is per-token expensive beyond one IPC send.
import { MoltbotError } from "../errors.js";
import type { Engine, GeneratedToken } from "../engine/types.js";
import type { GenerationParams } from "../engine/types.js";
import type { PromptInput, TokenLogprobEntry, WorkerToMain } from "./protocol.js";
import { StopMatcher } from "./stop-matcher.js";
import type { ToolTemplate } from "../engine/chat-template.js";

/** `tools`: the model's own template for chats with tools, when it has one (engine/chat-template.ts). */
export function promptTokens(engine: Engine, prompt: PromptInput, tools?: ToolTemplate): number[] {
  const text = prompt.kind === "text" ? prompt.text : prompt.native && tools ? tools.render(prompt.native) : engine.formatChat(prompt.turns);
  return engine.tokenize(text, true);
}

/**
 * The parameters a generation runs with here: a tool call (forced, or lazily with `auto`) is constrained in the call
 * syntax of the template that rendered its prompt (`promptTokens` renders a prompt with tools
 * natively exactly when the worker has a tool template).
 */
export function workerParams(params: GenerationParams, tools: ToolTemplate | undefined): GenerationParams {
  if (tools === undefined) return params;
  const native = params.nativeToolGrammars?.[tools.syntax];
  return native === undefined ? params : { ...params, grammar: native, grammarTriggers: params.nativeToolTriggers?.[tools.syntax] };
}

/**
 * Completion tokens a generation may produce: what the client allows, at most the context's
 * room after the prompt. A prompt that leaves no room for one token is refused.
 */
export function completionLimit(contextSize: number, promptTokens: number, maxTokens: number | null): number {
  if (promptTokens >= contextSize) {
    throw new MoltbotError(
      "context_length_exceeded",
      `prompt is ${promptTokens} tokens but the model's context is ${contextSize} tokens (at least one completion token must fit)`,
      { param: "messages" },
    );
  }
  const room = contextSize - promptTokens;
  return maxTokens === null ? room : Math.min(maxTokens, room);
}

export async function runGeneration(
  engine: Engine,
  id: number,
  tokens: number[],
  params: GenerationParams,
  signal: AbortSignal,
  send: (msg: WorkerToMain) => void,
): Promise<void> {
  const maxTokens = completionLimit(engine.info.contextSize, tokens.length, params.maxTokens);
  send({ type: "started", id, promptTokens: tokens.length });

  const stop = new StopMatcher(params.stop);
  let stoppedByString = false;
  let generated = 0;
  let pendingLogprobs: TokenLogprobEntry[] | undefined = params.topLogprobs === null ? undefined : [];

  const onToken = (tok: GeneratedToken): boolean => {
    generated++;
    const { emit, stopped } = stop.push(tok.text);
    if (pendingLogprobs && tok.logprob !== undefined) {
      pendingLogprobs.push({ token: tok.text, logprob: tok.logprob, top: tok.top ?? [] });
    }
    if (emit.length > 0 || (pendingLogprobs && pendingLogprobs.length > 0 && !stopped)) {
      if (pendingLogprobs) {
        send({ type: "text", id, text: emit, n: generated, logprobs: pendingLogprobs });
        pendingLogprobs = [];
      } else {
        send({ type: "text", id, text: emit, n: generated });
      }
    }
    if (stopped) stoppedByString = true;
    return !stopped;
  };

  const result = await engine.generate({
    promptTokens: tokens,
    params,
    maxTokens,
    onToken,
    signal,
  });
  if (signal.aborted) return; // the client is gone: nobody reads a "done"
  const rest = stop.flush();
  if (rest.length > 0) send({ type: "text", id, text: rest, n: generated });
  const finishReason = stoppedByString ? "stop" : result.finishReason === "length" ? "length" : "stop";
  send({ type: "done", id, finishReason, promptTokens: result.promptTokens, completionTokens: result.completionTokens, cachedTokens: result.cachedTokens });
}
