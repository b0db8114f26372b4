// Validation of a model version before it takes traffic (blue/green activation, `moltbot
// models validate`): file checks (GGUF integrity, sha256 from config.json), then config.json's
// validation prompts in order, each timed. The caller supplies greedy generation (a worker
// beside the serving one); a check that fails is reported, never thrown.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { Type, type Static } from "@sinclair/typebox";
import { checkGgufIntegrity } from "../gguf/integrity.js";
import type { ModelVersion } from "../repository/repository.js";
import type { ValidationPrompt } from "../repository/model-config.js";

export const ValidationCheckSchema = Type.Object(
  {
    name: Type.String(),
    passed: Type.Boolean(),
    detail: Type.String(),
    ms: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);

/** The contract's JSON (the admin API and `moltbot models validate`), snake_case as sent. */
export const ValidationReportSchema = Type.Object(
  {
    model: Type.String(),
    version: Type.String(),
    passed: Type.Boolean(),
    /** ISO time the validation started. */
    at: Type.String(),
    duration_ms: Type.Integer({ minimum: 0 }),
    checks: Type.Array(ValidationCheckSchema),
  },
  { additionalProperties: false },
);

export type ValidationCheck = Static<typeof ValidationCheckSchema>;
export type ValidationReport = Static<typeof ValidationReportSchema>;

/** Greedy completion of `prompt`, at most `maxTokens` tokens. */
export type GenerateFn = (prompt: string, maxTokens: number) => Promise<string>;

/** Completion tokens of a validation prompt whose config.json sets no max_tokens. */
export const DEFAULT_VALIDATION_MAX_TOKENS = 32;

const SHOWN_CHARS = 200;

/** A string for a detail line: JSON-quoted (control characters visible), cut at SHOWN_CHARS. */
function shown(text: string): string {
  return text.length <= SHOWN_CHARS ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, SHOWN_CHARS))}... (${text.length} chars)`;
}

function mib(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replaceAll(/\s*\n\s*/g, " ");
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number } | { error: unknown; ms: number }> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { value, ms: Math.round(performance.now() - t0) };
  } catch (error) {
    return { error, ms: Math.round(performance.now() - t0) };
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), hash);
  return hash.digest("hex");
}

/** The weights file's checks: GGUF integrity, and its sha256 when config.json gives one. */
export async function fileChecks(v: ModelVersion): Promise<ValidationCheck[]> {
  const checks: ValidationCheck[] = [];
  const header = await timed(() => checkGgufIntegrity(v.weightsPath));
  checks.push(
    "value" in header
      ? { name: "gguf header", passed: true, detail: `${header.value.tensorCount} tensors, ${header.value.quantization ?? "quantization unknown"}, ${mib(header.value.sizeBytes)}`, ms: header.ms }
      : { name: "gguf header", passed: false, detail: message(header.error), ms: header.ms },
  );
  const expected = v.config.sha256?.toLowerCase();
  if (expected !== undefined) {
    const hashed = await timed(() => sha256File(v.weightsPath));
    if (!("value" in hashed)) checks.push({ name: "sha256", passed: false, detail: `${v.weightsPath}: ${message(hashed.error)}`, ms: hashed.ms });
    else if (hashed.value === expected) checks.push({ name: "sha256", passed: true, detail: `matches ${expected}`, ms: hashed.ms });
    else checks.push({ name: "sha256", passed: false, detail: `${v.weightsPath}: sha256 ${hashed.value}, config.json expects ${expected}`, ms: hashed.ms });
  }
  return checks;
}

/** What one prompt is checked for: its check's name and a test of the output and time. */
interface Expectation {
  name: string;
  test(output: string, ms: number): { passed: boolean; detail: string };
}

function expectations(p: ValidationPrompt): Expectation[] {
  const out: Expectation[] = [];
  const outputDetail = (output: string) => `output: ${shown(output)}`;
  if (p.expect_contains !== undefined) {
    const want = p.expect_contains;
    out.push({ name: `expect_contains ${JSON.stringify(want)}`, test: (o) => ({ passed: o.includes(want), detail: outputDetail(o) }) });
  }
  if (p.expect_regex !== undefined) {
    const re = new RegExp(p.expect_regex); // already compiled once when config.json was read
    out.push({ name: `expect_regex /${p.expect_regex}/`, test: (o) => ({ passed: re.test(o), detail: outputDetail(o) }) });
  }
  if (p.expect_output !== undefined) {
    const want = p.expect_output;
    out.push({
      name: "expect_output",
      test: (o) => (o === want ? { passed: true, detail: outputDetail(o) } : { passed: false, detail: `${outputDetail(o)}, expected ${shown(want)}${firstDifference(o, want)}` }),
    });
  }
  if (p.max_latency_ms !== undefined) {
    const limit = p.max_latency_ms;
    out.push({ name: `max_latency_ms ${limit}`, test: (_o, ms) => ({ passed: ms <= limit, detail: `took ${ms} ms (limit ${limit} ms)` }) });
  }
  if (out.length === 0) out.push({ name: "non-empty output", test: (o) => ({ passed: o.length > 0, detail: outputDetail(o) }) });
  return out;
}

function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return ` (first difference at character ${i})`;
}

/**
 * Validate a loaded version: file checks, then each validation prompt in order with `generate`
 * (the caller's greedy generation in a worker of this version). File checks that fail skip the
 * prompts, which are listed as not run. Never throws for a failed check.
 */
export async function validateVersion(v: ModelVersion, generate: GenerateFn, files?: ValidationCheck[]): Promise<ValidationReport> {
  const at = new Date();
  const t0 = performance.now();
  // `files`: fileChecks already run by the caller (before it loaded the weights), not run twice.
  const checks = [...(files ?? (await fileChecks(v)))];
  const filesOk = checks.every((c) => c.passed);
  for (const [i, p] of (v.config.validation ?? []).entries()) {
    const label = `prompt ${i + 1}`;
    const expected = expectations(p);
    if (!filesOk) {
      for (const e of expected) checks.push({ name: `${label}: ${e.name}`, passed: false, detail: "not run: a file check failed", ms: 0 });
      continue;
    }
    const result = await timed(() => generate(p.prompt, p.max_tokens ?? DEFAULT_VALIDATION_MAX_TOKENS));
    for (const e of expected) {
      const r = "value" in result ? e.test(result.value, result.ms) : { passed: false, detail: `generation failed: ${message(result.error)}` };
      checks.push({ name: `${label}: ${e.name}`, passed: r.passed, detail: r.detail, ms: result.ms });
    }
  }
  return {
    model: v.name,
    version: v.version,
    passed: checks.every((c) => c.passed),
    at: at.toISOString(),
    duration_ms: Math.round(performance.now() - t0),
    checks,
  };
}
