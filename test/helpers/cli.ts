// The real CLI, run as an operator runs it: `bin/moltbot` in a child process.
import { spawn } from "node:child_process";
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
