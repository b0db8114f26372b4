// Test fixtures: real model repositories made of generated GGUF files, and a real server
// on an ephemeral port. Generated models are cached per test run in the OS temp dir.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, writeFile, copyFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadConfig, type DeepPartial } from "../../src/config/load.js";
import { MoltbotError, type ErrorCode } from "../../src/errors.js";
import type { MoltbotConfig } from "../../src/config/schema.js";
import { createLogger, type Logger } from "../../src/observe/logger.js";
import { MoltbotServer } from "../../src/server/server.js";
import { randomModelOptions, writeRandomLlamaModel } from "../../src/gguf/random-model.js";
import type { EngineKind } from "../../src/engine/load-engine.js";

export const TEST_ENGINE: EngineKind = (process.env.MOLTBOT_TEST_ENGINE as EngineKind | undefined) ?? "ffi";

export async function tempDir(prefix = "moltbot-test-"): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

let tinyModel: Promise<string> | undefined;
/** A tiny random-weight llama GGUF (shared by the tests of one process). */
export function tinyModelPath(): Promise<string> {
  tinyModel ??= (async () => {
    const dir = await tempDir("moltbot-tiny-");
    const file = path.join(dir, "tiny.gguf");
    await writeRandomLlamaModel(file, randomModelOptions("tiny"));
    return file;
  })();
  return tinyModel;
}

export interface RepoVersion {
  name?: string;
  version: string;
  type?: "llm" | "embedding";
  parallel?: number;
  contextSize?: number;
  extra?: Record<string, unknown>;
}

/** A multi-model repository `<root>/<name>/<version>/{config.json,weights.bin}` of tiny models. */
export async function makeRepository(models: Array<RepoVersion & { name: string }>): Promise<string> {
  const root = await tempDir("moltbot-repo-");
  const gguf = await tinyModelPath();
  for (const m of models) {
    const dir = path.join(root, m.name, m.version);
    await mkdir(dir, { recursive: true });
    await copyFile(gguf, path.join(dir, "weights.bin"));
    const config = { name: m.name, type: m.type ?? "llm", parallel: m.parallel ?? 2, context_size: m.contextSize ?? 256, ...m.extra };
    await writeFile(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  }
  return root;
}

export interface RunningServer {
  server: MoltbotServer;
  baseURL: string;
  url: string;
  log: Logger;
  /** The log lines written so far. */
  lines(): string[];
  close(): Promise<void>;
}

/** Start the real server (in this process; workers are real child processes) on port 0. */
export interface StartOptions {
  bodyLimit?: string;
  threads?: number;
  /** moltbot.yaml content as an object (model_pool, queue, batching, ...). */
  config?: DeepPartial<MoltbotConfig>;
  /** State directory (ledger); default: a fresh temp dir. Reuse it to test restarts. */
  dataDir?: string;
  clock?: () => Date;
  /** deploy --accept-new-ledger */
  acceptNewLedger?: boolean;
  /** The response cache's clock (TTLs), in milliseconds. */
  cacheNow?: () => number;
}

export async function startServer(modelPath: string, opts: StartOptions = {}): Promise<RunningServer> {
  const logFile = path.join(await tempDir("moltbot-log-"), "moltbot.log");
  const dataDir = opts.dataDir ?? path.join(path.dirname(logFile), "data");
  const loaded = loadConfig({
    env: {},
    cwd: path.dirname(logFile),
    overrides: { ...opts.config, data_dir: dataDir, server: { ...opts.config?.server, port: 0, host: opts.config?.server?.host ?? "127.0.0.1", body_limit: opts.bodyLimit ?? opts.config?.server?.body_limit }, log: { level: "DEBUG" } },
  });
  const log = createLogger({ level: "DEBUG", format: "text", file: logFile, stdout: false });
  const server = new MoltbotServer({ loaded, modelPath, log, engine: TEST_ENGINE, threads: opts.threads ?? 1, clock: opts.clock, acceptNewLedger: opts.acceptNewLedger, cacheNow: opts.cacheNow });
  await server.start();
  // https:// with security.tls
  const url = server.listenUrl;
  return {
    server,
    url,
    baseURL: `${url}/v1`,
    log,
    lines: () => readFileSync(logFile, "utf8").split("\n").filter(Boolean),
    close: async () => {
      await server.close(5000);
      log.close();
    },
  };
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond` holds (the server's state, a queue, a worker), polled every 2 ms; never a fixed sleep. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, limitMs = 20_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Rejects with a MoltbotError of `code` (repository_invalid by default) whose message is one line matching `re`. */
export async function rejectsWithLine(p: Promise<unknown>, re: RegExp, code: ErrorCode = "repository_invalid"): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof MoltbotError, "a MoltbotError");
    assert.equal(err.code, code);
    assert.match(err.message, re);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}
