// Tool calling with a model's own chat template, through the official `openai` client against the
// real server: a tiny random model written with a Hermes-style Jinja template in its GGUF metadata
// gets its prompt rendered by that template and its calls constrained and parsed in the
// template's `<tool_call>` syntax; the plain tiny model beside it keeps the generic tool prompt.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";
import { HERMES_TEMPLATE } from "./helpers/chat-templates.js";
import { readTextStream } from "./helpers/streams.js";

let srv: RunningServer;
let client: OpenAI;
const ajv = new Ajv2020({ strict: false });

/** Adds a model version whose GGUF carries `template` as its chat template. */
async function addTemplatedModel(root: string, name: string, template: string): Promise<void> {
  const dir = path.join(root, name, "v1");
  await mkdir(dir, { recursive: true });
  await writeRandomLlamaModel(path.join(dir, "weights.bin"), randomModelOptions("tiny", { chatTemplate: template, contextLength: 2048 }));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ name, type: "llm", parallel: 2, context_size: 2048 }));
}

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1", parallel: 2, contextSize: 1024 }]);
  await addTemplatedModel(repo, "hermes", HERMES_TEMPLATE);
  // The same template, refusing a chat that starts with an assistant turn (as many templates do).
  await addTemplatedModel(repo, "strict", `{%- if messages[0].role == 'assistant' %}{{ raise_exception('Conversation roles must start with user') }}{%- endif %}${HERMES_TEMPLATE}`);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

const TOOLS: OpenAI.ChatCompletionFunctionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
    },
  },
  { type: "function", function: { name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
];
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Oslo?" }];

function assertCall(call: { type?: string; id?: string; function?: { name?: string; arguments?: string } }): void {
  assert.equal(call.type, "function");
  assert.match(call.id!, /^call_/);
  const tool = TOOLS.find((t) => t.function.name === call.function!.name);
  assert.ok(tool, `unexpected function ${call.function!.name}`);
  const validate = ajv.compile(tool.function.parameters!);
  assert.ok(validate(JSON.parse(call.function!.arguments!)), `${call.function!.arguments} does not validate: ${ajv.errorsText(validate.errors)}`);
}

test("/v1/models says which models render tools with their own template", async () => {
  const list = (await client.models.list()).data as unknown as Array<{ id: string; tools_native: boolean }>;
  assert.equal(list.find((m) => m.id === "hermes")?.tools_native, true);
  assert.equal(list.find((m) => m.id === "tiny")?.tools_native, false);
  // One model's own entry says the same.
  assert.equal(((await client.models.retrieve("hermes")) as unknown as { tools_native: boolean }).tools_native, true);
  assert.equal(((await client.models.retrieve("tiny")) as unknown as { tools_native: boolean }).tools_native, false);
});

describe("hermes template", () => {
  test("required: a <tool_call> the model writes parses back into valid tool_calls", async () => {
    const rs = await Promise.all([1, 2, 3].map((seed) =>
      client.chat.completions.create({ model: "hermes", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: false, max_tokens: 400, seed }),
    ));
    for (const r of rs) {
      const c = r.choices[0]!;
      assert.equal(c.finish_reason, "tool_calls");
      assert.equal(c.message.content, null);
      assert.equal(c.message.tool_calls!.length, 1);
      assertCall(c.message.tool_calls![0]!);
      // The template's tool section is in the prompt: far longer than the chat alone.
      assert.ok(r.usage!.prompt_tokens > 150, `prompt of ${r.usage!.prompt_tokens} tokens`);
    }
  });

  test("parallel calls are several <tool_call> blocks", async () => {
    const r = await client.chat.completions.create({ model: "hermes", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: true, max_tokens: 800, seed: 4 });
    const c = r.choices[0]!;
    assert.equal(c.finish_reason, "tool_calls");
    assert.ok(c.message.tool_calls!.length >= 1);
    for (const call of c.message.tool_calls!) assertCall(call);
  });

  test("streamed: id and name first, then the arguments in pieces", async () => {
    const stream = await client.chat.completions.create({ model: "hermes", messages, tools: TOOLS, tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 400, seed: 7, stream: true });
    const calls: Array<{ id?: string; type?: string; function: { name?: string; arguments: string }; pieces: number }> = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      finish = choice.finish_reason ?? finish;
      assert.ok(!choice.delta.content, "no text of the <tool_call> syntax leaks into content");
      for (const d of choice.delta.tool_calls ?? []) {
        if (d.id) calls.push({ id: d.id, type: d.type, function: { name: d.function?.name, arguments: d.function?.arguments ?? "" }, pieces: 0 });
        else {
          calls[d.index]!.function.arguments += d.function?.arguments ?? "";
          calls[d.index]!.pieces++;
        }
      }
    }
    assert.equal(finish, "tool_calls");
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.function.name, "get_weather");
    assertCall(calls[0]!);
    assert.ok(calls[0]!.pieces > 1, "arguments came in pieces");
  });

  test("round trip: the call and its result are rendered by the template, the answer is text", async () => {
    const first = await client.chat.completions.create({ model: "hermes", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: false, max_tokens: 400, seed: 2 });
    const call = first.choices[0]!.message.tool_calls![0]!;
    const history: OpenAI.ChatCompletionMessageParam[] = [...messages, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "cloudy, 3 degrees" }];
    // ignore_eos (llama.cpp's extension) makes the random model write something.
    const body = { model: "hermes", messages: history, tools: TOOLS, tool_choice: "none", max_tokens: 8, ignore_eos: true, stream: true, stream_options: { include_usage: true } };
    const s = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsStreaming);
    const { text, promptTokens: prompt } = await readTextStream(s);
    assert.ok(text.length > 0);
    assert.ok(prompt > first.usage!.prompt_tokens, "the history adds the call and its result to the prompt");
  });

  test("a chat the template refuses is a 400 chat_template_error with its reason", async () => {
    await assert.rejects(
      client.chat.completions.create({ model: "strict", messages: [{ role: "assistant", content: "Hi" }, ...messages], tools: TOOLS, max_tokens: 4 }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && e.code === "chat_template_error" && /must start with user/.test(e.message),
    );
    // Without tools the engine's own template rendering applies, as before.
    const r = await client.chat.completions.create({ model: "strict", messages: [{ role: "assistant", content: "Hi" }, ...messages], max_tokens: 4 });
    assert.ok(r.choices[0]);
  });
});

test("/v1/responses: a forced call in the template's syntax streams as a function_call item", async () => {
  const tools: OpenAI.Responses.FunctionTool[] = TOOLS.map((t) => ({ type: "function", name: t.function.name, parameters: t.function.parameters ?? null, strict: false }));
  const stream = await client.responses.create({ model: "hermes", input: "Weather in Oslo?", tools, tool_choice: "required", parallel_tool_calls: false, max_output_tokens: 400, stream: true });
  let args = "";
  let done: OpenAI.Responses.ResponseCompletedEvent | undefined;
  for await (const e of stream) {
    assert.notEqual(e.type, "response.output_text.delta", "no text of the <tool_call> syntax leaks");
    if (e.type === "response.function_call_arguments.delta") args += e.delta;
    if (e.type === "response.completed") done = e;
  }
  assert.ok(done, "completed");
  const item = done.response.output[0]!;
  assert.equal(done.response.output.length, 1);
  assert.equal(item.type, "function_call");
  if (item.type !== "function_call") return;
  assert.equal(item.arguments, args);
  assertCall({ type: "function", id: item.call_id, function: { name: item.name, arguments: item.arguments } });
});
