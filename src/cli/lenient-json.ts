// Reading a server's JSON document leniently (the CLI shows what it understands of a newer or
// older server's answer rather than refusing it): each reader returns null or {} for a field
// that is absent or of another type.

export type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function obj(v: unknown): Json {
  return isObject(v) ? v : {};
}

export function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

export function str(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}
