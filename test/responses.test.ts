// The Responses API end to end: the official `openai` client's `responses.create` against the
// real server and a tiny generated model, streamed and whole.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";

let srv: RunningServer;
let client: OpenAI;

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 4, contextSize: 4096 }]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

async function post(body: unknown) {
  const res = await fetch(`${srv.url}/v1/responses`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as { error?: { message: string; type: string; code: string; param: string | null } } & Record<string, unknown> };
}

describe("responses", () => {
  test("text input: a completed response with one output_text message and usage", async () => {
    const { data: r, response } = await client.responses.create({ model: "tiny", input: "Hello there", max_output_tokens: 64, temperature: 0, store: false }).withResponse();
    assert.equal(response.headers.get("x-moltbot-model-version"), "v1.0");
    assert.match(r.id, /^resp_/);
    assert.equal(r.object, "response");
    assert.equal(r.model, "tiny");
    assert.ok(r.status === "completed" || r.status === "incomplete");
    assert.equal(r.output.length, 1);
    const item = r.output[0]!;
    assert.equal(item.type, "message");
    if (item.type !== "message") return;
    assert.match(item.id, /^msg_/);
    assert.equal(item.role, "assistant");
    const part = item.content[0]!;
    assert.equal(part.type, "output_text");
    if (part.type !== "output_text") return;
    assert.deepEqual(part.annotations, []);
    assert.equal(r.output_text, part.text, "the client's output_text convenience reads our output");
    assert.ok(r.usage!.input_tokens > 0);
    assert.ok(r.usage!.output_tokens > 0);
    assert.equal(r.usage!.total_tokens, r.usage!.input_tokens + r.usage!.output_tokens);
    assert.equal(r.usage!.output_tokens_details.reasoning_tokens, 0);
    assert.equal(typeof r.usage!.input_tokens_details.cached_tokens, "number");
    assert.equal((r as unknown as { store: boolean }).store, false);
  });

  test("message input with instructions: the instructions are part of the prompt", async () => {
    const input = [
      { role: "user" as const, content: "Hi" },
      { type: "message" as const, role: "assistant" as const, content: [{ type: "output_text" as const, text: "Hello", annotations: [] }] },
      { role: "user" as const, content: [{ type: "input_text" as const, text: "Tell me more" }] },
    ];
    const bare = await client.responses.create({ model: "tiny", input: input as OpenAI.Responses.ResponseInput, max_output_tokens: 4, temperature: 0 });
    const instructed = await client.responses.create({ model: "tiny", input: input as OpenAI.Responses.ResponseInput, instructions: "You are terse.", max_output_tokens: 4, temperature: 0 });
    assert.ok(instructed.usage!.input_tokens > bare.usage!.input_tokens, `${instructed.usage!.input_tokens} vs ${bare.usage!.input_tokens}`);
    assert.equal(instructed.instructions, "You are terse.");
  });

  test("max_output_tokens reached: status incomplete, reason max_output_tokens", async () => {
    const r = await client.responses.create({ model: "tiny", input: "Hello", max_output_tokens: 3, temperature: 0 });
    assert.equal(r.status, "incomplete");
    assert.deepEqual(r.incomplete_details, { reason: "max_output_tokens" });
    assert.equal(r.usage!.output_tokens, 3);
    assert.equal((r.output[0] as { status: string }).status, "incomplete");
  });

  test("stream: the typed events in order, deltas concatenating to the final text", async () => {
    const stream = await client.responses.create({ model: "tiny", input: "Hello", max_output_tokens: 12, temperature: 0, stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === "response.output_text.delta");
    assert.ok(deltas.length >= 1);
    assert.deepEqual(types, [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...deltas.map(() => "response.output_text.delta"),
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.incomplete",
    ]);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    const text = deltas.map((e) => (e as OpenAI.Responses.ResponseTextDeltaEvent).delta).join("");
    const done = events.find((e) => e.type === "response.output_text.done") as OpenAI.Responses.ResponseTextDoneEvent;
    assert.equal(done.text, text);
    const last = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    assert.equal(last.response.output_text ?? (last.response.output[0] as OpenAI.Responses.ResponseOutputMessage).content.map((p) => (p as { text: string }).text).join(""), text);
    assert.equal(last.response.usage!.output_tokens, 12);
    assert.equal((events[0] as OpenAI.Responses.ResponseCreatedEvent).response.status, "in_progress");
  });

  test("stream that finishes: response.completed", async () => {
    // A one-value schema: the grammar leaves nothing after it but the end of generation.
    const stream = await client.responses.create({
      model: "tiny",
      input: "Pick",
      max_output_tokens: 50,
      stream: true,
      text: { format: { type: "json_schema", name: "pick", schema: { enum: ["yes", "no"] }, strict: true } },
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const last = events.at(-1)!;
    assert.equal(last.type, "response.completed");
    if (last.type !== "response.completed") return;
    assert.equal(last.response.status, "completed");
    assert.equal(last.response.incomplete_details, null);
  });

  test("text.format json_schema: the output validates", async () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer" }, tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 3 } },
      required: ["name", "age", "tags"],
      additionalProperties: false,
    };
    const r = await client.responses.create({ model: "tiny", input: "Describe a person as JSON.", max_output_tokens: 300, temperature: 0, text: { format: { type: "json_schema", name: "person", schema, strict: true } } } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    assert.equal(r.status, "completed", r.output_text);
    const validate = new Ajv2020({ strict: false }).compile(schema);
    const value = JSON.parse(r.output_text) as unknown;
    assert.ok(validate(value), `${r.output_text}: ${JSON.stringify(validate.errors)}`);
  });

  test("a stream past its deadline ends with an error event, no response.completed", async () => {
    // A schema that needs a few thousand characters: the generation outlasts the deadline.
    const schema = { type: "array", items: { type: "string", minLength: 40, maxLength: 40 }, minItems: 60, maxItems: 60 };
    const stream = await client.responses.create({
      model: "tiny",
      input: "Go",
      stream: true,
      timeout: 0.3,
      text: { format: { type: "json_schema", name: "long", schema } },
    } as unknown as OpenAI.Responses.ResponseCreateParamsStreaming);
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const deltas = events.filter((e) => e.type === "response.output_text.delta").length;
    assert.ok(deltas > 1, `text streamed before the deadline (${deltas} deltas)`);
    const last = events.at(-1)!;
    assert.equal(last.type, "error", JSON.stringify(last));
    if (last.type !== "error") return;
    assert.equal(last.code, "request_timeout");
    assert.equal(last.sequence_number, events.length - 1);
    assert.ok(!events.some((e) => e.type === "response.completed" || e.type === "response.incomplete"));
  });

  test("text.format json_object: the output is a JSON object", async () => {
    const r = await client.responses.create({ model: "tiny", input: "JSON please", max_output_tokens: 300, text: { format: { type: "json_object" } } });
    if (r.status === "completed") assert.equal(typeof JSON.parse(r.output_text), "object");
    else assert.match(r.output_text, /^\{/);
  });

  test("a schema constrained decoding cannot enforce is refused naming text.format.schema", async () => {
    const { status, body } = await post({ model: "tiny", input: "x", text: { format: { type: "json_schema", name: "p", schema: { type: "string", pattern: "^a+$" } } } });
    assert.equal(status, 400);
    assert.equal(body.error!.code, "unsupported_parameter");
    assert.equal(body.error!.param, "text.format.schema");
  });

  const refusals: Array<[string, Record<string, unknown>, string]> = [
    ["a web_search tool", { tools: [{ type: "web_search" }] }, "tools[0].type"],
    ["a hosted tool_choice", { tool_choice: { type: "file_search" } }, "tool_choice.type"],
    ["max_tool_calls", { max_tool_calls: 2 }, "max_tool_calls"],
    ["previous_response_id", { previous_response_id: "resp_1" }, "previous_response_id"],
    ["reasoning", { reasoning: { effort: "low" } }, "reasoning"],
    ["background", { background: true }, "background"],
    ["store: true", { store: true }, "store"],
    ["include", { include: ["message.output_text.logprobs"] }, "include"],
    ["conversation", { conversation: "conv_1" }, "conversation"],
    ["an input image", { input: [{ role: "user", content: [{ type: "input_image", image_url: "data:image/png;base64,AA" }] }] }, "input[0].content[0].type"],
    ["a reasoning item", { input: [{ type: "reasoning", summary: [] }] }, "input[0].type"],
  ];
  for (const [what, extra, param] of refusals) {
    test(`${what} is a 400 naming it`, async () => {
      const { status, body } = await post({ model: "tiny", input: "Hello", ...extra });
      assert.equal(status, 400, JSON.stringify(body));
      assert.equal(body.error!.code, "unsupported_parameter");
      assert.equal(body.error!.param, param);
      assert.ok(body.error!.message.includes(param.split("[")[0]!), body.error!.message);
    });
  }

  test("what asks for nothing is accepted: empty tools, store false, metadata, user", async () => {
    const { status, headers } = await post({ model: "tiny", input: "Hello", max_output_tokens: 2, tools: [], store: false, metadata: { k: "v" }, user: "u", tool_choice: "auto" });
    assert.equal(status, 200);
    assert.equal(headers.get("x-moltbot-model-version"), "v1.0");
  });
});
