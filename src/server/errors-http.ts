// Maps anything thrown while serving a request to OpenAI's error body and status, in one
// place. Fastify's own errors (bad JSON, body too large, schema) are translated to our codes.
import type { FastifyError } from "fastify";
import { MoltbotError, toOpenAIError } from "../errors.js";

function fieldOf(instancePath: string, missing: string | undefined): string {
  const p = instancePath.replace(/^\//, "").replaceAll("/", ".").replace(/\.(\d+)(?=\.|$)/g, "[$1]");
  return missing ? (p ? `${p}.${missing}` : missing) : p;
}

export function toMoltbotError(err: unknown): MoltbotError {
  if (err instanceof MoltbotError) return err;
  const fe = err as FastifyError & { validation?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }> };
  if (fe.validation && fe.validation.length > 0) {
    const v = fe.validation[0]!;
    const missing = typeof v.params?.missingProperty === "string" ? v.params.missingProperty : undefined;
    const field = fieldOf(v.instancePath, missing) || "body";
    const msg = missing ? `is required` : (v.message ?? "is invalid");
    return new MoltbotError("invalid_request", `Invalid request: '${field}' ${msg}`, { param: field });
  }
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new MoltbotError("payload_too_large", "request body is larger than the server's body_limit");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new MoltbotError("invalid_request", "unsupported Content-Type: send application/json");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new MoltbotError("invalid_json", "request body is empty; expected a JSON object");
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new MoltbotError("invalid_json", `request body is not valid JSON: ${fe.message}`);
  }
  if (err instanceof SyntaxError || fe.statusCode === 400) {
    return new MoltbotError("invalid_json", `request body is not valid JSON: ${(err as Error).message}`);
  }
  return new MoltbotError("internal_error", "internal server error", { cause: err });
}

export function errorReply(err: unknown) {
  return toOpenAIError(toMoltbotError(err));
}
