// The one schema of moltbot.yaml: runtime check, TypeScript type, defaults, and the one-line
// description of each key (configTemplate() prints them, so `moltbot init` cannot drift).
// Every object is closed (additionalProperties: false) so a typo fails at load with its path.
// Keys with a default are not Optional: after loading they are always present, and the type
// says so. Unit strings ("4GiB", "30s") are checked here through formats; consumers parse
// them with src/config/units.ts when they need the number.

import { FormatRegistry, Type, type Static, type TObject, type TProperties, type TSchema, type TUnsafe } from "@sinclair/typebox";
import { isBytes, isDuration, isPercent, isRate } from "./units.js";
import { MODEL_NAME_EXPECTED, MODEL_NAME_PATTERN } from "../repository/model-config.js";

FormatRegistry.Set("moltbot-bytes", isBytes);
FormatRegistry.Set("moltbot-duration", isDuration);
FormatRegistry.Set("moltbot-percent", isPercent);
FormatRegistry.Set("moltbot-rate", isRate);

/** Annotations this project adds to a schema. `expected` words the error message; `xPath`
 *  marks a filesystem path, resolved against the config file's directory when written there. */
interface Notes {
  description: string;
  default?: unknown;
  examples?: unknown[];
  expected?: string;
}

function section<T extends TProperties>(description: string, properties: T, opts: { optional?: boolean } = {}): TObject<T> {
  return Type.Object(properties, opts.optional ? { additionalProperties: false, description } : { additionalProperties: false, description, default: {} });
}

function oneOf<const V extends readonly [string, ...string[]]>(values: V, notes: Notes): TUnsafe<V[number]> {
  // Type.Unsafe keeps the union's runtime schema (its Kind included) and gives the literal type.
  const union = Type.Union(values.map((v) => Type.Literal(v)), { expected: `one of ${values.map((v) => JSON.stringify(v)).join(", ")}`, ...notes });
  return Type.Unsafe<V[number]>(union);
}

function bytes(notes: Notes) {
  return Type.Union([Type.Integer({ minimum: 0 }), Type.String({ format: "moltbot-bytes" })], {
    expected: 'byte size like "4GiB", "512MB" or a whole number of bytes',
    ...notes,
  });
}

const duration = (notes: Notes) => Type.String({ format: "moltbot-duration", expected: 'duration like "100ms", "30s", "1h" or "7d"', ...notes });
const percent = (notes: Notes) => Type.String({ format: "moltbot-percent", expected: 'percentage like "150%"', ...notes });
const rate = (notes: Notes) => Type.String({ format: "moltbot-rate", expected: 'rate like "10MB/s"', ...notes });
const filePath = (notes: Notes) => Type.String({ minLength: 1, xPath: true, ...notes });
const positiveInt = (notes: Notes & { maximum?: number }) => Type.Integer({ minimum: 1, ...notes });

// `optional`: a pool entry's own batching/queue stays absent unless written, so the model's
// config.json and the global section apply.
const BatchingSchema = (description: string, optional = false) =>
  section(description, {
    enabled: Type.Boolean({ default: true, description: "decode concurrent requests to one model together" }),
    // Sequences share one KV buffer (kv_cache_tokens), so slots cost no memory until used: the
    // seed's 32 by default.
    max_batch_size: positiveInt({ default: 32, maximum: 128, description: "most sequences decoded together (parallel slots)" }),
    kv_cache_tokens: Type.Optional(
      positiveInt({ description: "cells of the model's one KV buffer, shared by running sequences and cached prompt prefixes (default: context_size x min(max_batch_size, 4))", examples: [16384] }),
    ),
    // llama.cpp's server keeps such a cache too (--cache-ram, 8 GiB by default).
    cache_ram: bytes({ default: "4GiB", description: "host memory for the KV cells of finished prompts that left the KV buffer, restored when a prompt starts the same way (0: off)" }),
    speculative: Type.Boolean({ default: true, description: "draft tokens from the context (n-gram prompt lookup) and verify them in the batch; adaptive per sequence" }),
    // A continuous batcher never waits to fill a batch: a request joins at the next step.
    timeout_ms: Type.Optional(Type.Integer({ minimum: 0, description: "accepted for compatibility and ignored: requests join the running batch at the next decode step", examples: [100] })),
  }, { optional });

const QueueSchema = (description: string, optional = false) =>
  section(description, {
    max_size: positiveInt({ default: 256, description: "requests waiting per model; beyond it the lowest priority is shed with 429" }),
    max_wait_ms: positiveInt({ default: 30000, description: "longest a request waits for a slot before 429, in ms" }),
  }, { optional });

// `optional`: a pool entry's own limits stay absent unless written; its keys override the
// global section's one by one (src/workers/cgroups/limits.ts).
const ResourceLimitsSchema = (description: string, optional = false) =>
  section(description, {
    cpu: Type.Optional(
      section(
        "CPU bandwidth",
        {
          quota: Type.Optional(percent({ description: "CPU share; 100% is one core; the worker's threads follow it (150%: at most 2)", examples: ["150%"] })),
          period: Type.Optional(duration({ description: "CFS period the quota is counted in, 1ms..1s (default 100ms)", examples: ["100ms"] })),
        },
        { optional: true },
      ),
    ),
    memory: Type.Optional(
      section(
        "memory",
        {
          limit: Type.Optional(bytes({ description: "memory cap; a worker over it is killed and restarted with backoff, and 3 kills in a row mark it failed", examples: ["4GiB"] })),
          swap: Type.Optional(bytes({ description: "swap allowed beyond the limit (needs limit)", examples: ["1GiB"] })),
        },
        { optional: true },
      ),
    ),
    io: Type.Optional(
      section(
        "disk bandwidth on the disk that holds the model file",
        {
          read_bps: Type.Optional(rate({ description: "read rate cap", examples: ["10MB/s"] })),
          write_bps: Type.Optional(rate({ description: "write rate cap", examples: ["5MB/s"] })),
        },
        { optional: true },
      ),
    ),
  }, { optional });

const PricingSchema = section(
  "price per 1K tokens; overrides the model's config.json",
  {
    input_per_1k: Type.Number({ minimum: 0, description: "price of 1K prompt tokens", examples: [0.5] }),
    output_per_1k: Type.Number({ minimum: 0, description: "price of 1K completion tokens", examples: [1.5] }),
    cached_input_per_1k: Type.Optional(
      Type.Number({ minimum: 0, description: "price of 1K prompt tokens served from the KV prefix cache (default: input_per_1k)", examples: [0.25] }),
    ),
  },
  { optional: true },
);

export const ModelPoolEntrySchema = Type.Object(
  {
    name: Type.String({ minLength: 1, pattern: MODEL_NAME_PATTERN, expected: MODEL_NAME_EXPECTED, description: "name clients send as `model`", examples: ["text-generation"] }),
    model: Type.Optional(Type.String({ minLength: 1, pattern: MODEL_NAME_PATTERN, expected: MODEL_NAME_EXPECTED, description: "repository model to serve (default: the entry's name)", examples: ["llama-3-8b"] })),
    type: oneOf(["llm", "embedding"] as const, { default: "llm", description: "llm | embedding" }),
    context_size: Type.Optional(positiveInt({ description: "context length per sequence (default: the global one)", examples: [4096] })),
    budget: Type.Optional(
      section(
        "spending limits; absent means unlimited",
        {
          max_tokens: Type.Optional(positiveInt({ description: "hard cap on prompt + completion tokens of one inference", examples: [100000] })),
          cost_limit: Type.Optional(Type.Number({ minimum: 0, description: "monthly spend cap (UTC months), pricing currency", examples: [50] })),
        },
        { optional: true },
      ),
    ),
    strategy: section("scheduling under load", {
      priority: oneOf(["high", "normal", "low"] as const, { default: "normal", description: "high | normal | low: queue order and load shedding" }),
      fallback: Type.Union([Type.Boolean(), Type.String({ minLength: 1 })], {
        default: false,
        expected: "true, false or the name of another pool entry",
        description: "when over budget, overloaded or down: true = the next entry, or an entry's name",
      }),
    }),
    pricing: Type.Optional(PricingSchema),
    batching: Type.Optional(BatchingSchema("batching for this entry (default: config.json parallel, else the global batching)", true)),
    queue: Type.Optional(QueueSchema("queue for this entry (default: the global queue)", true)),
    resource_limits: Type.Optional(ResourceLimitsSchema("cgroup limits of this model's worker, key by key over the global resource_limits", true)),
    // A cheap fallback model beside a GPU one need not take GPU memory.
    gpu: Type.Optional(
      Type.Union([Type.Integer({ minimum: 0 }), Type.Literal(false)], {
        expected: "a GPU index (0, 1, ...) or false",
        description: "where this entry's model runs: a GPU index of engine.backend, or false for the CPU (default: engine.main_gpu, else every GPU)",
        examples: [0],
      }),
    ),
  },
  { additionalProperties: false, description: "one served model" },
);

const JWT_ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"] as const;

export const ConfigSchema = Type.Object(
  {
    server: section("HTTP listener", {
      host: Type.String({ minLength: 1, default: "127.0.0.1", description: "address to listen on (0.0.0.0 for all interfaces)" }),
      // 0 asks the OS for a free port (tests); the chosen port is logged at start.
      port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, expected: "integer 0..65535", description: "TCP port" }),
      body_limit: bytes({ default: "1MiB", description: "largest request body" }),
      request_timeout_ms: Type.Optional(positiveInt({ description: "end a request with 504 after this long (queued or generating), in ms; a body `timeout` (seconds) may shorten it (default: none)", examples: [600000] })),
      // Slowloris: without these a client trickling headers or a body holds a socket for minutes.
      body_timeout_ms: positiveInt({ default: 30000, description: "longest a client may take to send a whole request (headers and body), in ms; 408 beyond" }),
      headers_timeout_ms: positiveInt({ default: 10000, description: "longest a client may take to send the request headers, in ms (at most body_timeout_ms)" }),
      keep_alive_timeout_ms: positiveInt({ default: 72000, description: "how long an idle keep-alive connection stays open, in ms (above a load balancer's idle timeout)" }),
    }),
    // "auto" = every core for the FFI engine, which measures 1 vs N threads per step size and
    // uses the faster (docs/benchmarks.md: a fixed 2 collapses under contention on 2 cores).
    threads: Type.Union([Type.Integer({ minimum: 1 }), Type.Literal("auto")], {
      default: "auto",
      expected: 'integer >= 1 or "auto"',
      description: 'CPU threads per model worker, or "auto"',
    }),
    engine: section("compute backend and llama.cpp library of the model workers", {
      backend: oneOf(["auto", "cpu", "cuda", "vulkan"] as const, {
        default: "auto",
        description: "auto (CUDA, else Vulkan, else the CPU; each worker logs what it got and why) | cpu | cuda | vulkan (a GPU that cannot load stops the start)",
      }),
      gpu_layers: Type.Optional(Type.Integer({ minimum: 0, description: "layers offloaded to the GPU (default: all)", examples: [20] })),
      main_gpu: Type.Optional(Type.Integer({ minimum: 0, description: "use only this GPU of the backend (default: every GPU, layers split)", examples: [0] })),
      library_dir: Type.Optional(
        filePath({ description: "folder of your own build of the bundled llama.cpp version (libllama + ggml backends, GGML_BACKEND_DL) used instead of the shipped binaries; checked at start", examples: ["/opt/llama.cpp/lib"] }),
      ),
    }),
    context_size: Type.Optional(positiveInt({ description: "context length per sequence when the model's config.json sets none (default: trained length, at most 4096)", examples: [4096] })),
    model_path: Type.Optional(filePath({ description: "model repository directory or a GGUF file ($MODEL_VERSION picks the version)", examples: ["/models"] })),
    data_dir: Type.Optional(filePath({ description: "state directory: ledger, cache, audit, tokens (default: ./data beside this file)", examples: ["/var/lib/moltbot"] })),
    repository: section("watching the model repository for new versions", {
      poll_interval: duration({ default: "0s", description: "how often to look for new version folders; a new one is validated (0s: never look)", examples: ["60s"] }),
      auto_activate: Type.Boolean({ default: false, description: "activate a new version found by polling once it passes validation, if newer than the active one" }),
    }),
    model_pool: Type.Array(ModelPoolEntrySchema, { default: [], description: "models served, in fallback order (empty: every repository model)" }),
    batching: BatchingSchema("dynamic batching defaults for every model"),
    queue: QueueSchema("request queue defaults for every model"),
    resource_limits: ResourceLimitsSchema("cgroup limits for each model worker (cgroup v2 or v1, beneath the server's own group); absent keys are unlimited"),
    log: section("logging", {
      level: oneOf(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] as const, { default: "INFO", description: "DEBUG | INFO | WARNING | ERROR | CRITICAL (AUDIT is always written)" }),
      format: oneOf(["text", "json"] as const, { default: "text", description: "text | json (JSON lines for log shippers)" }),
      file: Type.Optional(filePath({ description: "also append to this file (default: stdout only)", examples: ["/var/log/moltbot/moltbot.log"] })),
      max_size: bytes({ default: "100MiB", description: "rotate the file when it reaches this size" }),
      keep: Type.Integer({ minimum: 0, default: 5, description: "rotated files kept (file.1 .. file.N)" }),
      utc: Type.Boolean({ default: false, description: "timestamps in UTC instead of local time" }),
    }),
    metrics: section("Prometheus metrics", {
      enabled: Type.Boolean({ default: true, description: "serve metrics" }),
      path: Type.String({ pattern: "^/", default: "/metrics", expected: 'URL path starting with "/"', description: "URL path of the metrics" }),
      auth: Type.Boolean({ default: true, description: "when auth is on, metrics need a token with scope `metrics` (false: open like /healthz)" }),
    }),
    cache: section("response cache: memory LRU (L1) in front of a persistent store (L2); identical requests in flight run once", {
      // A cached answer to a sampled (temperature > 0, no seed) request would surprise clients:
      // by default only requests whose answer is reproducible are cached.
      mode: oneOf(["off", "deterministic", "all"] as const, { default: "deterministic", description: "off | deterministic (temperature 0 or an explicit seed) | all" }),
      charge_hits: Type.Boolean({ default: false, description: "charge a hit what the original answer cost (false: hits are free, the ledger records the saving)" }),
      max_entry_bytes: bytes({ default: "1MiB", description: "larger responses are not stored" }),
      l1: section("in-memory LRU", {
        max_entries: positiveInt({ default: 1000, description: "entries kept in memory" }),
        max_bytes: bytes({ default: "64MiB", description: "memory used by entries, least recently used evicted first" }),
        ttl: duration({ default: "1h", description: "lifetime of an entry" }),
      }),
      l2: section("persistent store under data_dir", {
        enabled: Type.Boolean({ default: true, description: "keep entries on disk across restarts (<data_dir>/response-cache.sqlite)" }),
        ttl: duration({ default: "7d", description: "lifetime of an entry" }),
        max_size: bytes({ default: "1GiB", description: "bytes of stored responses, least recently used evicted first" }),
      }),
    }),
    security: section("TLS and authentication; absent means plain HTTP without auth", {
      tls: Type.Optional(
        section(
          "HTTPS",
          {
            cert_file: filePath({ description: "PEM certificate chain", examples: ["/path/to/cert.pem"] }),
            key_file: filePath({ description: "PEM private key", examples: ["/path/to/key.pem"] }),
            min_version: oneOf(["TLS1_2", "TLS1_3"] as const, { default: "TLS1_2", description: "TLS1_2 | TLS1_3" }),
            ca_file: Type.Optional(filePath({ description: "PEM CA certificates that sign client certificates (with client_auth: require)", examples: ["/path/to/clients-ca.pem"] })),
            client_auth: Type.Optional(oneOf(["none", "require"] as const, { description: "none | require a client certificate signed by ca_file (default: require when ca_file is set)", examples: ["require"] })),
          },
          { optional: true },
        ),
      ),
      allow_insecure: Type.Boolean({ default: false, description: "allow listening beyond loopback without authentication" }),
      jwt: Type.Optional(
        section(
          "Bearer JWT auth; scopes `inference` and `admin`",
          {
            algorithms: Type.Array(oneOf(JWT_ALGORITHMS, { description: "JWT algorithm" }), {
              minItems: 1,
              default: ["HS256"],
              description: "accepted algorithms",
            }),
            secret: Type.Optional(Type.String({ minLength: 1, description: "HMAC secret (prefer secret_file)", examples: ["change-me"] })),
            secret_file: Type.Optional(filePath({ description: "file holding the HMAC secret", examples: ["/etc/moltbot/jwt.secret"] })),
            public_key_file: Type.Optional(filePath({ description: "PEM public key for RS/PS/ES/EdDSA", examples: ["/etc/moltbot/jwt.pub"] })),
            jwks_file: Type.Optional(filePath({ description: "JWKS file of public keys", examples: ["/etc/moltbot/jwks.json"] })),
            issuer: Type.Optional(Type.String({ minLength: 1, description: "required `iss` claim", examples: ["https://auth.example.com"] })),
            audience: Type.Optional(Type.String({ minLength: 1, description: "required `aud` claim", examples: ["moltbot"] })),
            clock_skew: duration({ default: "30s", description: "tolerance on exp/nbf" }),
          },
          { optional: true },
        ),
      ),
      api_keys: section("API keys for machines (`moltbot token create`), hashed in <data_dir>/tokens.sqlite", {
        enabled: Type.Boolean({ default: false, description: "accept `Authorization: Bearer mb_...` keys (turns auth on, also without jwt)" }),
      }),
    }),
    audit: section("audit trail of every request and admin action", {
      file: Type.Optional(filePath({ description: "audit log (default: <data_dir>/audit.log)", examples: ["/var/log/moltbot/audit.log"] })),
      include_content: Type.Boolean({ default: false, description: "record prompt and completion text too" }),
      fsync_interval: duration({ default: "100ms", description: "records are written and fsynced in batches this often: a crash loses at most this window" }),
      retention: Type.Optional(duration({ description: "delete whole daily segments older than this, behind a signed checkpoint (default: keep all)", examples: ["400d"] })),
    }),
    worker: section("model worker processes", {
      // Two implementations of the decode loop; benchmarks (docs/benchmarks.md) chose the default.
      engine: oneOf(["ffi", "node-llama-cpp"] as const, { default: "ffi", description: "ffi (libllama through koffi) | node-llama-cpp" }),
      restart_backoff_ms: section("delay before restarting a crashed worker, doubling each time", {
        initial: positiveInt({ default: 500, description: "first delay, in ms" }),
        max: positiveInt({ default: 30000, description: "longest delay, in ms" }),
      }),
      drain_timeout_ms: Type.Integer({ minimum: 0, default: 30000, description: "how long in-flight requests may finish at stop or switch, in ms" }),
      heartbeat_timeout_ms: Type.Integer({ minimum: 500, default: 10000, description: "a ready worker silent this long is killed and restarted, its requests failed, in ms" }),
    }),
  },
  { additionalProperties: false, description: "moltbot.yaml" },
);

export type MoltbotConfig = Static<typeof ConfigSchema>;
export type ModelPoolEntry = Static<typeof ModelPoolEntrySchema>;

/** Read a project annotation off a schema node (TypeBox keeps unknown options as-is). */
export function note<K extends keyof Notes | "xPath">(schema: TSchema, key: K): unknown {
  return (schema as Record<string, unknown>)[key];
}
