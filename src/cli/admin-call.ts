// One request of a CLI command to the server's admin API (`moltbot models`, `moltbot cache`):
// the server found as for `status`, the operator's name in x-moltbot-user, the token and CA file
// of the command line, and any failure as one MoltbotError line with the server's own code.
import { ERRORS, MoltbotError, type ErrorCode } from "../errors.js";
import { operatorName } from "./operator.js";
import { authHeader, endpoint, requestServer, serverUrl, useCaFile } from "./server-url.js";

export interface AdminCallArgs {
  url?: string;
  config?: string;
  token?: string;
  "ca-file"?: string;
}

export interface AdminCallOptions {
  timeoutMs: number;
  /** Named in the hint when the server has no such route (a server older than this CLI). */
  api: string;
}

/** The parsed JSON of a 2xx answer; any other outcome is thrown as one line. */
export async function adminCall(args: AdminCallArgs, method: "GET" | "POST", path: string, payload: object | undefined, opts: AdminCallOptions): Promise<unknown> {
  const url = endpoint(await serverUrl(args), path);
  useCaFile(args);
  let res: { status: number; body: string };
  try {
    res = await requestServer(url, {
      method,
      headers: { accept: "application/json", "content-type": "application/json", "x-moltbot-user": operatorName(), ...authHeader(args) },
      payload: payload === undefined ? undefined : JSON.stringify(payload),
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
    const why = timedOut ? `no answer within ${opts.timeoutMs / 1000} s` : err instanceof Error ? err.message : String(err);
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
  const e = typeof body === "object" && body !== null ? (body as { error?: { message?: unknown; code?: unknown } }).error : undefined;
  if (typeof e?.message === "string") {
    const code = typeof e.code === "string" && e.code in ERRORS ? (e.code as ErrorCode) : "internal_error";
    const hint = code === "route_not_found" ? ` (${url}: a server without the ${opts.api}?)` : "";
    throw new MoltbotError(code, e.message + hint);
  }
  throw new MoltbotError("internal_error", `${url}: HTTP ${res.status}: ${res.body.replace(/\s+/g, " ").trim().slice(0, 200)}`);
}
