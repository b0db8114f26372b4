// Tool calling on /v1/chat/completions through the official `openai` client against the real
// server. The tiny random model knows no JSON and no tools, which is the point: with
// `tool_choice: "required"` or a named function even it must answer with a call of an offered
// function whose arguments validate (ajv) against that function's parameters.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";
import { readTextStream } from "./helpers/streams.js";

let srv: RunningServer;
let client: OpenAI;
const ajv = new Ajv2020({ strict: false });

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 4, contextSize: 1024 }]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

const short = { type: "string", maxLength: 10 };
const TOOLS: OpenAI.ChatCompletionFunctionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: short, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
    },
  },
  {
    type: "function",
    function: { name: "add", description: "Adds two integers", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } },
  },
];
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Oslo?" }];

function assertCall(call: { type?: string; id?: string; function?: { name?: string; arguments?: string } }, names = ["get_weather", "add"]): void {
  assert.equal(call.type, "function");
  assert.match(call.id!, /^call_/);
  assert.ok(names.includes(call.function!.name!), `unexpected function ${call.function!.name}`);
  const tool = TOOLS.find((t) => t.function.name === call.function!.name)!;
  const validate = ajv.compile(tool.function.parameters!);
  const args = JSON.parse(call.function!.arguments!) as unknown;
  assert.ok(validate(args), `${call.function!.arguments} does not validate: ${ajv.errorsText(validate.errors)}`);
}

describe("forced calls", () => {
  test("required: a valid call of an offered function, every seed", async () => {
    const rs = await Promise.all([1, 2, 3, 4].map((seed) =>
      client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: false, max_tokens: 300, temperature: 1, seed }),
    ));
    for (const r of rs) {
      const c = r.choices[0]!;
      assert.equal(c.finish_reason, "tool_calls");
      assert.equal(c.message.content, null);
      assert.equal(c.message.tool_calls!.length, 1);
      assertCall(c.message.tool_calls![0]!);
    }
  });

  test("a named function forces that one", async () => {
    for (const seed of [5, 6]) {
      const r = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: { type: "function", function: { name: "add" } }, max_tokens: 300, seed });
      assert.equal(r.choices[0]!.finish_reason, "tool_calls");
      assertCall(r.choices[0]!.message.tool_calls![0]!, ["add"]);
    }
  });

  test("parallel: one or more valid calls", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: true, max_tokens: 600, seed: 9 });
    const c = r.choices[0]!;
    assert.equal(c.finish_reason, "tool_calls");
    assert.ok(c.message.tool_calls!.length >= 1);
    for (const call of c.message.tool_calls!) assertCall(call);
    assert.equal(new Set(c.message.tool_calls!.map((x) => x.id)).size, c.message.tool_calls!.length);
  });

  test("streamed: id and name first, arguments in pieces that join to valid JSON", async () => {
    const stream = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: "required", parallel_tool_calls: true, max_tokens: 600, seed: 9, stream: true });
    const calls: Array<{ id?: string; type?: string; function: { name?: string; arguments: string }; pieces: number }> = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      finish = choice.finish_reason ?? finish;
      for (const d of choice.delta.tool_calls ?? []) {
        if (d.id) {
          assert.equal(d.index, calls.length, "a new call opens the next index");
          assert.ok(d.function?.name, "the name comes with the id");
          calls.push({ id: d.id, type: d.type, function: { name: d.function.name, arguments: d.function.arguments ?? "" }, pieces: 0 });
        } else {
          calls[d.index]!.function.arguments += d.function?.arguments ?? "";
          calls[d.index]!.pieces++;
        }
      }
    }
    assert.equal(finish, "tool_calls");
    assert.ok(calls.length >= 2, "the seed of the parallel test above writes two calls");
    for (const call of calls) {
      assertCall(call);
      assert.ok(call.pieces > 1, "arguments came in pieces");
    }
  });
});

describe("round trip", () => {
  async function roundTrip(stream: boolean) {
    const first = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 300, seed: 1 });
    const call = first.choices[0]!.message.tool_calls![0]!;
    const history: OpenAI.ChatCompletionMessageParam[] = [
      ...messages,
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: '{"temperature": 3, "sky": "cloudy"}' },
    ];
    const body = { model: "tiny", messages: history, tools: TOOLS, tool_choice: "none" as const, max_tokens: 12, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming;
    if (!stream) {
      const r = await client.chat.completions.create(body);
      assert.equal(r.choices[0]!.finish_reason, "length");
      assert.equal(typeof r.choices[0]!.message.content, "string");
      assert.equal(r.choices[0]!.message.tool_calls, undefined);
      return r.usage!.prompt_tokens;
    }
    const s = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const { text, promptTokens } = await readTextStream(s);
    assert.ok(text.length > 0);
    return promptTokens;
  }

  test("call, tool result, final answer: whole and streamed", async () => {
    const [whole, streamed] = [await roundTrip(false), await roundTrip(true)];
    assert.ok(whole > 100 && streamed > 100, "the tool prompt and the history are in the prompt");
  });

  test("auto: text that is not a call stays text; a streamed one too", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, tool_choice: "auto", max_tokens: 8, temperature: 0, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(r.choices[0]!.finish_reason, "length");
    assert.equal(typeof r.choices[0]!.message.content, "string");
    const s = await client.chat.completions.create({ model: "tiny", messages, tools: TOOLS, max_tokens: 8, temperature: 0, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = "";
    for await (const chunk of s) text += chunk.choices[0]?.delta.content ?? "";
    assert.equal(text, r.choices[0]!.message.content, "the same greedy text, streamed");
  });

  test("auto: an answer that is a JSON call becomes tool_calls, whole and streamed", async () => {
    // The random model never writes a call by itself: a raw grammar makes it write one, which
    // `auto` (not constrained by us) must recognise after the fact.
    const grammar = 'root ::= " {\\"name\\": \\"add\\", \\"arguments\\": {\\"a\\": 1, \\"b\\": 2}}"';
    const body = { model: "tiny", messages, tools: TOOLS, tool_choice: "auto", max_tokens: 60, grammar } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const r = await client.chat.completions.create(body);
    assert.equal(r.choices[0]!.finish_reason, "tool_calls");
    assert.equal(r.choices[0]!.message.content, null);
    const call = r.choices[0]!.message.tool_calls![0]!;
    assertCall(call, ["add"]);
    assert.deepEqual(JSON.parse((call as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments), { a: 1, b: 2 });
    const s = await client.chat.completions.create({ ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    let finish: string | null = null;
    let content = "";
    const streamed: string[] = [];
    for await (const chunk of s) {
      finish = chunk.choices[0]?.finish_reason ?? finish;
      content += chunk.choices[0]?.delta.content ?? "";
      for (const d of chunk.choices[0]?.delta.tool_calls ?? []) streamed.push(`${d.function?.name}:${d.function?.arguments}`);
    }
    assert.equal(finish, "tool_calls");
    assert.equal(content, "");
    assert.deepEqual(streamed, ['add:{"a":1,"b":2}']);
  });

  test("/v1/models says no model uses its template's own tool support", async () => {
    const list = (await (await fetch(`${srv.baseURL}/models`)).json()) as { data: Array<{ tools_native: boolean }> };
    assert.equal(list.data[0]!.tools_native, false);
  });
});

describe("refusals name the field", () => {
  async function refused(body: Record<string, unknown>) {
    const err = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 5, ...body } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming).then(
      () => assert.fail("expected a 400"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, 400);
    return err.error as { message: string; code: string; param: string | null };
  }

  test("a tool without a name", async () => {
    const e = await refused({ tools: [{ type: "function", function: { description: "nameless" } }] });
    assert.equal(e.param, "tools[0].function.name");
  });

  test("duplicate tool names", async () => {
    const e = await refused({ tools: [TOOLS[0], TOOLS[1], TOOLS[0]] });
    assert.equal(e.param, "tools[2].function.name");
    assert.match(e.message, /get_weather.*tools\[0\]/);
  });

  test("tool_choice naming an unknown function, or without tools", async () => {
    assert.equal((await refused({ tools: TOOLS, tool_choice: { type: "function", function: { name: "nope" } } })).param, "tool_choice.function.name");
    assert.equal((await refused({ tool_choice: "required" })).param, "tool_choice");
  });

  test("a tool message without a matching call id", async () => {
    const history = [...messages, { role: "assistant", tool_calls: [{ id: "call_1", type: "function", function: { name: "add", arguments: '{"a":1,"b":2}' } }] }];
    assert.equal((await refused({ messages: [...history, { role: "tool", tool_call_id: "call_2", content: "3" }] })).param, "messages[2].tool_call_id");
    assert.equal((await refused({ messages: [...history, { role: "tool", content: "3" }] })).param, "messages[2].tool_call_id");
  });

  test("parameters a grammar cannot enforce name the function", async () => {
    const bad = { type: "function", function: { name: "f", parameters: { type: "object", properties: { s: { type: "string", pattern: "^x" } } } } };
    const e = await refused({ tools: [TOOLS[0], bad], tool_choice: "required" });
    assert.equal(e.param, "tools[1].function.parameters");
  });
});
