// The real CLI, run as an operator runs it: `bin/moltbot` in a child process.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const BIN = path.join(ROOT, "bin", "moltbot");

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `moltbot ARGS` and resolves with its exit code and output. Asynchronous, so a server in
 * this process keeps answering; MOLTBOT_URL and MOLTBOT_CONFIG are cleared unless `env` sets them.
 */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, execArgv: string[] = []): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...execArgv, BIN, ...args], { env: { ...process.env, MOLTBOT_URL: "", MOLTBOT_CONFIG: "", ...env }, cwd: os.tmpdir() });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** What loading the server would pull in: a light command (help, a client of the server) loads none of it. */
export const HEAVY_MODULES = /node_modules\/(fastify|@sinclair\/typebox|yaml|better-sqlite3|koffi|node-llama-cpp)\/|dist\/src\/(server|pool|workers|engine|ledger|storage)\/|dist\/src\/config\/(load|schema|template)\.js/;

/**
 * Runs `moltbot ARGS` with a module resolve hook that records every module it loads, and returns
 * the run and the heavy ones among them (HEAVY_MODULES). `sawCli` tells the hook did see the CLI.
 */
export async function heavyModulesOf(args: string[]): Promise<CliResult & { heavy: string[]; sawCli: boolean }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-imports-"));
  const log = path.join(dir, "imports.log");
  await writeFile(log, "");
  await writeFile(path.join(dir, "hooks.mjs"), `import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r; }\n`);
  await writeFile(path.join(dir, "register.mjs"), `import { register } from "node:module";\nregister("./hooks.mjs", import.meta.url);\n`);
  try {
    const r = await runCli(args, {}, ["--import", path.join(dir, "register.mjs")]);
    const loaded = readFileSync(log, "utf8").split("\n");
    return { ...r, heavy: loaded.filter((u) => HEAVY_MODULES.test(u)), sawCli: loaded.some((u) => u.includes("dist/src/cli/main.js")) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
