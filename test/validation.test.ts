// Validation of a model version: file checks (GGUF integrity, sha256) and config.json's prompts
// against a real worker process generating greedily from the tiny model.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { Value } from "@sinclair/typebox/value";
import { openRepository, type ModelVersion } from "../src/repository/repository.js";
import { validateVersion, ValidationReportSchema, type GenerateFn, type ValidationReport } from "../src/versions/validation.js";
import { ModelWorker } from "../src/workers/model-worker.js";
import { createLogger } from "../src/observe/logger.js";
import type { GenerationParams } from "../src/engine/types.js";
import { tempDir, tinyModelPath, TEST_ENGINE } from "./helpers/fixtures.js";

let worker: ModelWorker;
let generate: GenerateFn;
const log = createLogger({ level: "ERROR", format: "text", stdout: false });

before(async () => {
  worker = new ModelWorker(
    { name: "tiny", version: "v1", modelPath: await tinyModelPath(), contextSize: 512, parallel: 1, threads: 1, embedding: false, speculative: false, promptCacheBytes: 0, engine: TEST_ENGINE },
    log,
  );
  await worker.start();
  // What the server passes: greedy, exactly maxTokens (the random model may end at once otherwise).
  generate = async (prompt, maxTokens) => {
    const params: GenerationParams = { temperature: 0, topP: 1, seed: undefined, maxTokens, minTokens: 0, ignoreEos: true, stop: [], topLogprobs: null, cachePrompt: true };
    let text = "";
    await worker.generate({ kind: "text", text: prompt }, params, { onText: (t) => void (text += t) });
    return text;
  };
});
after(async () => worker?.close());

/** A version folder with the tiny weights and this config.json, loaded the way the server loads it. */
async function versionWith(config: Record<string, unknown>): Promise<ModelVersion> {
  const dir = path.join(await tempDir(), "demo", "v2.0");
  await mkdir(dir, { recursive: true });
  await copyFile(await tinyModelPath(), path.join(dir, "weights.bin"));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "demo", ...config }));
  const [m] = await openRepository(path.dirname(dir));
  return m!.active;
}

function byName(report: ValidationReport): Map<string, { passed: boolean; detail: string; ms: number }> {
  assert.ok(Value.Check(ValidationReportSchema, report), "the report matches its schema");
  return new Map(report.checks.map((c) => [c.name, c]));
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

test("every expectation passes against its golden greedy output", async () => {
  const golden = await generate("The quick brown fox", 8);
  assert.ok(golden.length > 0);
  const hash = createHash("sha256").update(await readFile(await tinyModelPath())).digest("hex");
  const v = await versionWith({
    sha256: hash.toUpperCase(),
    validation: [
      { prompt: "The quick brown fox", max_tokens: 8, expect_contains: golden.slice(1, 4), expect_regex: `^${escapeRegex(golden.slice(0, 3))}`, expect_output: golden, max_latency_ms: 60_000 },
      { prompt: "Once upon a time", max_tokens: 4 },
    ],
  });
  const report = await validateVersion(v, generate);
  const checks = byName(report);
  assert.deepEqual([...checks.keys()], [
    "gguf header",
    "sha256",
    `prompt 1: expect_contains ${JSON.stringify(golden.slice(1, 4))}`,
    `prompt 1: expect_regex /^${escapeRegex(golden.slice(0, 3))}/`,
    "prompt 1: expect_output",
    "prompt 1: max_latency_ms 60000",
    "prompt 2: non-empty output",
  ]);
  assert.ok(report.passed, JSON.stringify(report.checks, null, 1));
  assert.match(checks.get("gguf header")!.detail, /^\d+ tensors, F32, \d+\.\d KiB$/);
  assert.equal(checks.get("sha256")!.detail, `matches ${hash}`);
  assert.equal(checks.get("prompt 1: expect_output")!.detail, `output: ${JSON.stringify(golden)}`);
  assert.match(checks.get("prompt 1: max_latency_ms 60000")!.detail, /^took \d+ ms \(limit 60000 ms\)$/);
  assert.equal(report.model, "demo");
  assert.equal(report.version, "v2.0");
  assert.ok(Math.abs(Date.parse(report.at) - Date.now()) < 60_000);
  assert.ok(report.duration_ms >= checks.get("prompt 1: expect_output")!.ms);
});

test("each expectation fails on its own with the output in the detail", async () => {
  const golden = await generate("The quick brown fox", 8);
  const v = await versionWith({
    validation: [
      { prompt: "The quick brown fox", max_tokens: 8, expect_contains: "\u0000never", expect_regex: "^$", expect_output: `${golden}!` },
      // Hundreds of tokens cannot come back within 1 ms, even over IPC alone.
      { prompt: "Once upon a time", max_tokens: 200, max_latency_ms: 1 },
      { prompt: "The quick brown fox", max_tokens: 8, expect_output: golden },
    ],
  });
  const report = await validateVersion(v, generate);
  const checks = byName(report);
  assert.equal(report.passed, false);
  assert.deepEqual(report.checks.map((c) => [c.name, c.passed]), [
    ["gguf header", true],
    ['prompt 1: expect_contains "\\u0000never"', false],
    ["prompt 1: expect_regex /^$/", false],
    ["prompt 1: expect_output", false],
    ["prompt 2: max_latency_ms 1", false],
    ["prompt 3: expect_output", true],
  ]);
  assert.equal(checks.get("prompt 1: expect_regex /^$/")!.detail, `output: ${JSON.stringify(golden)}`);
  assert.equal(checks.get("prompt 1: expect_output")!.detail, `output: ${JSON.stringify(golden)}, expected ${JSON.stringify(`${golden}!`)} (first difference at character ${golden.length})`);
  assert.match(checks.get("prompt 2: max_latency_ms 1")!.detail, /^took \d+ ms \(limit 1 ms\)$/);
  assert.ok(checks.get("prompt 2: max_latency_ms 1")!.ms > 1);
});

test("a generation that throws fails its prompt's checks only", async () => {
  const v = await versionWith({ validation: [{ prompt: "boom", expect_contains: "x", max_latency_ms: 60_000 }, { prompt: "Once upon a time" }] });
  const failing: GenerateFn = (prompt, maxTokens) => (prompt === "boom" ? Promise.reject(new Error("worker_crashed: the worker\nexited")) : generate(prompt, maxTokens));
  const report = await validateVersion(v, failing);
  assert.deepEqual(report.checks.map((c) => [c.name, c.passed, c.detail.startsWith("generation failed") ? c.detail : ""]), [
    ["gguf header", true, ""],
    ['prompt 1: expect_contains "x"', false, "generation failed: worker_crashed: the worker exited"],
    ["prompt 1: max_latency_ms 60000", false, "generation failed: worker_crashed: the worker exited"],
    ["prompt 2: non-empty output", true, ""],
  ]);
});

test("a sha256 mismatch or truncated weights fail the file checks and skip the prompts", async () => {
  let calls = 0;
  const counting: GenerateFn = (p, n) => (calls++, generate(p, n));
  const v = await versionWith({ sha256: "ab".repeat(32), validation: [{ prompt: "Once upon a time" }] });
  const report = await validateVersion(v, counting);
  assert.equal(report.passed, false);
  assert.deepEqual(report.checks.map((c) => [c.name, c.passed]), [["gguf header", true], ["sha256", false], ["prompt 1: non-empty output", false]]);
  const sha = report.checks[1]!;
  assert.match(sha.detail, new RegExp(`^${escapeRegex(v.weightsPath)}: sha256 [0-9a-f]{64}, config.json expects ${"ab".repeat(32)}$`));
  assert.equal(report.checks[2]!.detail, "not run: a file check failed");

  // The weights changed on disk after the version was loaded.
  const size = (await readFile(v.weightsPath)).length;
  await truncate(v.weightsPath, size - 10);
  const cut = await validateVersion({ ...v, config: { ...v.config, sha256: undefined } }, counting);
  assert.deepEqual(cut.checks.map((c) => [c.name, c.passed]), [["gguf header", false], ["prompt 1: non-empty output", false]]);
  assert.match(cut.checks[0]!.detail, /weights\.bin: truncated GGUF: tensor \S+ ends at byte \d+ but the file has \d+ bytes$/);
  assert.equal(calls, 0, "no prompt ran");
});
