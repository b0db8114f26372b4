// Function tools on /v1/responses through the official `openai` client against the real server
// and the tiny random model: forced calls come back as `function_call` output items with
// schema-valid arguments, whole and streamed with OpenAI's event types, and a full round trip
// (call, function_call_output, final answer) works.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";

let srv: RunningServer;
let client: OpenAI;
const ajv = new Ajv2020({ strict: false });

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 4, contextSize: 2048 }]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

const TOOLS: OpenAI.Responses.FunctionTool[] = [
  {
    type: "function",
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
    strict: true,
  },
  { type: "function", name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] }, strict: false },
];

function assertCall(item: OpenAI.Responses.ResponseOutputItem, names = ["get_weather", "add"]): asserts item is OpenAI.Responses.ResponseFunctionToolCall {
  assert.equal(item.type, "function_call");
  if (item.type !== "function_call") return;
  assert.match(item.id!, /^fc_/);
  assert.match(item.call_id, /^call_/);
  assert.equal(item.status, "completed");
  assert.ok(names.includes(item.name), `unexpected function ${item.name}`);
  const validate = ajv.compile(TOOLS.find((t) => t.name === item.name)!.parameters!);
  assert.ok(validate(JSON.parse(item.arguments)), `${item.arguments}: ${ajv.errorsText(validate.errors)}`);
}

async function post(body: unknown) {
  const res = await fetch(`${srv.url}/v1/responses`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { error?: { code: string; param: string | null; message: string } } };
}

describe("function tools", () => {
  test("required: function_call output items with valid arguments, for every seed", async () => {
    const rs = await Promise.all([1, 2, 3].map((seed) =>
      client.responses.create({ model: "tiny", input: "Weather in Oslo?", tools: TOOLS, tool_choice: "required", parallel_tool_calls: false, max_output_tokens: 300, seed } as OpenAI.Responses.ResponseCreateParamsNonStreaming),
    ));
    for (const r of rs) {
      assert.equal(r.status, "completed");
      assert.equal(r.output.length, 1);
      assertCall(r.output[0]!);
      assert.equal(r.output_text, "");
      assert.equal(r.tool_choice, "required");
      assert.equal(r.tools.length, 2);
      assert.equal(r.parallel_tool_calls, false);
    }
  });

  test("a named function forces that one; parallel calls are several items", async () => {
    const named = await client.responses.create({ model: "tiny", input: "Add", tools: TOOLS, tool_choice: { type: "function", name: "add" }, max_output_tokens: 300 });
    assertCall(named.output[0]!, ["add"]);
    const parallel = await client.responses.create({ model: "tiny", input: "Go", tools: TOOLS, tool_choice: "required", parallel_tool_calls: true, max_output_tokens: 600, seed: 9 } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    assert.ok(parallel.output.length >= 1);
    for (const item of parallel.output) assertCall(item);
    assert.equal(new Set(parallel.output.map((i) => (i as OpenAI.Responses.ResponseFunctionToolCall).call_id)).size, parallel.output.length);
  });

  test("streamed: output_item.added, arguments deltas, arguments.done, output_item.done, completed", async () => {
    const stream = await client.responses.create({ model: "tiny", input: "Weather?", tools: TOOLS, tool_choice: { type: "function", name: "get_weather" }, max_output_tokens: 300, stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    const deltas = events.filter((e): e is OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent => e.type === "response.function_call_arguments.delta");
    assert.ok(deltas.length > 1, "arguments come in pieces");
    assert.deepEqual(types, [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      ...deltas.map(() => "response.function_call_arguments.delta"),
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    const added = events[2] as OpenAI.Responses.ResponseOutputItemAddedEvent;
    assert.equal(added.item.type, "function_call");
    if (added.item.type !== "function_call") return;
    assert.equal(added.item.name, "get_weather");
    assert.equal(added.item.arguments, "");
    assert.equal(added.item.status, "in_progress");
    const args = deltas.map((d) => d.delta).join("");
    assert.ok(deltas.every((d) => d.item_id === added.item.id && d.output_index === 0));
    const done = events.find((e) => e.type === "response.function_call_arguments.done") as OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent;
    assert.equal(done.arguments, args);
    const itemDone = events.at(-2) as OpenAI.Responses.ResponseOutputItemDoneEvent;
    assertCall(itemDone.item, ["get_weather"]);
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    assert.deepEqual(completed.response.output, [itemDone.item]);
  });

  test("round trip: call, function_call_output, final answer (whole and streamed)", async () => {
    const first = await client.responses.create({ model: "tiny", input: "Weather in Oslo?", tools: TOOLS, tool_choice: "required", parallel_tool_calls: false, max_output_tokens: 300, seed: 2 } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    const call = first.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
    assertCall(call);
    const input: OpenAI.Responses.ResponseInput = [
      { role: "user", content: "Weather in Oslo?" },
      call,
      { type: "function_call_output", call_id: call.call_id, output: '{"sky": "cloudy", "temperature": 3}' },
    ];
    const answer = await client.responses.create({ model: "tiny", input, tools: TOOLS, tool_choice: "none", max_output_tokens: 6 });
    assert.equal(answer.output.length, 1);
    assert.equal(answer.output[0]!.type, "message");
    assert.ok(answer.output_text.length > 0);
    const bare = await client.responses.create({ model: "tiny", input: "Weather in Oslo?", tools: TOOLS, tool_choice: "none", max_output_tokens: 1 });
    assert.ok(answer.usage!.input_tokens > bare.usage!.input_tokens + 20, "the call and its output are in the prompt");
    const stream = await client.responses.create({ model: "tiny", input, tools: TOOLS, tool_choice: "none", max_output_tokens: 6, stream: true });
    let text = "";
    let last: OpenAI.Responses.ResponseStreamEvent | undefined;
    for await (const e of stream) {
      if (e.type === "response.output_text.delta") text += e.delta;
      assert.ok(!e.type.startsWith("response.function_call"), e.type);
      last = e;
    }
    assert.ok(text.length > 0);
    assert.ok(last?.type === "response.incomplete" || last?.type === "response.completed");
  });

  const refusals: Array<[string, Record<string, unknown>, string, string]> = [
    ["a function_call_output answering no call", { input: [{ type: "function_call_output", call_id: "call_x", output: "1" }] }, "input[0].call_id", "invalid_request"],
    ["a function_call whose arguments are not JSON", { input: [{ type: "function_call", call_id: "c", name: "add", arguments: "{a" }] }, "input[0].arguments", "invalid_request"],
    ["duplicate tool names", { tools: [TOOLS[1], TOOLS[1]] }, "tools[1].name", "invalid_request"],
    ["tool_choice naming an unknown function", { tools: TOOLS, tool_choice: { type: "function", name: "nope" } }, "tool_choice.name", "invalid_request"],
    ["a forced call beside text.format", { tools: TOOLS, tool_choice: "required", text: { format: { type: "json_object" } } }, "tool_choice", "invalid_request"],
  ];
  for (const [what, extra, param, code] of refusals) {
    test(`${what} is a 400 naming ${param}`, async () => {
      const { status, body } = await post({ model: "tiny", input: "Hello", ...extra });
      assert.equal(status, 400, JSON.stringify(body));
      assert.equal(body.error!.code, code);
      assert.equal(body.error!.param, param);
      assert.ok(!body.error!.message.includes(".function."), body.error!.message);
    });
  }

  test("a function tool without a name is a 400", async () => {
    const { status, body } = await post({ model: "tiny", input: "Hello", tools: [{ type: "function", parameters: {} }] });
    assert.equal(status, 400);
    assert.match(body.error!.message, /tools/);
  });
});
