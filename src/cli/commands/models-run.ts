// `moltbot models`, the implementation: loaded by commands/models.ts only when a command runs.
// Each command is one request to the server's admin API, sent with the operator's user name
// (x-moltbot-user: the server logs who asked until it has auth).
import type { ArgumentsCamelCase } from "yargs";
import { MoltbotError } from "../../errors.js";
import { adminCall } from "../admin-call.js";
import { readActivation, readModels, readReport, renderActivation, renderModels, renderReport } from "../models-view.js";
import { parseRef, type ActivateArgs, type ModelsArgs, type RollbackArgs, type ValidateArgs } from "./models.js";

// Listing answers at once; validating and activating load a model version (and activating waits
// for the old one to drain), which on a large model takes minutes.
const LIST_TIMEOUT_MS = 10_000;
const CHANGE_TIMEOUT_MS = 10 * 60_000;

export async function list(args: ArgumentsCamelCase<ModelsArgs>): Promise<void> {
  const body = await call(args, "GET", "admin/models", undefined, LIST_TIMEOUT_MS);
  if (args.json) return void console.log(JSON.stringify(body));
  const models = readModels(body);
  if ("invalid" in models) throw new MoltbotError("internal_error", `the server's answer is ${models.invalid}`);
  console.log(renderModels(models, new Date()).join("\n"));
}

export async function validate(args: ArgumentsCamelCase<ValidateArgs>): Promise<void> {
  // The definition's check has already refused anything else.
  const ref = parseRef(String(args.ref)) as { name: string; version?: string };
  const body = await call(args, "POST", modelPath(ref.name, "validate"), ref.version === undefined ? {} : { version: ref.version }, CHANGE_TIMEOUT_MS);
  const report = readReport(body);
  if ("invalid" in report) throw new MoltbotError("internal_error", `the server's answer is ${report.invalid}`);
  console.log(args.json ? JSON.stringify(body) : renderReport(report).join("\n"));
  // A failed validation is an answer, not an error: the table says why; the exit status tells scripts.
  if (!report.passed) process.exitCode = 1;
}

export async function activate(args: ArgumentsCamelCase<ActivateArgs>): Promise<void> {
  const version = String(args.target ?? args.version);
  await change(args, modelPath(String(args.name), "activate"), { version });
}

export async function rollback(args: ArgumentsCamelCase<RollbackArgs>): Promise<void> {
  await change(args, modelPath(String(args.name), "rollback"), {});
}

async function change(args: ModelsArgs, path: string, payload: object): Promise<void> {
  const body = await call(args, "POST", path, payload, CHANGE_TIMEOUT_MS);
  if (args.json) return void console.log(JSON.stringify(body));
  const result = readActivation(body);
  if ("invalid" in result) throw new MoltbotError("internal_error", `the server's answer is ${result.invalid}`);
  console.log(renderActivation(result));
}

function modelPath(name: string, action: string): string {
  return `admin/models/${encodeURIComponent(name)}/${action}`;
}

function call(args: ModelsArgs, method: "GET" | "POST", path: string, payload: object | undefined, timeoutMs: number): Promise<unknown> {
  return adminCall(args, method, path, payload, { timeoutMs, api: "model-version admin API" });
}

