// Maps anything thrown while serving a request to OpenAI's error body and status, in one
// place. Fastify's own errors (bad JSON, body too large, schema) are translated to our codes.
import type { FastifyError } from "fastify";
import { MoltbotError, toOpenAIError } from "../errors.js";

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** `/messages/0/content` (+ a missing property) -> `messages[0].content`. */
function fieldOf(instancePath: string, missing: string | undefined): string {
  const p = instancePath.replace(/^\//, "").replaceAll("/", ".").replace(/\.(\d+)(?=\.|$)/g, "[$1]").replace(/^(\d+)(?=\.|$)/, "[$1]");
  return missing ? (p ? `${p}.${missing}` : missing) : p;
}

const missingOf = (e: AjvError) => (typeof e.params?.missingProperty === "string" ? e.params.missingProperty : undefined);
const depthOf = (e: AjvError) => e.instancePath.split("/").length + (missingOf(e) ? 1 : 0);

/** ajv's wording, a little plainer where it is clumsy. */
function wording(e: AjvError): string {
  const limit = e.params?.limit;
  switch (e.keyword) {
    case "required":
      return "is required";
    case "maxItems":
      return `must have at most ${String(limit)} items`;
    case "minItems":
      return `must have at least ${String(limit)} item${limit === 1 ? "" : "s"}`;
    case "maxLength":
      return `must be at most ${String(limit)} characters`;
    case "minLength":
      return `must be at least ${String(limit)} character${limit === 1 ? "" : "s"}`;
    default:
      return e.message ?? "is invalid";
  }
}

/**
 * One message for a failed validation. A union (anyOf) reports one error per alternative and
 * then "must match a schema in anyOf", so the first error is usually the wrong one ("must be
 * string" for a stop list that is merely too long). The real failure is the deepest one; and
 * when every alternative failed on its type alone, the message lists the alternatives.
 */
function validationMessage(errors: AjvError[]): { field: string; message: string } {
  const real = errors.filter((e) => e.keyword !== "anyOf" && e.keyword !== "oneOf");
  if (real.length === 0) return { field: fieldOf(errors[0]!.instancePath, undefined) || "body", message: errors[0]!.message ?? "is invalid" };
  const depth = Math.max(...real.map(depthOf));
  const deepest = real.filter((e) => depthOf(e) === depth);
  const specific = deepest.find((e) => e.keyword !== "type" && e.keyword !== "const");
  const chosen = specific ?? deepest[0]!;
  const field = fieldOf(chosen.instancePath, missingOf(chosen)) || "body";
  if (specific || deepest.length === 1) return { field, message: wording(chosen) };
  const kinds = [...new Set(deepest.map((e) => (e.keyword === "const" ? JSON.stringify(e.params?.allowedValue) : String(e.params?.type))))];
  const list = kinds.length === 1 ? kinds[0]! : `${kinds.slice(0, -1).join(", ")} or ${kinds.at(-1)!}`;
  return { field, message: deepest.every((e) => e.keyword === "const") ? `must be one of ${kinds.join(", ")}` : `must be ${list}` };
}

/** A URL for a message or a log line: never the whole of a huge one. */
export function shortUrl(url: string, max = 100): string {
  return url.length <= max ? url : `${url.slice(0, max)}... (${url.length} characters)`;
}

export function toMoltbotError(err: unknown): MoltbotError {
  if (err instanceof MoltbotError) return err;
  const fe = err as FastifyError & { validation?: AjvError[] };
  if (fe.validation && fe.validation.length > 0) {
    const { field, message } = validationMessage(fe.validation);
    return new MoltbotError("invalid_request", `Invalid request: '${field}' ${message}`, { param: field });
  }
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new MoltbotError("payload_too_large", "request body is larger than the server's body_limit");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new MoltbotError("invalid_request", "unsupported Content-Type: send application/json");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new MoltbotError("invalid_json", "request body is empty; expected a JSON object");
    case "FST_ERR_BAD_URL":
      return new MoltbotError("invalid_request", "the URL path is not validly percent-encoded");
    case "FST_ERR_MAX_PARAM_LENGTH":
      return new MoltbotError("uri_too_long", "a URL path segment is longer than 100 characters");
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
