// `moltbot models`, the implementation: loaded by commands/models.ts only when a command runs.
// Each command is one request to the server's admin API, sent with the operator's user name
// (x-moltbot-user: the server logs who asked until it has auth).
import type { ArgumentsCamelCase } from "yargs";
import { ERRORS, MoltbotError, type ErrorCode } from "../../errors.js";
import { operatorName } from "../operator.js";
import { authHeader, endpoint, requestServer, serverUrl, useCaFile } from "../server-url.js";
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

/** The parsed JSON of a 2xx answer; any other outcome is thrown as one line. */
async function call(args: ModelsArgs, method: "GET" | "POST", path: string, payload: object | undefined, timeoutMs: number): Promise<unknown> {
  const url = endpoint(await serverUrl(args), path);
  useCaFile(args);
  let res: { status: number; body: string };
  try {
    res = await requestServer(url, {
      method,
      headers: { accept: "application/json", "content-type": "application/json", "x-moltbot-user": operatorName(), ...authHeader(args) },
      payload: payload === undefined ? undefined : JSON.stringify(payload),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
    const why = timedOut ? `no answer within ${timeoutMs / 1000} s` : err instanceof Error ? err.message : String(err);
    throw new MoltbotError("server_unreachable", `cannot reach ${url}: ${why}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    body = undefined;
  }
  if (res.status >= 200 && res.status < 300) {
    if (body === undefined) throw new MoltbotError("internal_error", `${method} ${url}: the answer is not JSON`);
    return body;
  }
  throw serverError(res.status, body, res.body, url);
}

/** The server's own message for an OpenAI-shaped error; else the status and the start of the body. */
function serverError(status: number, body: unknown, text: string, url: string): Error {
  const e = typeof body === "object" && body !== null ? (body as { error?: { message?: unknown; code?: unknown } }).error : undefined;
  if (typeof e?.message === "string") {
    const code = typeof e.code === "string" && e.code in ERRORS ? (e.code as ErrorCode) : "internal_error";
    // A server older than this CLI has no /admin/models at all.
    const hint = code === "route_not_found" ? ` (${url}: a server without the model-version admin API?)` : "";
    return new MoltbotError(code, e.message + hint);
  }
  return new MoltbotError("internal_error", `${url}: HTTP ${status}: ${text.replace(/\s+/g, " ").trim().slice(0, 200)}`);
}

