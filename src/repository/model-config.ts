// The schema of a model version's config.json: what the repository needs to load and price
// a model and to validate it before it takes traffic.
import { Type, type Static } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { MoltbotError } from "../errors.js";

const PricingSchema = Type.Object(
  {
    input_per_1k: Type.Number({ minimum: 0, default: 0 }),
    output_per_1k: Type.Number({ minimum: 0, default: 0 }),
    /** Prompt tokens served from the KV prefix cache; absent = charged as input. */
    cached_input_per_1k: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const ValidationPromptSchema = Type.Object(
  {
    prompt: Type.String({ minLength: 1 }),
    /** The completion must contain this text (case-sensitive). No expectation at all = any non-empty output. */
    expect_contains: Type.Optional(Type.String()),
    /** The completion must match this JavaScript regular expression (compiled when config.json is read). */
    expect_regex: Type.Optional(Type.String()),
    /** The exact completion at temperature 0 (a golden output). */
    expect_output: Type.Optional(Type.String()),
    /** The whole generation of this prompt must take at most this long. */
    max_latency_ms: Type.Optional(Type.Integer({ minimum: 1 })),
    max_tokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
  },
  { additionalProperties: false },
);

/**
 * Model and pool entry names: what clients send as `model` and what goes into response headers
 * (x-moltbot-fallback) and log lines, so no control characters, spaces or commas.
 */
export const MODEL_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$";
export const MODEL_NAME_EXPECTED = "a name of letters, digits and . _ : / - (starting with a letter or digit, at most 128)";

export const ModelConfigSchema = Type.Object(
  {
    /** Model name clients use in `model`; defaults to the repository folder name. */
    name: Type.Optional(Type.String({ minLength: 1, pattern: MODEL_NAME_PATTERN })),
    type: Type.Union([Type.Literal("llm"), Type.Literal("embedding")], { default: "llm" }),
    /** Context length per sequence in tokens; defaults to the model's training context, capped at 4096. */
    context_size: Type.Optional(Type.Integer({ minimum: 16, maximum: 1_048_576 })),
    /** Sequences decoded together (parallel slots); moltbot.yaml's batching overrides it. */
    parallel: Type.Optional(Type.Integer({ minimum: 1, maximum: 128 })),
    /** Weights file name inside the version folder; found by GGUF magic when omitted. */
    weights: Type.Optional(Type.String({ minLength: 1 })),
    pricing: Type.Optional(PricingSchema),
    validation: Type.Optional(Type.Array(ValidationPromptSchema)),
    /** SHA-256 of the weights file (hex), checked when the version is validated. */
    sha256: Type.Optional(Type.String({ pattern: "^[0-9a-fA-F]{64}$" })),
    description: Type.Optional(Type.String()),
    /** Written by `moltbot quantize`: the file type it made (`Q8_0`), and what it was made from. */
    quantization: Type.Optional(Type.String({ minLength: 1 })),
    source_version: Type.Optional(Type.String({ minLength: 1 })),
    source_sha256: Type.Optional(Type.String({ pattern: "^[0-9a-fA-F]{64}$" })),
  },
  { additionalProperties: false },
);

export type ModelConfig = Static<typeof ModelConfigSchema>;
export type ValidationPrompt = Static<typeof ValidationPromptSchema>;

/** Parse and check config.json text; errors name the file and the field. */
export function parseModelConfig(text: string, file: string): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new MoltbotError("repository_invalid", `${file}: malformed JSON (${(err as Error).message})`);
  }
  const withDefaults = Value.Default(ModelConfigSchema, Value.Clone(raw));
  const first = Value.Errors(ModelConfigSchema, withDefaults).First();
  if (first) {
    const where = first.path === "" ? "(top level)" : first.path.slice(1).replaceAll("/", ".");
    throw new MoltbotError("repository_invalid", `${file}: ${where}: ${first.message}${first.path ? `, got ${JSON.stringify(first.value)}` : ""}`);
  }
  const config = withDefaults as ModelConfig;
  // A bad pattern is a config error at start, not a failed check at activation time.
  config.validation?.forEach((p, i) => {
    if (p.expect_regex === undefined) return;
    try {
      new RegExp(p.expect_regex);
    } catch (err) {
      throw new MoltbotError("repository_invalid", `${file}: validation[${i}].expect_regex: invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, "")}`);
    }
  });
  return config;
}
