// One generation inside a worker: prompt -> tokens -> engine -> text deltas over IPC.
// Engine-agnostic policy lives here: context-length checks, max_tokens defaulting, stop
// strings, logprob packaging. Nothing here is per-token expensive beyond one IPC send.
import { MoltbotError } from "../errors.js";
import type { Engine, GeneratedToken } from "../engine/types.js";
import type { GenerateParams, PromptInput, TokenLogprobEntry, WorkerToMain } from "./protocol.js";
import { StopMatcher } from "./stop-matcher.js";

export function promptTokens(engine: Engine, prompt: PromptInput): number[] {
  const text = prompt.kind === "chat" ? engine.formatChat(prompt.turns) : prompt.text;
  return engine.tokenize(text, true);
}

export async function runGeneration(
  engine: Engine,
  id: number,
  tokens: number[],
  params: GenerateParams,
  signal: AbortSignal,
  send: (msg: WorkerToMain) => void,
): Promise<void> {
  const ctx = engine.info.contextSize;
  if (tokens.length >= ctx) {
    throw new MoltbotError(
      "context_length_exceeded",
      `prompt is ${tokens.length} tokens but the model's context is ${ctx} tokens (at least one completion token must fit)`,
      { param: "messages" },
    );
  }
  const room = ctx - tokens.length;
  const maxTokens = params.maxTokens === null ? room : Math.min(params.maxTokens, room);
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
    params: {
      temperature: params.temperature,
      topP: params.topP,
      seed: params.seed,
      maxTokens,
      minTokens: params.minTokens,
      ignoreEos: params.ignoreEos,
      topLogprobs: params.topLogprobs,
    },
    onToken,
    signal,
  });
  if (signal.aborted) return; // the client is gone: nobody reads a "done"
  const rest = stop.flush();
  if (rest.length > 0) send({ type: "text", id, text: rest, n: generated });
  const finishReason = stoppedByString ? "stop" : result.finishReason === "length" ? "length" : "stop";
  send({ type: "done", id, finishReason, promptTokens: result.promptTokens, completionTokens: result.completionTokens });
}
