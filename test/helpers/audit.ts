// Shared by the audit tests: a temp config and data dir, AuditLog options, `moltbot` runs.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { AuditLogOptions } from "../../src/audit/audit-log.js";
import { createLogger } from "../../src/observe/logger.js";
import { tempDir } from "./fixtures.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");

export async function dirs() {
  const dir = await tempDir("moltbot-audit-");
  const logFile = path.join(dir, "moltbot.log");
  const data = path.join(dir, "data");
  const config = path.join(dir, "moltbot.yaml");
  writeFileSync(config, `data_dir: ${data}\nlog: { file: ${logFile} }\n`);
  return { dir, data, config, logFile, file: path.join(data, "audit.log"), keysFile: path.join(data, "audit-keys.sqlite") };
}

export function options(d: { file: string; keysFile: string; logFile: string }, extra: Partial<AuditLogOptions> = {}): AuditLogOptions {
  return { file: d.file, keysFile: d.keysFile, fsyncIntervalMs: 10, includeContent: false, retentionMs: undefined, log: createLogger({ level: "DEBUG", format: "text", stdout: false, file: d.logFile }), ...extra };
}

export function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { ...process.env, USER: "auditor" }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function cliAsync(args: string[]): Promise<number | null> {
  return new Promise((resolve) => spawn(process.execPath, [BIN, ...args], { stdio: "ignore", env: { ...process.env, USER: "auditor" } }).on("exit", resolve));
}

export const lines = (file: string) => readFileSync(file, "utf8").split("\n").filter(Boolean);

