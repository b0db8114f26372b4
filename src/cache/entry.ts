// One cached response: what the model produced, never how a route shaped it, so a hit is
// replayed through the route's own formatter (new id and `created`, the route's chunk shapes).
import type { GenerationDone } from "../workers/model-worker.js";
import type { TokenLogprobEntry } from "../workers/protocol.js";

export interface CachedResponse {
  /** The pool entry and model version that produced it (x-moltbot-model-version on a hit). */
  entry: string;
  version: string;
  text: string;
  /**
   * The text as the run streamed it: [delta, completion tokens so far, logprob entries in it],
   * so a streamed hit comes in the same pieces (a forced tool call's arguments stream in pieces).
   */
  deltas: Array<[string, number, number]>;
  /** Present when the request asked for logprobs (top_logprobs is part of the key). */
  logprobs?: TokenLogprobEntry[] | undefined;
  done: GenerationDone;
  /** What the generation cost when it ran (the saving a free hit records). */
  cost: number;
}

/** A cached response with its serialized form, whose length is what the size bounds count. */
export interface StoredResponse {
  value: CachedResponse;
  json: string;
  bytes: number;
}

export function serialize(value: CachedResponse): StoredResponse {
  const json = JSON.stringify(value);
  return { value, json, bytes: Buffer.byteLength(json) };
}
