// Config reload on SIGHUP: a real `bin/moltbot deploy` re-reads its file, applies the new
// budget and log level, names restart-only changes, and keeps serving on a broken file; and
// the reloader against a real in-process server for priorities, pricing and pool changes.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { loadConfig, type LoadOptions } from "../src/config/load.js";
import { createLogger } from "../src/observe/logger.js";
import { ConfigReloader } from "../src/server/reload.js";
import { MoltbotServer } from "../src/server/server.js";
import { makeRepository, tempDir, TEST_ENGINE } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** JSON is YAML: write a config object as the file. */
const writeConfig = (file: string, config: unknown) => writeFile(file, JSON.stringify(config, null, 2));

async function until(what: string, cond: () => boolean, dump: () => string, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}:\n${dump()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("SIGHUP to deploy applies the new budget and log level, and a broken file leaves the old settings serving", async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", contextSize: 512 }]);
  const dir = await tempDir();
  const yaml = path.join(dir, "moltbot.yaml");
  const base = { model_path: repo, server: { port: 0 }, threads: 1, log: { level: "INFO" } };
  await writeConfig(yaml, { ...base, model_pool: [{ name: "tiny", budget: { max_tokens: 100000 } }] });

  const child = spawn(process.execPath, [BIN, "deploy", "--config", yaml], { stdio: ["ignore", "pipe", "pipe"] });
  cleanups.push(() => child.exitCode === null && child.kill("SIGKILL"));
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const dump = () => out;
  const LISTEN = /Listening on http:\/\/[^:]+:(\d+)/;
  await until("the server to listen", () => LISTEN.test(out) || child.exitCode !== null, dump, 60_000);
  assert.equal(child.exitCode, null, out);
  const port = Number(LISTEN.exec(out)![1]);
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });
  const complete = (prompt: string) => client.completions.create({ model: "tiny", prompt, max_tokens: 20, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);

  const first = await complete("reload");
  assert.equal(first.usage!.completion_tokens, 20);
  const promptTokens = first.usage!.prompt_tokens;

  // New cap: the prompt plus 3 tokens. A queue change needs a restart and is only named.
  const cap = promptTokens + 3;
  await writeConfig(yaml, { ...base, log: { level: "WARNING" }, queue: { max_size: 100 }, model_pool: [{ name: "tiny", budget: { max_tokens: cap } }] });
  child.kill("SIGHUP");
  await until("the reload lines", () => /\[WARNING\] \[config\] queue\.max_size: 256 -> 100: needs a restart, not applied/.test(out), dump);
  assert.match(out, /\[INFO\] \[server\] SIGHUP received: re-reading .*moltbot\.yaml/);
  assert.match(out, new RegExp(`\\[INFO\\] \\[config\\] Reloaded model_pool "tiny" budget\\.max_tokens: 100000 -> ${cap}\\n`));
  // Written at INFO although the new level is WARNING: the report uses the more verbose one.
  assert.match(out, /\[INFO\] \[config\] Reloaded log\.level: INFO -> WARNING\n/);

  const capped = await complete("reload");
  assert.equal(capped.usage!.prompt_tokens, promptTokens);
  assert.equal(capped.usage!.completion_tokens, 3, "the new budget.max_tokens caps prompt + completion");
  assert.equal(capped.choices[0]!.finish_reason, "length");
  await assert.rejects(complete("reload ".repeat(20)), (err: unknown) => err instanceof OpenAI.APIError && err.status === 400 && err.code === "token_limit_exceeded");
  assert.match(out, /\[WARNING\] \[inference\] Token limit exceeded/);

  // A file that would not start a server is rejected whole.
  const before = out.length;
  await writeFile(yaml, "model_pool: [\n  { name: tiny\n");
  child.kill("SIGHUP");
  await until("the YAML rejection", () => /\[ERROR\] \[config\] Reload rejected, the running settings stay: .*moltbot\.yaml:\d+:\d+: invalid YAML/.test(out.slice(before)), dump);
  await writeConfig(yaml, { ...base, model_pool: [{ name: "tiny", model: "nope", budget: { max_tokens: 100000 } }] });
  child.kill("SIGHUP");
  await until("the pool rejection", () => /\[ERROR\] \[config\] Reload rejected, the running settings stay: .*model_pool\[0\]\.model: no model "nope" in the repository/.test(out.slice(before)), dump);
  assert.doesNotMatch(out.slice(before), /Reloaded/);
  // The WARNING level applies: the "SIGHUP received" INFO lines are no longer written.
  assert.doesNotMatch(out.slice(before), /\[INFO\]/);

  const still = await complete("reload");
  assert.equal(still.usage!.completion_tokens, 3, "the last good budget still applies");
  assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);

  child.kill("SIGTERM");
  assert.equal(await exited, 0, out);
});

test("the reloader applies priorities and pricing, names pool and listener changes, and says when nothing changed", async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  const dir = await tempDir();
  const yaml = path.join(dir, "moltbot.yaml");
  const logFile = path.join(dir, "moltbot.log");
  const entry = (name: string, extra: Record<string, unknown> = {}) => ({ name, model: "tiny", ...extra });
  const base = { server: { port: 0 }, data_dir: path.join(dir, "data") };
  await writeConfig(yaml, { ...base, model_pool: [entry("a"), entry("b", { budget: { cost_limit: 5 }, pricing: { input_per_1k: 1, output_per_1k: 2 } })] });

  const load: LoadOptions = { file: yaml, env: {} };
  const loaded = loadConfig(load);
  const log = createLogger({ level: "INFO", format: "text", file: logFile, stdout: false });
  const server = new MoltbotServer({ loaded, modelPath: repo, log, engine: TEST_ENGINE, threads: 1 });
  await server.start();
  cleanups.push(async () => {
    await server.close(5000);
    log.close();
  });
  const reloader = new ConfigReloader({ load, started: loaded.config, pool: server.models, repository: server.repository, log });
  const lines = () => readFileSync(logFile, "utf8");

  assert.deepEqual(reloader.reload(), { applied: [], needsRestart: [] });
  assert.match(lines(), /\[INFO\] \[config\] Reloaded .*moltbot\.yaml: no changes/);

  await writeConfig(yaml, {
    ...base,
    server: { port: 0, body_limit: "2MiB" },
    log: { level: "WARNING" },
    model_pool: [entry("a", { strategy: { priority: "high" } }), entry("b", { pricing: { input_per_1k: 1, output_per_1k: 3 } }), entry("c")],
  });
  const r = reloader.reload();
  assert.deepEqual(r.applied, [
    "log.level: INFO -> WARNING",
    'model_pool "a" strategy.priority: normal -> high',
    'model_pool "b" budget.cost_limit: 5 -> (unset)',
    'model_pool "b" pricing: {"input_per_1k":1,"output_per_1k":2} -> {"input_per_1k":1,"output_per_1k":3}',
  ]);
  assert.deepEqual(r.needsRestart, ["server.body_limit: 1MiB -> 2MiB", "model_pool: entries added (c)"]);
  const [a, b] = server.models.entries;
  assert.equal(a!.priority, "high");
  assert.equal(b!.costLimit, undefined);
  assert.deepEqual(b!.pricing, { input_per_1k: 1, output_per_1k: 3 });
  // Written although the new level is WARNING: the report uses the more verbose level.
  assert.match(lines(), /\[INFO\] \[config\] Reloaded log\.level: INFO -> WARNING/);
  assert.equal(log.level, "WARNING");

  // Restart-only changes are named against the start config at every reload; live ones are not repeated.
  const again = reloader.reload();
  assert.deepEqual(again.applied, []);
  assert.deepEqual(again.needsRestart, r.needsRestart);

  await writeConfig(yaml, { ...base, model_pool: [entry("a", { strategy: { fallback: "ghost" } })] });
  const bad = reloader.reload();
  assert.match(bad.rejected ?? "", /model_pool\[0\]\.strategy\.fallback: no pool entry named "ghost"/);
  assert.equal(a!.priority, "high", "nothing applied from a rejected file");
  assert.match(lines(), /\[ERROR\] \[config\] Reload rejected, the running settings stay: /);
});
