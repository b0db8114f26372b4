// Native tool templates and call syntaxes without a server: a GGUF written with a chat template in
// its metadata is loaded by the engine (TEST_ENGINE) and its template taken the way the worker
// takes it (engine/chat-template.ts), and the parsers of tool-calls.ts take literal model outputs
// of each syntax.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ToolTemplate } from "../src/engine/chat-template.js";
import { loadEngine } from "../src/engine/load-engine.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { AutoCallSplitter, CallStreamer, nativeChat, parseToolOutput, toolPlan, type CallEvent, type CallSyntax, type ToolPlan } from "../src/server/tool-calls.js";
import { MoltbotError } from "../src/errors.js";
import { TEST_ENGINE, tempDir } from "./helpers/fixtures.js";
import { CHATML_TEMPLATE, HERMES_TEMPLATE, LLAMA3_TEMPLATE } from "./helpers/chat-templates.js";

const TOOLS = [
  { type: "function" as const, function: { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
  { type: "function" as const, function: { name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } } } } },
];

async function modelWith(template: string | undefined) {
  const file = path.join(await tempDir("moltbot-tpl-"), "m.gguf");
  await writeRandomLlamaModel(file, randomModelOptions("tiny", template === undefined ? {} : { chatTemplate: template }));
  const engine = await loadEngine(TEST_ENGINE, { modelPath: file, contextSize: 64, parallel: 1, threads: 1, embedding: false });
  try {
    return await ToolTemplate.of(engine.chatTemplateSource());
  } finally {
    await engine.destroy();
  }
}

const autoPlan = async () => (await toolPlan({ tools: TOOLS, tool_choice: "auto" }))!;

describe("template detection and rendering", () => {
  test("a Hermes template renders the tools, the call and its result in its own format", async () => {
    const t = await modelWith(HERMES_TEMPLATE);
    assert.equal(t?.syntax, "hermes");
    const plan = await autoPlan();
    const chat = nativeChat(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Weather in Oslo?" },
        { role: "assistant", content: "", tool_calls: [{ id: "call_a", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }] },
        { role: "tool", content: "cloudy", tool_call_id: "call_a" },
      ],
      plan,
    );
    const text = t!.render(chat);
    assert.ok(text.startsWith("<|im_start|>system\nBe brief.\n\n# Tools"), text.slice(0, 80));
    // Each tool as one JSON line inside <tools> (Jinja's tojson: Python's separators), the template's own format.
    const line = (v: unknown) => JSON.stringify(v).replaceAll('":', '": ').replaceAll(',"', ', "');
    assert.ok(text.includes(`<tools>\n${line(chat.tools[0])}\n${line(chat.tools[1])}\n</tools>`), text);
    assert.ok(text.includes('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>'), text);
    assert.ok(text.includes("<tool_response>\ncloudy\n</tool_response>"), text);
    assert.ok(text.endsWith("<|im_start|>assistant\n"));
  });

  test("a Llama 3.1 template is recognised by its ipython role; BOS is left to the tokenizer", async () => {
    const t = await modelWith(LLAMA3_TEMPLATE);
    assert.equal(t?.syntax, "llama3");
    const text = t!.render(nativeChat([{ role: "user", content: "Add 2 and 3" }], await autoPlan()));
    assert.ok(text.startsWith("<|start_header_id|>user"), "the template's BOS text is dropped: the tokenizer adds BOS");
    assert.ok(text.includes('"name": "add"'));
  });

  test("no template, or one without a tool section: the generic prompt", async () => {
    assert.equal(await modelWith(undefined), undefined);
    assert.equal(await modelWith(CHATML_TEMPLATE), undefined);
    // A template that names the marker but never prints the tools is not trusted.
    assert.equal(await modelWith(`{# <tool_call> #}${CHATML_TEMPLATE}`), undefined);
  });

  test("a template that refuses the chat is a 400 chat_template_error", async () => {
    const t = await modelWith(`{%- if messages[0].role == 'assistant' %}{{ raise_exception('Conversation must start with a user turn') }}{%- endif %}${HERMES_TEMPLATE}`);
    assert.ok(t);
    assert.throws(
      () => t.render({ messages: [{ role: "assistant", content: "hi" }], tools: [] }),
      (e: unknown) => e instanceof MoltbotError && e.code === "chat_template_error" && /must start with a user turn/.test(e.message),
    );
  });
});

describe("parsing model outputs", () => {
  const names = (p: ReturnType<typeof parseToolOutput>) => p?.calls.map((c) => [c.name, JSON.parse(c.arguments) as unknown]);

  test("hermes: text before a call, several calls, a missing last closing tag", async () => {
    const plan = await autoPlan();
    const one = parseToolOutput('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', plan, "hermes");
    assert.equal(one?.content, "Let me look.");
    assert.deepEqual(names(one), [["get_weather", { city: "Oslo" }]]);
    const two = parseToolOutput('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 3}"}', plan, "hermes");
    assert.equal(two?.content, null);
    assert.deepEqual(names(two), [["add", { a: 1, b: 2 }], ["add", { a: 3 }]]);
    assert.notEqual(two!.calls[0]!.id, two!.calls[1]!.id);
  });

  test("hermes: a malformed call, an unknown function or no call is plain content", async () => {
    const plan = await autoPlan();
    assert.equal(parseToolOutput('<tool_call>\n{"name": "add", "arguments": {"a": 1\n</tool_call>', plan, "hermes"), undefined);
    assert.equal(parseToolOutput('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', plan, "hermes"), undefined);
    assert.equal(parseToolOutput("The weather is fine.", plan, "hermes"), undefined);
  });

  test("llama3: a JSON call with parameters, optionally after <|python_tag|>; text is text", async () => {
    const plan = await autoPlan();
    assert.deepEqual(names(parseToolOutput(' {"name": "add", "parameters": {"a": 2, "b": 3}}', plan, "llama3")), [["add", { a: 2, b: 3 }]]);
    assert.deepEqual(names(parseToolOutput('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}', plan, "llama3")), [["get_weather", { city: "Rome" }]]);
    assert.equal(parseToolOutput('Sure: {"name": "add", "parameters": {"a": 2}}', plan, "llama3"), undefined);
    assert.equal(parseToolOutput('{"name": "add", "parameters": ', plan, "llama3"), undefined);
  });

  test("generic: one object or an array of them", async () => {
    const plan = await autoPlan();
    assert.deepEqual(names(parseToolOutput('[{"name": "add", "arguments": {"a": 1}}, {"name": "add", "arguments": {}}]', plan, "generic")), [["add", { a: 1 }], ["add", {}]]);
    assert.equal(parseToolOutput("{not json", plan, "generic"), undefined);
  });
});

describe("streaming", () => {
  /** Feeds `text` in pieces of `size` characters. */
  function stream(text: string, syntax: CallSyntax, size: number): CallEvent[] {
    const s = new CallStreamer(syntax);
    const out: CallEvent[] = [];
    for (let i = 0; i < text.length; i += size) out.push(...s.push(text.slice(i, i + size)));
    return out;
  }
  const joined = (events: CallEvent[]) => {
    const calls: Array<{ name: string; args: string }> = [];
    for (const e of events) {
      if ("name" in e) calls.push({ name: e.name, args: "" });
      else calls[e.index]!.args += e.args;
    }
    return calls;
  };

  for (const size of [1, 3, 1000]) {
    test(`forced calls stream name first, then arguments in pieces (pieces of ${size})`, () => {
      const hermes = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": {"c": "}"}}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>';
      assert.deepEqual(joined(stream(hermes, "hermes", size)), [
        { name: "add", args: '{"a": 1, "b": {"c": "}"}}' },
        { name: "get_weather", args: '{"city": "Oslo"}' },
      ]);
      assert.deepEqual(joined(stream('{"name": "add", "parameters": {"a": 1}}', "llama3", size)), [{ name: "add", args: '{"a": 1}' }]);
    });
  }

  test("auto, hermes: text streams until a call may begin, the call is held", () => {
    const s = new AutoCallSplitter("hermes");
    assert.equal(s.push("I will check"), "I will check");
    assert.equal(s.push(" now.\n<tool"), " now.\n", "a possible start of <tool_call> is held");
    assert.equal(s.push("box> is not a call"), "<toolbox> is not a call");
    assert.equal(s.push(" <tool_call>\n{"), " ");
    assert.equal(s.push('"name": "add"}'), "");
    assert.equal(s.held, '<tool_call>\n{"name": "add"}');
  });

  test("auto, generic and llama3: output starting with { is held whole, other text streams", () => {
    for (const syntax of ["generic", "llama3"] as const) {
      const held = new AutoCallSplitter(syntax);
      assert.equal(held.push("  "), "");
      assert.equal(held.push('{"name"'), "");
      assert.equal(held.held, '  {"name"');
      const text = new AutoCallSplitter(syntax);
      assert.equal(text.push(" Hello"), " Hello");
      assert.equal(text.push(" {x}"), " {x}");
    }
  });
});

describe("forced grammars", () => {
  test("every syntax gets its grammar: hermes wraps the call JSON in <tool_call> blocks", async () => {
    const plan: ToolPlan = (await toolPlan({ tools: TOOLS, tool_choice: "required", parallel_tool_calls: true }))!;
    const hermes = plan.nativeGrammars!.hermes;
    assert.match(hermes, /^root ::= tool-call-block \("\\n" tool-call-block\)\{0,7\}$/m);
    assert.match(hermes, /^tool-call-block ::= "<tool_call>\\n" tool-call-json "\\n<\/tool_call>"$/m);
    assert.match(hermes, /^tool-call-json ::= /m);
    assert.doesNotMatch(hermes, /^root ::= .*\n[\s\S]*^root ::=/m, "one root rule");
    assert.match(plan.nativeGrammars!.llama3, /\\"parameters\\"/);
  });
});
