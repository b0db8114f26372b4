import assert from "node:assert/strict";
import type OpenAI from "openai";

/** Reads a streamed chat answer that must be text only: its text and the prompt tokens of its usage chunk. */
export async function readTextStream(stream: AsyncIterable<OpenAI.ChatCompletionChunk>): Promise<{ text: string; promptTokens: number }> {
  let text = "";
  let promptTokens = 0;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    assert.equal(chunk.choices[0]?.delta.tool_calls, undefined, "a text answer streams no tool calls");
    promptTokens = chunk.usage?.prompt_tokens ?? promptTokens;
  }
  return { text, promptTokens };
}
