// One table of every error Moltbot reports, keyed by a stable code. The HTTP layer maps a
// code to its status and OpenAI error `type` here and nowhere else; IPC carries only
// {code, message} and rebuilds the error on the other side. Retired codes are never reused.

export const ERRORS = {
  // request shape
  invalid_request: { status: 400, type: "invalid_request_error" },
  invalid_json: { status: 400, type: "invalid_request_error" },
  unsupported_parameter: { status: 400, type: "invalid_request_error" },
  context_length_exceeded: { status: 400, type: "invalid_request_error" },
  model_not_found: { status: 404, type: "invalid_request_error" },
  route_not_found: { status: 404, type: "invalid_request_error" },
  payload_too_large: { status: 413, type: "invalid_request_error" },
  uri_too_long: { status: 414, type: "invalid_request_error" },
  headers_too_large: { status: 431, type: "invalid_request_error" },
  body_timeout: { status: 408, type: "invalid_request_error" },
  model_not_embedding: { status: 400, type: "invalid_request_error" },
  token_limit_exceeded: { status: 400, type: "invalid_request_error" },
  invalid_grammar: { status: 400, type: "invalid_request_error" },
  invalid_schema: { status: 400, type: "invalid_request_error" },
  chat_template_error: { status: 400, type: "invalid_request_error" },
  // authentication and scopes (src/auth/)
  invalid_token: { status: 401, type: "invalid_request_error" },
  insufficient_scope: { status: 403, type: "invalid_request_error" },
  model_not_allowed: { status: 403, type: "invalid_request_error" },
  // model versions (the admin API)
  version_not_found: { status: 404, type: "invalid_request_error" },
  switch_in_progress: { status: 409, type: "invalid_request_error" },
  no_previous_version: { status: 409, type: "invalid_request_error" },
  version_invalid: { status: 422, type: "invalid_request_error" },
  validation_failed: { status: 422, type: "invalid_request_error" },
  insufficient_memory: { status: 507, type: "server_error" },
  // capacity and budgets (429 carries Retry-After)
  budget_exceeded: { status: 429, type: "insufficient_quota" },
  queue_full: { status: 429, type: "rate_limit_error" },
  queue_timeout: { status: 429, type: "rate_limit_error" },
  worker_unavailable: { status: 503, type: "server_error" },
  worker_crashed: { status: 503, type: "server_error" },
  server_shutting_down: { status: 503, type: "server_error" },
  request_timeout: { status: 504, type: "server_error" },
  // faults
  engine_error: { status: 500, type: "server_error" },
  internal_error: { status: 500, type: "server_error" },
  // start-up and CLI (never reach a client)
  config_invalid: { status: 500, type: "server_error" },
  repository_invalid: { status: 500, type: "server_error" },
  cli_usage: { status: 500, type: "server_error" },
  server_unreachable: { status: 500, type: "server_error" },
  security_unenforceable: { status: 500, type: "server_error" },
  tls_invalid: { status: 500, type: "server_error" },
  ledger_lost: { status: 500, type: "server_error" },
  key_store_lost: { status: 500, type: "server_error" },
  audit_log_invalid: { status: 500, type: "server_error" },
  quantization_failed: { status: 500, type: "server_error" },
  backend_unavailable: { status: 500, type: "server_error" },
  library_invalid: { status: 500, type: "server_error" },
} as const satisfies Record<string, { status: number; type: string }>;

export type ErrorCode = keyof typeof ERRORS;

const BRAND = Symbol.for("moltbot.error");

export class MoltbotError extends Error {
  readonly code: ErrorCode;
  /** Extra fields for the client (e.g. `param`), never internals. */
  readonly param: string | undefined;
  /** Seconds a client should wait before retrying (429/503 `Retry-After`). */
  readonly retryAfterS: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { param?: string; cause?: unknown; retryAfterS?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "MoltbotError";
    this.code = code;
    this.param = options?.param;
    this.retryAfterS = options?.retryAfterS;
    (this as unknown as Record<symbol, boolean>)[BRAND] = true;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  // instanceof that survives two copies of this module (worker bundle vs main).
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }

}


/** OpenAI's error body for any thrown value; unknown errors become a bare 500. */
export function toOpenAIError(err: unknown): { status: number; body: { error: { message: string; type: string; code: string; param: string | null } } } {
  const e = err instanceof MoltbotError ? err : new MoltbotError("internal_error", "internal server error");
  const entry = ERRORS[e.code];
  return { status: entry.status, body: { error: { message: e.message, type: entry.type, code: e.code, param: e.param ?? null } } };
}
