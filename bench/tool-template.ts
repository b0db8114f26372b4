// What native tool templates cost, without a server: the worker's one-time preparation of the
// chat template at start (@huggingface/jinja's import, parse and the probe renders; the engine
// hands over the template: reading it from the GGUF metadata again is measured for comparison)
// for vocabularies of two sizes, then per request: rendering a chat with tools by the template, and
// the main process's tool plan for a forced call (one grammar per call syntax; conversions are
// cached by schema hash).
//
//   node --import tsx bench/tool-template.ts [--rounds 2000]
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { ToolTemplate } from "../src/engine/chat-template.js";
import { loadEngine } from "../src/engine/load-engine.js";
import { readGgufMetadata } from "../src/gguf/reader.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { nativeChat, toolPlan } from "../src/server/tool-calls.js";
import { HERMES_TEMPLATE } from "../test/helpers/chat-templates.js";
import { commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "2000" } } });
const ROUNDS = Number(values.rounds);

const TOOLS = [
  { type: "function" as const, function: { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"] } } },
  { type: "function" as const, function: { name: "add", description: "Adds two integers", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
];

function timeUs(fn: () => unknown, n: number): number {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    xs.push((performance.now() - t0) * 1000);
  }
  return median(xs);
}

async function main(): Promise<void> {
  console.log(`# ${commandLine()}`);
  console.log(`# ${machine()}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "moltbot-bench-tpl-"));
  try {
    let first = true;
    let tpl: ToolTemplate | undefined;
    for (const vocabSize of [512, 32768]) {
      const file = path.join(dir, `v${vocabSize}.gguf`);
      await writeRandomLlamaModel(file, randomModelOptions("tiny", { vocabSize, chatTemplate: HERMES_TEMPLATE }));
      const t0 = performance.now();
      await readGgufMetadata(file);
      const readMs = performance.now() - t0;
      const engine = await loadEngine("ffi", { modelPath: file, contextSize: 64, parallel: 1, threads: 1, embedding: false });
      const t1 = performance.now();
      tpl = await ToolTemplate.of(engine.chatTemplateSource());
      const loadMs = performance.now() - t1;
      await engine.destroy();
      console.log(`worker start, vocabulary ${vocabSize}: template from the engine + jinja${first ? " (first import)" : ""} + parse + probes ${loadMs.toFixed(1)} ms (${tpl?.syntax}); the GGUF metadata read again would add ${readMs.toFixed(1)} ms`);
      first = false;
    }
    if (!tpl) throw new Error("the template was not recognised");
    const plan = (await toolPlan({ tools: TOOLS, tool_choice: "auto" }))!;
    const messages = [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "What is the weather in Oslo, and what is 2 + 3?" },
      { role: "assistant", content: "", tool_calls: [{ id: "call_1", function: { name: "get_weather", arguments: '{"city": "Oslo", "unit": "C"}' } }, { id: "call_2", function: { name: "add", arguments: '{"a": 2, "b": 3}' } }] },
      { role: "tool", content: '{"sky": "cloudy", "temperature": 3}', tool_call_id: "call_1" },
      { role: "tool", content: "5", tool_call_id: "call_2" },
      { role: "user", content: "Thanks. And in Rome?" },
    ];
    const chars = tpl.render(nativeChat(messages, plan)).length;
    console.log(`render, 6 messages + 2 tools (${chars} chars): ${timeUs(() => tpl.render(nativeChat(messages, plan)), ROUNDS).toFixed(0)} us (median of ${ROUNDS})`);
    const f0 = performance.now();
    await toolPlan({ tools: TOOLS, tool_choice: "required", parallel_tool_calls: true });
    const coldMs = performance.now() - f0;
    const warm: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      await toolPlan({ tools: TOOLS, tool_choice: "required", parallel_tool_calls: true });
      warm.push((performance.now() - t) * 1000);
    }
    console.log(`forced tool plan (generic + hermes + llama3 grammars): first ${coldMs.toFixed(1)} ms (loads the converter), then ${median(warm).toFixed(0)} us cached (median)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void main();
