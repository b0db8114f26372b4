// Returns the demo model's GGUF path, building it once per builder version into the cache:
//   ${cacheDir ?? MOLTBOT_CACHE_DIR ?? ~/.cache/moltbot}/demo/v<builder version>.0/{demo.gguf, config.json}
// The build loads llama.cpp, so it runs in a child process (build-demo-main) and never in the
// caller's process. Concurrent callers (two CLIs, parallel tests) serialise on a lock file;
// the GGUF is renamed into place last, so its presence means the directory is complete.

import { spawn } from "node:child_process";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MoltbotError } from "../errors.js";
import { isGgufFile } from "../gguf/reader.js";
import { DEMO_BUILDER_VERSION, DEMO_DEFAULTS } from "./demo-spec.js";

export interface EnsureDemoModelOptions {
  cacheDir?: string;
  log?: (msg: string) => void;
}

// A builder that died without cleaning up must not block everyone forever.
const STALE_LOCK_MS = 10 * 60_000;
const POLL_MS = 250;

export async function ensureDemoModel(opts: EnsureDemoModelOptions = {}): Promise<string> {
  const log = opts.log ?? (() => undefined);
  const root = opts.cacheDir ?? process.env.MOLTBOT_CACHE_DIR ?? join(homedir(), ".cache", "moltbot");
  // The folder is a repository version folder: a new builder version is a new model version.
  const dir = join(root, "demo", `v${DEMO_BUILDER_VERSION}.0`);
  const modelPath = join(dir, "demo.gguf");
  if (await isGgufFile(modelPath)) {
    await writeDemoConfig(dir);
    return modelPath;
  }

  await mkdir(dir, { recursive: true });
  const lockPath = join(dir, "build.lock");
  let announced = false;
  for (;;) {
    if (await tryLock(lockPath)) break;
    if (!announced) {
      log(`waiting for another process building the demo model in ${dir}`);
      announced = true;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (await isGgufFile(modelPath)) return modelPath;
  }
  try {
    if (await isGgufFile(modelPath)) return (await writeDemoConfig(dir), modelPath); // built while we waited for the lock
    log(`building the demo model (Brown Corpus bigram) into ${dir}`);
    const tmpModel = join(dir, `demo.gguf.build-${process.pid}`);
    const stats = await runBuilder(tmpModel);
    log(`demo model built in ${Number(stats.buildSeconds).toFixed(1)} s (${stats.vocabSize} tokens, ${(Number(stats.bytes) / 1e6).toFixed(1)} MB)`);
    await writeDemoConfig(dir);
    await rename(tmpModel, modelPath);
    return modelPath;
  } finally {
    await rm(lockPath, { force: true });
  }
}

/**
 * The demo's config.json, rewritten (atomically) when a newer Moltbot wants other settings
 * than the cached one has; the weights are reused. No `parallel`: the server's batching
 * default applies.
 */
async function writeDemoConfig(dir: string): Promise<void> {
  const config = {
    name: "demo",
    type: "llm",
    context_size: DEMO_DEFAULTS.servedContextSize,
    pricing: { input_per_1k: 0, output_per_1k: 0 },
    validation: [{ prompt: "The United States", expect_contains: "" }],
  };
  const text = JSON.stringify(config, null, 2) + "\n";
  const file = join(dir, "config.json");
  if ((await readFile(file, "utf8").catch(() => "")) === text) return;
  const tmp = join(dir, `config.json.tmp-${process.pid}`);
  await writeFile(tmp, text);
  await rename(tmp, file);
}

/** Creates the lock exclusively; clears it first when its holder is gone or it is stale. */
async function tryLock(lockPath: string): Promise<boolean> {
  try {
    const fh = await open(lockPath, "wx");
    await fh.writeFile(String(process.pid));
    await fh.close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  try {
    const [text, st] = await Promise.all([readFile(lockPath, "utf8"), stat(lockPath)]);
    const pid = Number(text);
    if (Date.now() - st.mtimeMs > STALE_LOCK_MS || (pid > 0 && !isAlive(pid))) await rm(lockPath, { force: true });
  } catch {
    // The holder removed it meanwhile (or wrote no pid yet): try again next round.
  }
  return false;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The child entry beside this module: .js under dist/, .ts under tsx (then tsx is loaded too). */
function builderCommand(outPath: string): string[] {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith(".ts");
  const entry = join(dirname(here), ts ? "build-demo-main.ts" : "build-demo-main.js");
  const loader = ts ? ["--import", import.meta.resolve("tsx")] : [];
  return [...loader, entry, "--out", outPath];
}

async function runBuilder(outPath: string): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, builderCommand(outPath), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-4000)));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  const line = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || line === "") {
    await rm(outPath, { force: true });
    throw new MoltbotError("engine_error", `demo model build failed (exit ${code}): ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
  }
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch (cause) {
    throw new MoltbotError("engine_error", `demo model builder printed no stats: ${line.slice(0, 200)}`, { cause });
  }
}
