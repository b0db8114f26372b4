// Structured outputs: `response_format` and `grammar` -> the GBNF grammar of GenerationParams.
// JSON Schema is converted by node-llama-cpp's converter (utils/gbnfJson, the one behind its
// LlamaJsonSchemaGrammar), chosen over writing our own: it covers types, nested objects and
// arrays (prefixItems, minItems/maxItems), enum/const, oneOf, $defs/$ref (recursion included),
// string lengths and the date/time formats. Its package entry loads the native binding, and
// the main process never loads llama.cpp, so only the converter's own module files are
// imported (plain JS: chalk and lifecycle-utils besides), by path, on first use.
//
// What the converter cannot express is refused by name (unsupported_parameter), never
// dropped; a schema that is not JSON Schema, or a $ref cycle no finite value satisfies, is
// invalid_schema. Where its output would silently differ from JSON Schema's meaning, the
// schema is rewritten first (normalize): a type list becomes oneOf (the converter drops
// string lengths inside a type list), anyOf becomes oneOf (any branch satisfies anyOf), a
// schema without `type` gets the one its keywords imply (the converter reads `{}` as null).
// Converted grammars are cached by the schema's hash (LRU).
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Ajv2020 } from "ajv/dist/2020.js";
import { MoltbotError } from "../errors.js";

/** The body fields this module reads (chat and completions alike). */
export interface StructuredOutputInput {
  response_format?: { type: string; json_schema?: { name: string; schema?: Record<string, unknown>; strict?: boolean | null } } | null;
  grammar?: string | null;
}

type Schema = Record<string, unknown>;
type Converter = (schema: Schema) => string;

/** Keywords that constrain nothing the output must satisfy. */
const ANNOTATIONS = new Set(["title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly"]);
/** Keywords the converter honours (after normalize). */
const SUPPORTED = new Set([
  "type", "enum", "const", "properties", "required", "additionalProperties", "minProperties", "maxProperties",
  "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "format", "oneOf", "anyOf", "$ref",
]);
const FORMATS = new Set(["date-time", "date", "time"]);
const TYPES = ["string", "number", "integer", "boolean", "null", "object", "array"];
const OBJECT_KEYS = ["properties", "additionalProperties", "required", "minProperties", "maxProperties"];
const ARRAY_KEYS = ["items", "prefixItems", "minItems", "maxItems"];
const STRING_KEYS = ["minLength", "maxLength", "format"];
const CACHE_ENTRIES = 256;

const SCHEMA_PARAM = "response_format.json_schema.schema";

/**
 * The grammar a request asks for, or undefined. `grammar` (llama.cpp server's raw GBNF field)
 * and `response_format` exclude each other; the engine checks that the GBNF parses.
 */
export async function requestGrammar(body: StructuredOutputInput): Promise<string | undefined> {
  const format = body.response_format ?? undefined;
  const raw = body.grammar ?? undefined;
  if (raw !== undefined && format !== undefined && format.type !== "text") {
    throw new MoltbotError("invalid_request", "'grammar' and 'response_format' cannot be combined: send one", { param: "grammar" });
  }
  if (raw !== undefined) return raw.length === 0 ? undefined : raw;
  if (format === undefined || format.type === "text") return undefined;
  if (format.type === "json_object") return grammarForSchema({ type: "object", additionalProperties: true });
  if (format.type === "json_schema") {
    const schema = format.json_schema?.schema;
    if (schema === undefined) throw new MoltbotError("invalid_schema", `'${SCHEMA_PARAM}' is required with type 'json_schema'`, { param: SCHEMA_PARAM });
    return grammarForSchema(schema);
  }
  throw new MoltbotError("invalid_request", `response_format.type '${format.type.slice(0, 64)}' is not one of 'text', 'json_object', 'json_schema'`, { param: "response_format.type" });
}

const cache = new Map<string, string>();

/**
 * GBNF for a JSON Schema (checked, normalized, converted; cached by the schema's hash).
 * `param`: the body field that holds the schema, named by refusals (tool calling passes its own).
 */
export async function grammarForSchema(schema: Schema, param = SCHEMA_PARAM): Promise<string> {
  const key = createHash("sha256").update(JSON.stringify(schema)).digest("hex");
  const hit = cache.get(key);
  if (hit !== undefined) {
    cache.delete(key); // LRU: most recent last
    cache.set(key, hit);
    return hit;
  }
  checkJsonSchema(schema, param);
  const unsupported: string[] = [];
  const defs = rootDefs(schema, unsupported);
  const normalized = normalize(schema, "", defs, unsupported, true);
  if (unsupported.length > 0) {
    throw new MoltbotError("unsupported_parameter", `${param} uses what constrained decoding cannot enforce: ${unsupported.slice(0, 10).join("; ")}`, { param });
  }
  checkTerminates(normalized, param);
  const convert = await loadConverter();
  const grammar = convert(normalized);
  cache.set(key, grammar);
  if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  return grammar;
}

let ajv: Ajv2020 | undefined;

/** Is it JSON Schema at all (draft 2020-12, which OpenAI's structured outputs follow)? */
function checkJsonSchema(schema: Schema, param: string): void {
  ajv ??= new Ajv2020({ strict: false, validateFormats: false });
  if (!ajv.validateSchema(schema)) {
    const e = ajv.errors?.[0];
    const where = e?.instancePath ? e.instancePath.slice(1).replaceAll("/", ".") : "";
    throw new MoltbotError("invalid_schema", `${param}${where ? "." + where : ""} is not valid JSON Schema: ${e?.message ?? "rejected"}`, { param });
  }
}

/** The root's `$defs` (or draft-07 `definitions`): the only ones a `#/...` reference can reach. */
function rootDefs(schema: Schema, unsupported: string[]): Map<string, Schema> {
  const defs = new Map<string, Schema>();
  for (const k of ["$defs", "definitions"]) {
    const d = schema[k];
    if (d === undefined) continue;
    for (const [name, s] of Object.entries(d as Record<string, unknown>)) {
      if (typeof s !== "object" || s === null) unsupported.push(`${k}.${name}: a boolean schema`);
      else defs.set(`#/${k}/${name}`, s as Schema);
    }
  }
  return defs;
}

/**
 * The schema in the converter's dialect, with every keyword it cannot honour listed in
 * `unsupported` (by path). References become `#/$defs/<n>` into one root $defs.
 */
function normalize(s: unknown, at: string, defs: Map<string, Schema>, unsupported: string[], root = false): Schema {
  const here = (k: string) => (at === "" ? k : `${at}.${k}`);
  if (typeof s !== "object" || s === null || Array.isArray(s)) {
    unsupported.push(`${at || "(root)"}: a boolean schema`);
    return {};
  }
  const src = s as Schema;
  for (const k of Object.keys(src)) {
    if (ANNOTATIONS.has(k) || SUPPORTED.has(k)) continue;
    if (root && (k === "$defs" || k === "definitions" || k === "$schema" || k === "$id")) continue;
    unsupported.push(`'${here(k)}'`);
  }
  const out: Schema = {};
  if (typeof src.$ref === "string") {
    const target = defs.get(src.$ref);
    if (target === undefined) unsupported.push(`'${here("$ref")}': only references to the root's $defs are supported, not '${src.$ref.slice(0, 64)}'`);
    else out.$ref = `#/$defs/${defName(src.$ref)}`;
    const others = Object.keys(src).filter((k) => k !== "$ref" && SUPPORTED.has(k));
    if (others.length > 0) unsupported.push(`'${here(others[0]!)}' beside '$ref'`);
    if (root) attachDefs(out, defs, unsupported);
    return out;
  }
  const alternatives = (src.oneOf ?? src.anyOf) as unknown[] | undefined;
  if (alternatives !== undefined) {
    if (src.oneOf !== undefined && src.anyOf !== undefined) unsupported.push(`'${here("anyOf")}' beside 'oneOf'`);
    const key = src.oneOf !== undefined ? "oneOf" : "anyOf";
    const others = Object.keys(src).filter((k) => k !== "oneOf" && k !== "anyOf" && SUPPORTED.has(k));
    if (others.length > 0) unsupported.push(`'${here(others[0]!)}' beside '${key}'`);
    out.oneOf = alternatives.map((a, i) => normalize(a, here(`${key}[${i}]`), defs, unsupported));
    if (root) attachDefs(out, defs, unsupported);
    return out;
  }
  if (src.enum !== undefined || src.const !== undefined) {
    const values = src.enum !== undefined ? (src.enum as unknown[]) : [src.const];
    const bad = values.find((v) => typeof v === "object" && v !== null);
    if (bad !== undefined) unsupported.push(`'${here(src.enum !== undefined ? "enum" : "const")}': object or array values`);
    // A type beside an enum only narrows it: keep the values of that type.
    const types = src.type === undefined ? null : ([] as string[]).concat(src.type as string | string[]);
    const kept = types === null ? values : values.filter((v) => types.includes(jsonType(v)) || (types.includes("number") && jsonType(v) === "integer"));
    if (kept.length === 0) unsupported.push(`'${here("enum")}': no value of the given type`);
    if (src.enum !== undefined) out.enum = kept;
    else out.const = src.const;
    if (root) attachDefs(out, defs, unsupported);
    return out;
  }
  let types: string[];
  if (src.type === undefined) {
    // The converter reads a schema without `type` as null: give it the type its keywords imply.
    const has = (keys: string[]) => keys.some((k) => src[k] !== undefined);
    types = has(OBJECT_KEYS) ? ["object"] : has(ARRAY_KEYS) ? ["array"] : has(STRING_KEYS) ? ["string"] : TYPES.filter((t) => t !== "integer");
  } else {
    types = ([] as string[]).concat(src.type as string | string[]);
  }
  const branches = types.map((t) => typed(src, t, at, defs, unsupported));
  const result: Schema = branches.length === 1 ? branches[0]! : { oneOf: branches };
  if (root) attachDefs(result, defs, unsupported);
  return result;
}

/** One type's schema, carrying only that type's keywords. */
function typed(src: Schema, type: string, at: string, defs: Map<string, Schema>, unsupported: string[]): Schema {
  const here = (k: string) => (at === "" ? k : `${at}.${k}`);
  const out: Schema = { type };
  const copy = (keys: string[]) => {
    for (const k of keys) if (src[k] !== undefined) out[k] = src[k];
  };
  if (type === "string") {
    if (src.format !== undefined && !FORMATS.has(src.format as string)) unsupported.push(`'${here("format")}': '${String(src.format).slice(0, 32)}' (supported: ${[...FORMATS].join(", ")})`);
    if (src.format !== undefined && (src.minLength !== undefined || src.maxLength !== undefined)) unsupported.push(`'${here("minLength")}'/'maxLength' beside 'format'`);
    copy(STRING_KEYS);
  } else if (type === "object") {
    copy(["minProperties", "maxProperties"]);
    const props = (src.properties ?? {}) as Record<string, unknown>;
    out.properties = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, normalize(v, here(`properties.${k}`), defs, unsupported)]));
    // The converter writes every property, which satisfies any `required` naming them.
    for (const r of (src.required ?? []) as string[]) if (!(r in props)) unsupported.push(`'${here("required")}': '${r.slice(0, 64)}' is not among the properties`);
    const extra = src.additionalProperties;
    // JSON Schema allows extra properties by default; writing none satisfies that too.
    out.additionalProperties = extra === undefined || extra === false ? false : extra === true ? true : normalize(extra, here("additionalProperties"), defs, unsupported);
  } else if (type === "array") {
    copy(["minItems", "maxItems"]);
    if (src.items !== undefined) {
      if (typeof src.items === "boolean") unsupported.push(`'${here("items")}': a boolean`);
      else out.items = normalize(src.items, here("items"), defs, unsupported);
    }
    if (src.prefixItems !== undefined) out.prefixItems = (src.prefixItems as unknown[]).map((p, i) => normalize(p, here(`prefixItems[${i}]`), defs, unsupported));
  }
  return out;
}

function attachDefs(out: Schema, defs: Map<string, Schema>, unsupported: string[]): void {
  if (defs.size === 0) return;
  const all: Record<string, Schema> = {};
  for (const [ref, s] of defs) all[defName(ref)] = normalize(s, ref.slice(2).replaceAll("/", "."), defs, unsupported);
  out.$defs = all;
}

/** `#/$defs/a` and `#/definitions/a` are different definitions: keep them apart in one $defs. */
function defName(ref: string): string {
  return ref.startsWith("#/$defs/") ? ref.slice(8) : `definitions__${ref.slice(14)}`;
}

function jsonType(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/**
 * Refuse a schema no finite JSON value satisfies: the converter writes every property, so a
 * definition that reaches itself through properties (or non-empty arrays) only, never through
 * a branch that can end (another oneOf alternative, an array that may be empty), would make the
 * model write forever. Least fixed point of "this schema has a finite instance".
 */
function checkTerminates(root: Schema, param: string): void {
  const defs = (root.$defs ?? {}) as Record<string, Schema>;
  const finite = new Map<string, boolean>(Object.keys(defs).map((k) => [k, false]));
  const ends = (s: Schema): boolean => {
    if (typeof s.$ref === "string") return finite.get(s.$ref.slice(8)) === true;
    if (Array.isArray(s.oneOf)) return (s.oneOf as Schema[]).some(ends);
    if (s.type === "object") return Object.values((s.properties ?? {}) as Record<string, Schema>).every(ends) && ((s.minProperties as number | undefined) ?? 0) <= Object.keys((s.properties ?? {}) as object).length;
    if (s.type === "array") {
      const prefix = (s.prefixItems ?? []) as Schema[];
      const min = (s.minItems as number | undefined) ?? 0;
      return prefix.slice(0, min).every(ends) && (min <= prefix.length || s.items === undefined || ends(s.items as Schema));
    }
    return true;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const [k, s] of Object.entries(defs)) {
      if (!finite.get(k) && ends(s)) {
        finite.set(k, true);
        changed = true;
      }
    }
  }
  if (!ends(root)) {
    const cyclic = [...finite].filter(([, f]) => !f).map(([k]) => `'#/$defs/${k.replace(/^definitions__/, "")}'`);
    throw new MoltbotError("invalid_schema", `${param}: the $ref cycle through ${cyclic.join(", ")} has no finite instance (every property is required: end it with a nullable alternative or an array that may be empty)`, { param });
  }
}

// The converter's number rules allow any exponent up to 16 digits: an "integer" such as 58e-6
// is not one, and 4e15219116 parses as Infinity, which no JSON Schema number accepts. Integers
// get no exponent, other numbers one of at most two digits (16 digits and e99 stay finite).
const EXPONENT = '([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';
function fixNumbers(grammar: string): string {
  return grammar
    .split("\n")
    .map((line) => (line.startsWith("integer-number-rule ::= ") ? line.replace(" " + EXPONENT, "") : line.replace(EXPONENT, '([eE] [-+]? [0-9]{1,2})?')))
    .join("\n");
}

let converter: Promise<Converter> | undefined;

function loadConverter(): Promise<Converter> {
  converter ??= (async () => {
    // The package's exports list only its entry (which loads the native binding): resolve it and
    // import the converter's files beside it.
    const dir = path.join(path.dirname(createRequire(import.meta.url).resolve("node-llama-cpp")), "utils", "gbnfJson");
    const load = (f: string) => import(pathToFileURL(path.join(dir, f)).href) as Promise<Record<string, unknown>>;
    const [gen, scope, terminal] = await Promise.all([load("GbnfGrammarGenerator.js"), load("utils/GbnfJsonScopeState.js"), load("utils/getGbnfJsonTerminalForGbnfJsonSchema.js")]);
    type Generator = { generateGbnfFile(root: string): string };
    const Generator = gen.GbnfGrammarGenerator as new () => Generator;
    const ScopeState = scope.GbnfJsonScopeState as new (o: { allowNewLines: boolean; scopePadSpaces: number }) => unknown;
    const toTerminal = terminal.getGbnfJsonTerminalForGbnfJsonSchema as (s: Schema, g: Generator, st: unknown) => { resolve(g: Generator, root: boolean): string };
    // getGbnfGrammarForGbnfJsonSchema, less the four newlines it appends after the value (its
    // own stop trigger): here the grammar ends with the value, so the only token left is the end
    // of generation. No newlines inside either: whitespace stays one optional space.
    return (schema: Schema) => {
      const g = new Generator();
      const root = toTerminal(schema, g, new ScopeState({ allowNewLines: false, scopePadSpaces: 0 })).resolve(g, true);
      return fixNumbers(g.generateGbnfFile(root));
    };
  })();
  return converter;
}
