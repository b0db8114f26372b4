// Loads the configuration: defaults < YAML file < MOLTBOT_* environment < CLI overrides.
// Each source is checked on its own so an error names where the bad value came from (the
// file, the variable, or "overrides"), in one line with the key path. Relative paths are
// resolved against the config file's directory when written in the file, against the
// working directory otherwise, so the rest of the server sees only absolute paths.
// MODEL_VERSION is read by the repository module, not here: it picks a version, not a setting.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ValueErrorType, type ValueError } from "@sinclair/typebox/errors";
import { Value } from "@sinclair/typebox/value";
import type { TSchema } from "@sinclair/typebox";
import { LineCounter, parseDocument } from "yaml";
import { MoltbotError } from "../errors.js";
import { ConfigSchema, note, type MoltbotConfig } from "./schema.js";

export type DeepPartial<T> = T extends readonly (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> | undefined }
    : T;

export interface LoadOptions {
  /** Config file; else $MOLTBOT_CONFIG; else ./moltbot.yaml when it exists; else none. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** From CLI flags; `undefined` leaves a key alone. */
  overrides?: DeepPartial<MoltbotConfig>;
  /** Base of relative paths outside the file (default: process.cwd()). */
  cwd?: string;
}

export interface LoadedConfig {
  config: MoltbotConfig;
  /** Absolute path of the file read, if any. */
  file: string | undefined;
  /** Absolute state directory: data_dir (from overrides, $MOLTBOT_DATA_DIR or the file), else ./data beside the file, else ./data in cwd. */
  dataDir: string;
  /** Concrete key paths set to a non-default value whose feature is not built yet; the server warns once for each. */
  notEnforced: string[];
}

/**
 * Key paths whose feature does not exist yet ("[]" stands for every array index). Setting one
 * to a non-default value is accepted (configs stay forward compatible) but reported in
 * `notEnforced`. Remove an entry in the same change that makes its feature real.
 */
export const NOT_YET_ENFORCED: readonly string[] = [];

interface EnvVar {
  name: string;
  path: string[];
  normalize?: (v: string) => string;
}

const ENV_VARS: readonly EnvVar[] = [
  { name: "MOLTBOT_HOST", path: ["server", "host"] },
  { name: "MOLTBOT_PORT", path: ["server", "port"] },
  { name: "MOLTBOT_THREADS", path: ["threads"] },
  { name: "MOLTBOT_LOG_LEVEL", path: ["log", "level"], normalize: (v) => v.toUpperCase() },
  { name: "MOLTBOT_LOG_FORMAT", path: ["log", "format"], normalize: (v) => v.toLowerCase() },
  { name: "MOLTBOT_DATA_DIR", path: ["data_dir"] },
  { name: "MOLTBOT_MODEL_PATH", path: ["model_path"] },
];

const MAX_PROBLEMS = 5;

type Json = Record<string, unknown>;

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();

  const file = pickFile(opts.file ?? nonEmpty(env["MOLTBOT_CONFIG"]), cwd);
  let merged: Json = {};
  if (file !== undefined) {
    merged = readYaml(file);
    resolvePaths(merged, dirname(file));
    check(merged, file);
  }

  merged = deepMerge(merged, envPatch(env, cwd));

  if (opts.overrides !== undefined) {
    const overrides = structuredClone(stripAbsent(opts.overrides as Json) as Json);
    resolvePaths(overrides, cwd);
    merged = deepMerge(merged, overrides);
    check(merged, "overrides");
  }

  const config = Value.Default(ConfigSchema, structuredClone(merged)) as MoltbotConfig;
  // Defaults alone must always be valid; this also covers the no-file, no-override case.
  check(merged, file ?? "config");
  crossCheck(config, file ?? "config");

  return {
    config,
    file,
    dataDir: config.data_dir ?? join(file !== undefined ? dirname(file) : cwd, "data"),
    notEnforced: notEnforced(merged),
  };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

function pickFile(explicit: string | undefined, cwd: string): string | undefined {
  if (explicit !== undefined) {
    const file = resolve(cwd, explicit);
    if (!existsSync(file)) throw new MoltbotError("config_invalid", `${file}: config file not found`);
    return file;
  }
  const implicit = join(cwd, "moltbot.yaml");
  return existsSync(implicit) ? implicit : undefined;
}

function readYaml(file: string): Json {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new MoltbotError("config_invalid", `${file}: cannot read config file (${code})`, { cause: err });
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const err = doc.errors[0];
  if (err !== undefined) {
    const { line, col } = lines.linePos(err.pos[0]);
    const reason = err.message.split("\n")[0];
    throw new MoltbotError("config_invalid", `${file}:${line}:${col}: invalid YAML: ${reason}`);
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) return {};
  if (!isPlainObject(value)) {
    throw new MoltbotError("config_invalid", `${file}: expected a mapping of keys at the top level, got ${show(value)}`);
  }
  // `key:` with nothing after it (often every child commented out) means "use the defaults".
  return stripAbsent(value) as Json;
}

/** Validate `raw` with defaults applied; throw one line naming every problem's key path. */
function check(raw: Json, source: string): void {
  const value = Value.Default(ConfigSchema, structuredClone(raw));
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const error of Value.Errors(ConfigSchema, value)) {
    const path = keyPath(error.path);
    // TypeBox may report one bad value several ways (missing, then wrong type); keep the first.
    if (seen.has(path)) continue;
    seen.add(path);
    problems.push(`${path}: ${reason(error)}`);
  }
  if (problems.length > 0) fail(source, problems);
}

function fail(source: string, problems: string[]): never {
  const shown = problems.slice(0, MAX_PROBLEMS);
  if (problems.length > MAX_PROBLEMS) shown.push(`and ${problems.length - MAX_PROBLEMS} more`);
  throw new MoltbotError("config_invalid", `${source}: ${shown.join("; ")}`);
}

function reason(error: ValueError): string {
  switch (error.type) {
    case ValueErrorType.ObjectAdditionalProperties: {
      const key = keyPath(error.path).split(/[.[]/).pop() ?? "";
      const known = Object.keys((error.schema as { properties?: Json }).properties ?? {});
      const close = known.find((k) => editDistance(k, key) <= 2);
      return close === undefined ? `unknown key (known: ${known.join(", ")})` : `unknown key, did you mean "${close}"?`;
    }
    case ValueErrorType.ObjectRequiredProperty:
      return `required key missing (${expected(error.schema)})`;
    default:
      return `expected ${expected(error.schema)}, got ${show(error.value)}`;
  }
}

/** Words for what a schema accepts: its `expected` note, else derived from its type. */
function expected(schema: TSchema): string {
  const worded = note(schema, "expected");
  if (typeof worded === "string") return worded;
  const s = schema as { type?: string; minimum?: number; maximum?: number; minLength?: number; minItems?: number };
  const range = (kind: string): string =>
    s.minimum !== undefined && s.maximum !== undefined
      ? `${kind} ${s.minimum}..${s.maximum}`
      : s.minimum !== undefined
        ? `${kind} >= ${s.minimum}`
        : s.maximum !== undefined
          ? `${kind} <= ${s.maximum}`
          : kind;
  switch (s.type) {
    case "integer":
      return range("integer");
    case "number":
      return range("number");
    case "boolean":
      return "true or false";
    case "string":
      return (s.minLength ?? 0) > 0 ? "non-empty string" : "string";
    case "object":
      return "a mapping of keys";
    case "array":
      return (s.minItems ?? 0) > 0 ? `a list of at least ${s.minItems} item(s)` : "a list";
    default:
      return "a valid value";
  }
}

function show(value: unknown): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** "/model_pool/0/budget/cost_limit" -> "model_pool[0].budget.cost_limit". */
function keyPath(pointer: string): string {
  let out = "";
  for (const raw of pointer.split("/").slice(1)) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    out += /^\d+$/.test(part) ? `[${part}]` : out === "" ? part : `.${part}`;
  }
  return out === "" ? "(top level)" : out;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

/** Env values are strings: coerce each to its key's type and check it alone, naming the variable. */
function envPatch(env: NodeJS.ProcessEnv, cwd: string): Json {
  const patch: Json = {};
  const problems: string[] = [];
  for (const v of ENV_VARS) {
    const text = nonEmpty(env[v.name]?.trim());
    if (text === undefined) continue;
    const schema = schemaAt(v.path);
    const normalized = v.normalize ? v.normalize(text) : text;
    let value: unknown = coerce(schema, normalized);
    if (!Value.Check(schema, value)) {
      problems.push(`${v.name}: expected ${expected(schema)}, got ${JSON.stringify(text)}`);
      continue;
    }
    if (note(schema, "xPath") === true) value = resolve(cwd, value as string);
    setIn(patch, v.path, value);
  }
  if (problems.length > 0) throw new MoltbotError("config_invalid", problems.join("; "));
  return patch;
}

function coerce(schema: TSchema, text: string): unknown {
  const types = new Set<string>();
  const collect = (s: TSchema): void => {
    const { type, anyOf } = s as { type?: string; anyOf?: TSchema[] };
    if (type !== undefined) types.add(type);
    anyOf?.forEach(collect);
  };
  collect(schema);
  if ((types.has("integer") || types.has("number")) && /^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (types.has("boolean")) {
    if (/^(true|1|yes|on)$/i.test(text)) return true;
    if (/^(false|0|no|off)$/i.test(text)) return false;
  }
  return text;
}

/** The schema node at a key path; "[]" steps into array items. */
function schemaAt(path: readonly string[]): TSchema {
  let node: TSchema = ConfigSchema;
  for (const seg of path) {
    const n = node as { properties?: Record<string, TSchema>; items?: TSchema };
    const next = seg === "[]" ? n.items : n.properties?.[seg];
    if (next === undefined) throw new Error(`config schema has no key ${path.join(".")}`);
    node = next;
  }
  return node;
}

/** Resolve every value whose schema is marked xPath against `base`, in place. */
function resolvePaths(raw: Json, base: string, schema: TSchema = ConfigSchema): void {
  const properties = (schema as { properties?: Record<string, TSchema> }).properties ?? {};
  for (const [key, sub] of Object.entries(properties)) {
    const value = raw[key];
    if (note(sub, "xPath") === true && typeof value === "string" && value !== "") raw[key] = resolve(base, value);
    else if (isPlainObject(value)) resolvePaths(value, base, sub);
  }
}

function crossCheck(config: MoltbotConfig, source: string): void {
  const problems: string[] = [];
  const names = new Map<string, number>();
  config.model_pool.forEach((entry, i) => {
    const first = names.get(entry.name);
    if (first !== undefined) problems.push(`model_pool[${i}].name: duplicate name "${entry.name}" (also model_pool[${first}])`);
    else names.set(entry.name, i);
  });
  config.model_pool.forEach((entry, i) => {
    const target = entry.strategy.fallback;
    if (typeof target === "string" && !names.has(target)) {
      problems.push(`model_pool[${i}].strategy.fallback: no pool entry named "${target}" (use true, false or an entry's name)`);
    }
  });
  const jwt = config.security.jwt;
  if (jwt !== undefined) {
    const sources = (["secret", "secret_file", "public_key_file", "jwks_file"] as const).filter((k) => jwt[k] !== undefined);
    const hmac = jwt.algorithms.filter((a) => a.startsWith("HS"));
    if (sources.length !== 1) {
      problems.push(`security.jwt: set exactly one of secret, secret_file, public_key_file, jwks_file (got ${sources.length === 0 ? "none" : sources.join(", ")})`);
    } else if (hmac.length > 0 && hmac.length < jwt.algorithms.length) {
      problems.push(`security.jwt.algorithms: HMAC (HS*) and public-key algorithms need different keys; list one kind`);
    } else if ((hmac.length > 0) !== (sources[0] === "secret" || sources[0] === "secret_file")) {
      problems.push(`security.jwt.${sources[0]}: does not fit algorithms ${jwt.algorithms.join(", ")} (HS* need secret or secret_file, others a public key)`);
    }
  }
  const tls = config.security.tls;
  if (tls?.client_auth === "require" && tls.ca_file === undefined) problems.push("security.tls.client_auth: require needs ca_file (the CA that signs client certificates)");
  if (tls?.client_auth === "none" && tls.ca_file !== undefined) problems.push("security.tls.ca_file: only used to check client certificates, which client_auth: none turns off; remove one of them");
  if (config.server.headers_timeout_ms > config.server.body_timeout_ms) {
    problems.push(`server.headers_timeout_ms: ${config.server.headers_timeout_ms} exceeds server.body_timeout_ms ${config.server.body_timeout_ms} (the headers are part of the request)`);
  }
  const backoff = config.worker.restart_backoff_ms;
  if (backoff.initial > backoff.max) {
    problems.push(`worker.restart_backoff_ms.initial: ${backoff.initial} exceeds max ${backoff.max}`);
  }
  if (problems.length > 0) fail(source, problems);
}

function notEnforced(raw: Json): string[] {
  const found: string[] = [];
  for (const pattern of NOT_YET_ENFORCED) {
    const segments = pattern.replace(/\[\]/g, ".[]").split(".");
    const schema = schemaAt(segments);
    const fallback = Value.Default(schema, undefined);
    const visit = (value: unknown, rest: string[], path: string): void => {
      if (value === undefined) return;
      if (rest.length === 0) {
        const effective = Value.Default(schema, structuredClone(value));
        if (!Value.Equal(effective, fallback)) found.push(path);
        return;
      }
      const [seg, ...tail] = rest as [string, ...string[]];
      if (seg === "[]") {
        if (Array.isArray(value)) value.forEach((item, i) => visit(item, tail, `${path}[${i}]`));
      } else if (isPlainObject(value)) {
        visit(value[seg], tail, path === "" ? seg : `${path}.${seg}`);
      }
    };
    visit(raw, segments, "");
  }
  return found;
}

function isPlainObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Drop null/undefined object members, recursively; array items stay (and are validated). */
function stripAbsent(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripAbsent);
  if (!isPlainObject(v)) return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v)) if (x !== null && x !== undefined) out[k] = stripAbsent(x);
  return out;
}

/** Objects merge key by key; arrays and scalars replace (a model_pool is not spliced). */
function deepMerge(base: Json, patch: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function setIn(target: Json, path: readonly string[], value: unknown): void {
  let node = target;
  for (const seg of path.slice(0, -1)) {
    if (!isPlainObject(node[seg])) node[seg] = {};
    node = node[seg] as Json;
  }
  node[path[path.length - 1]!] = value;
}
