// Lazy grammars (GenerationParams.grammarTriggers, `tool_choice: auto`): the output is free
// until a trigger matches, then the grammar holds from the trigger's start. On the FFI engine
// with the tiny random model (which never writes a call of its own accord, so the triggers here
// fire on its ordinary text), then `auto` over several seeds through the real server, generic
// and Hermes templates: every answer is text or a call whose arguments validate.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { loadFfiEngine } from "../src/engine/ffi-engine.js";
import type { Engine, GenerationParams } from "../src/engine/types.js";
import { completionLimit } from "../src/workers/generation.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { toolPlan } from "../src/server/tool-calls.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";
import { HERMES_TEMPLATE } from "./helpers/chat-templates.js";

const ajv = new Ajv2020({ strict: false });
const TOOLS: OpenAI.ChatCompletionFunctionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
    },
  },
  { type: "function", function: { name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
];

function assertValidCall(name: string, args: unknown): void {
  const tool = TOOLS.find((t) => t.function.name === name);
  assert.ok(tool, `unexpected function ${name}`);
  const validate = ajv.compile(tool.function.parameters!);
  assert.ok(validate(args), `${JSON.stringify(args)} does not validate: ${ajv.errorsText(validate.errors)}`);
}

describe("engine", () => {
  let dir: string;
  let engine: Engine;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-lazy-"));
    const modelPath = path.join(dir, "tiny.gguf");
    await writeRandomLlamaModel(modelPath, randomModelOptions("tiny"));
    engine = await loadFfiEngine({ modelPath, contextSize: 512, parallel: 2, threads: 1, embedding: false });
  });
  after(async () => {
    await engine?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function generate(params: Partial<GenerationParams>): Promise<{ text: string; finish: string }> {
    const prompt = engine.tokenize("The weather today", true);
    const full: GenerationParams = { temperature: 1, topP: 1, seed: 1, maxTokens: 200, minTokens: 0, ignoreEos: false, stop: [], topLogprobs: null, cachePrompt: true, ...params };
    let text = "";
    const r = await engine.generate({
      promptTokens: prompt, params: full, maxTokens: completionLimit(engine.info.contextSize, prompt.length, full.maxTokens),
      onToken: (t) => { text += t.text; return true; },
    });
    return { text, finish: r.finishReason };
  }

  // After 12 characters of free text, the next word (a token starting with a space) triggers.
  const afterTwelve = String.raw`^[\s\S]{12}[^ ]*( )`;

  test("free until the trigger, then the grammar holds from the trigger's token on", async () => {
    for (const seed of [1, 2, 3]) {
      const { text, finish } = await generate({ seed, grammar: 'root ::= (" " [a-z]+){1,6} "."', grammarTriggers: { patterns: [afterTwelve] } });
      const m = /^([\s\S]{12}[^ ]*)( [\s\S]*)$/.exec(text);
      assert.ok(m, `the trigger fired: ${JSON.stringify(text)}`);
      assert.match(m[2]!, /^( [a-z]+){1,6}\.$/, `constrained after the trigger: ${JSON.stringify(text)}`);
      assert.equal(finish, "stop", "the grammar completes and the model stops");
    }
  });

  test("a trigger whose text the grammar refuses is drawn again, and the call parses", async () => {
    // The call grammar `auto` builds; the model's words never start a JSON call, so each
    // triggering draw is refused until the grammar takes over the row.
    const plan = (await toolPlan({ tools: TOOLS, tool_choice: "auto", parallel_tool_calls: false }))!;
    // Refused draws push this model off spaces, so its text may also end before a call starts;
    // whatever starts at the trigger is a whole, valid call.
    let calls = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const { text } = await generate({ seed, maxTokens: 300, grammar: plan.grammar!, grammarTriggers: { patterns: [afterTwelve] } });
      const m = /^[\s\S]{12}[^ ]*( [\s\S]*)?$/.exec(text);
      assert.ok(m, JSON.stringify(text));
      if (m[1] === undefined) continue;
      const call = JSON.parse(m[1]) as { name: string; arguments: unknown };
      assertValidCall(call.name, call.arguments);
      calls++;
    }
    assert.ok(calls > 0, "some seed reached a call");
  });

  test("a trigger that never matches leaves the output as the unconstrained one", async () => {
    const free = await generate({ seed: 7, temperature: 0, maxTokens: 40, ignoreEos: true });
    const plan = (await toolPlan({ tools: TOOLS, tool_choice: "auto" }))!;
    const lazy = await generate({ seed: 7, temperature: 0, maxTokens: 40, grammar: plan.grammar!, grammarTriggers: plan.triggers! });
    assert.ok(!free.text.trimStart().startsWith("{"));
    // ignore_eos drops a lazy grammar (it could never end); the same text either way.
    assert.equal(lazy.text, free.text.slice(0, lazy.text.length));
    const lazyEos = await generate({ seed: 7, temperature: 0, maxTokens: 40, ignoreEos: true, grammar: plan.grammar!, grammarTriggers: plan.triggers! });
    assert.equal(lazyEos.text, free.text);
  });
});

describe("server, tool_choice auto", () => {
  let srv: RunningServer;
  let client: OpenAI;
  before(async () => {
    const repo = await makeRepository([{ name: "tiny", version: "v1", parallel: 4, contextSize: 1024 }]);
    const dir = path.join(repo, "hermes", "v1");
    await mkdir(dir, { recursive: true });
    await writeRandomLlamaModel(path.join(dir, "weights.bin"), randomModelOptions("tiny", { chatTemplate: HERMES_TEMPLATE, contextLength: 2048 }));
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "hermes", type: "llm", parallel: 4, context_size: 2048 }));
    srv = await startServer(repo);
    client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => srv?.close());

  test("every answer is text or a call that parses with valid arguments, over several seeds", async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Oslo?" }];
    for (const model of ["tiny", "hermes"]) {
      const rs = await Promise.all([1, 2, 3, 4, 5, 6].map((seed) =>
        client.chat.completions.create({ model, messages, tools: TOOLS, tool_choice: "auto", max_tokens: 60, temperature: 1.5, seed }),
      ));
      for (const r of rs) {
        const c = r.choices[0]!;
        for (const call of c.message.tool_calls ?? []) assertValidCall((call as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, JSON.parse((call as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments));
        const content = c.message.content ?? "";
        assert.ok(!content.includes("<tool_call>"), `no malformed call in the text: ${content}`);
        if (model === "tiny") assert.ok(!content.trimStart().startsWith("{"), `no malformed call in the text: ${content}`);
      }
    }
  });

  test("auto beside response_format keeps that format's grammar", async () => {
    const r = await client.chat.completions.create({
      model: "tiny", messages: [{ role: "user", content: "hi" }], tools: TOOLS, tool_choice: "auto", max_tokens: 200, seed: 3,
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false } } },
    });
    assert.equal(typeof (JSON.parse(r.choices[0]!.message.content!) as { ok: unknown }).ok, "boolean");
  });
});
