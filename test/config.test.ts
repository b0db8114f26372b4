import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config/load.js";
import { ConfigSchema } from "../src/config/schema.js";
import { configTemplate } from "../src/config/template.js";
import { parseBytes, parseDuration, parsePercent, parseRate } from "../src/config/units.js";
import { MoltbotError } from "../src/errors.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "moltbot-config-"));

function withFile(yaml: string): { dir: string; file: string } {
  const dir = tmp();
  const file = join(dir, "moltbot.yaml");
  writeFileSync(file, yaml);
  return { dir, file };
}

/** The one-line config_invalid message that loading `yaml` throws. */
function loadError(yaml: string, env: NodeJS.ProcessEnv = {}): string {
  const { file } = withFile(yaml);
  try {
    loadConfig({ file, env });
  } catch (err) {
    assert.ok(err instanceof MoltbotError, `not a MoltbotError: ${String(err)}`);
    assert.equal(err.code, "config_invalid");
    assert.ok(!err.message.includes("\n"), `multi-line message: ${err.message}`);
    return err.message.replace(`${file}: `, "FILE: ");
  }
  assert.fail(`loaded without error:\n${yaml}`);
}

test("no file: every default, data dir in cwd", () => {
  const dir = tmp();
  const { config, file, dataDir, notEnforced } = loadConfig({ env: {}, cwd: dir });
  assert.equal(file, undefined);
  assert.equal(dataDir, join(dir, "data"));
  assert.deepEqual(notEnforced, []);
  assert.deepEqual(config.server, { host: "127.0.0.1", port: 8080, body_limit: "1MiB", body_timeout_ms: 30000, headers_timeout_ms: 10000, keep_alive_timeout_ms: 72000 });
  assert.equal(config.threads, "auto");
  assert.deepEqual(config.model_pool, []);
  assert.deepEqual(config.log, { level: "INFO", format: "text", max_size: "100MiB", keep: 5, utc: false });
  assert.deepEqual(config.metrics, { enabled: true, path: "/metrics", auth: true });
  assert.equal(config.cache.l2.ttl, "7d");
  assert.deepEqual(config.resource_limits, {});
  assert.deepEqual(config.worker, { engine: "ffi", restart_backoff_ms: { initial: 500, max: 30000 }, drain_timeout_ms: 30000, heartbeat_timeout_ms: 10000 });
});

test("./moltbot.yaml in cwd is picked up; data dir sits beside it", () => {
  const { dir, file } = withFile("server: { port: 9000 }\n");
  const loaded = loadConfig({ env: {}, cwd: dir });
  assert.equal(loaded.file, file);
  assert.equal(loaded.config.server.port, 9000);
  assert.equal(loaded.dataDir, join(dir, "data"));
});

test("precedence: defaults < file < env < overrides", () => {
  const { file, dir } = withFile(
    ["server:", "  host: 0.0.0.0", "  port: 9000", "threads: 2", "log: { level: WARNING, format: json }", "model_path: models", "data_dir: state"].join("\n"),
  );
  const fromFile = loadConfig({ file, env: {} }).config;
  assert.equal(fromFile.server.host, "0.0.0.0");
  assert.equal(fromFile.server.port, 9000);
  assert.equal(fromFile.server.body_limit, "1MiB", "sibling default kept");
  assert.equal(fromFile.model_path, join(dir, "models"), "relative paths in the file are relative to the file");

  const env = { MOLTBOT_PORT: "9100", MOLTBOT_THREADS: "auto", MOLTBOT_LOG_LEVEL: "debug", MOLTBOT_DATA_DIR: "/srv/moltbot", MOLTBOT_MODEL_PATH: "/m" };
  const fromEnv = loadConfig({ file, env });
  assert.equal(fromEnv.config.server.port, 9100);
  assert.equal(fromEnv.config.server.host, "0.0.0.0");
  assert.equal(fromEnv.config.threads, "auto");
  assert.equal(fromEnv.config.log.level, "DEBUG");
  assert.equal(fromEnv.config.log.format, "json");
  assert.equal(fromEnv.config.model_path, "/m");
  assert.equal(fromEnv.dataDir, "/srv/moltbot");

  const final = loadConfig({ file, env, overrides: { server: { port: 9200, host: undefined }, threads: 8 } });
  assert.equal(final.config.server.port, 9200);
  assert.equal(final.config.server.host, "0.0.0.0", "an undefined override leaves the key alone");
  assert.equal(final.config.threads, 8);
});

test("data_dir from the file resolves beside it; MOLTBOT_CONFIG names the file", () => {
  const { file, dir } = withFile("data_dir: state\n");
  const loaded = loadConfig({ env: { MOLTBOT_CONFIG: file }, cwd: tmp() });
  assert.equal(loaded.file, file);
  assert.equal(loaded.dataDir, join(dir, "state"));
});

test("an explicitly named file that does not exist is an error", () => {
  const missing = join(tmp(), "nope.yaml");
  assert.throws(() => loadConfig({ file: missing, env: {} }), { code: "config_invalid", message: `${missing}: config file not found` });
  assert.throws(() => loadConfig({ env: { MOLTBOT_CONFIG: missing } }), { code: "config_invalid" });
});

test("bad values: one line naming the key path and what was expected", () => {
  const cases: [string, string][] = [
    ["server: { port: abc }", 'FILE: server.port: expected integer 0..65535, got "abc"'],
    ["server: { port: 70000 }", "FILE: server.port: expected integer 0..65535, got 70000"],
    ["model_pool:\n  - name: chat\n    budget: { cost_limit: abc }", 'FILE: model_pool[0].budget.cost_limit: expected number >= 0, got "abc"'],
    ["model_pool:\n  - name: chat\n    budget: { max_tokens: 0 }", "FILE: model_pool[0].budget.max_tokens: expected integer >= 1, got 0"],
    ["model_pool:\n  - name: chat\n    strategy: { priority: urgent }", 'FILE: model_pool[0].strategy.priority: expected one of "high", "normal", "low", got "urgent"'],
    ["model_pool:\n  - name: chat\n    strategy: { fallback: maybe }", 'FILE: model_pool[0].strategy.fallback: no pool entry named "maybe" (use true, false or an entry\'s name)'],
    ["model_pool:\n  - name: chat\n    strategy: { fallback: 3 }", "FILE: model_pool[0].strategy.fallback: expected true, false or the name of another pool entry, got 3"],
    // Names go into response headers (x-moltbot-fallback): CR LF there would be a header injection.
    ['model_pool:\n  - name: "chat\\r\\nx-evil: 1"', 'FILE: model_pool[0].name: expected a name of letters, digits and . _ : / - (starting with a letter or digit, at most 128), got "chat\\r\\nx-evil: 1"'],
    ["model_pool:\n  - name: chat\n    model: \"llama 3\"", 'FILE: model_pool[0].model: expected a name of letters, digits and . _ : / - (starting with a letter or digit, at most 128), got "llama 3"'],
    ["model_pool:\n  - type: llm", "FILE: model_pool[0].name: required key missing (a name of letters, digits and . _ : / - (starting with a letter or digit, at most 128))"],
    ["model_pool: chat", 'FILE: model_pool: expected a list, got "chat"'],
    ["server: 8080", "FILE: server: expected a mapping of keys, got 8080"],
    ["threads: 0", 'FILE: threads: expected integer >= 1 or "auto", got 0'],
    ["log: { level: verbose }", 'FILE: log.level: expected one of "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", got "verbose"'],
    ["resource_limits:\n  cpu: { quota: 150 % }", 'FILE: resource_limits.cpu.quota: expected percentage like "150%", got "150 %"'],
    ["resource_limits:\n  cpu: { period: 100 }", 'FILE: resource_limits.cpu.period: expected duration like "100ms", "30s", "1h" or "7d", got 100'],
    ["resource_limits:\n  memory: { limit: 4XB }", 'FILE: resource_limits.memory.limit: expected byte size like "4GiB", "512MB" or a whole number of bytes, got "4XB"'],
    ["resource_limits:\n  io: { read_bps: 10MB }", 'FILE: resource_limits.io.read_bps: expected rate like "10MB/s", got "10MB"'],
    ["metrics: { path: metrics }", 'FILE: metrics.path: expected URL path starting with "/", got "metrics"'],
    ["security:\n  tls: { cert_file: c.pem }", "FILE: security.tls.key_file: required key missing (non-empty string)"],
    ["security:\n  tls: { cert_file: c.pem, key_file: k.pem, client_auth: require }", "FILE: security.tls.client_auth: require needs ca_file (the CA that signs client certificates)"],
    ["security:\n  tls: { cert_file: c.pem, key_file: k.pem, ca_file: ca.pem, client_auth: none }", "FILE: security.tls.ca_file: only used to check client certificates, which client_auth: none turns off; remove one of them"],
    ["security:\n  tls: { cert_file: c.pem, key_file: k.pem, min_version: TLS1_1 }", 'FILE: security.tls.min_version: expected one of "TLS1_2", "TLS1_3", got "TLS1_1"'],
    ["security:\n  jwt: { algorithms: [HS256], public_key_file: k.pem }", "FILE: security.jwt.public_key_file: does not fit algorithms HS256 (HS* need secret or secret_file, others a public key)"],
    ["security:\n  jwt: { secret: a, secret_file: b }", "FILE: security.jwt: set exactly one of secret, secret_file, public_key_file, jwks_file (got secret, secret_file)"],
    ["model_pool:\n  - name: a\n  - name: a", 'FILE: model_pool[1].name: duplicate name "a" (also model_pool[0])'],
    ["server: { headers_timeout_ms: 5000, body_timeout_ms: 1000 }", "FILE: server.headers_timeout_ms: 5000 exceeds server.body_timeout_ms 1000 (the headers are part of the request)"],
  ];
  for (const [yaml, message] of cases) assert.equal(loadError(yaml), message, yaml);
});

test("several problems are joined with '; '", () => {
  assert.equal(
    loadError("server: { port: -1, host: '' }\nthreads: many"),
    'FILE: server.host: expected non-empty string, got ""; server.port: expected integer 0..65535, got -1; threads: expected integer >= 1 or "auto", got "many"',
  );
});

test("unknown keys are rejected with their path, and a near miss is suggested", () => {
  assert.equal(loadError("sever: { port: 1 }"), 'FILE: sever: unknown key, did you mean "server"?');
  assert.equal(
    loadError("model_pool:\n  - name: a\n    budget: { max_token: 5 }"),
    'FILE: model_pool[0].budget.max_token: unknown key, did you mean "max_tokens"?',
  );
  assert.match(loadError("log: { colour: true }"), /^FILE: log\.colour: unknown key \(known: level, format, file, max_size, keep, utc\)$/);
});

test("YAML syntax errors name the file, line and column", () => {
  const { file } = withFile("server:\n  port: 8080\n  host: [oops\nthreads: 2\n");
  assert.throws(() => loadConfig({ file, env: {} }), (err: unknown) => {
    assert.ok(err instanceof MoltbotError);
    assert.equal(err.code, "config_invalid");
    assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: invalid YAML: `));
    assert.ok(!err.message.includes("\n"));
    return true;
  });
  const { file: dup } = withFile("threads: 1\nthreads: 2\n");
  assert.throws(() => loadConfig({ file: dup, env: {} }), { message: new RegExp(`^${dup.replace(/[.]/g, "\\.")}:2:1: invalid YAML: .*unique`) });
  assert.equal(loadError("- just\n- a list\n"), 'FILE: expected a mapping of keys at the top level, got ["just","a list"]');
});

test("an empty file and empty sections mean the defaults", () => {
  const { file } = withFile("# nothing yet\nserver:\nsecurity:\n");
  assert.deepEqual(loadConfig({ file, env: {} }).config, loadConfig({ env: {}, cwd: tmp() }).config);
});

test("environment values are coerced and checked, naming the variable", () => {
  assert.throws(() => loadConfig({ env: { MOLTBOT_PORT: "abc" }, cwd: tmp() }), {
    code: "config_invalid",
    message: 'MOLTBOT_PORT: expected integer 0..65535, got "abc"',
  });
  assert.throws(() => loadConfig({ env: { MOLTBOT_THREADS: "1.5", MOLTBOT_LOG_FORMAT: "xml" }, cwd: tmp() }), {
    message: 'MOLTBOT_THREADS: expected integer >= 1 or "auto", got "1.5"; MOLTBOT_LOG_FORMAT: expected one of "text", "json", got "xml"',
  });
  // An empty variable (as systemd's Environment=MOLTBOT_PORT= gives) is unset.
  assert.equal(loadConfig({ env: { MOLTBOT_PORT: "" }, cwd: tmp() }).config.server.port, 8080);
});

test("bad overrides name their source", () => {
  assert.throws(() => loadConfig({ env: {}, cwd: tmp(), overrides: { server: { port: 1e6 } } }), {
    message: "overrides: server.port: expected integer 0..65535, got 1000000",
  });
});

test("notEnforced lists set, non-default keys of unbuilt features", () => {
  const { file } = withFile(
    [
      "model_pool:",
      "  - name: chat",
      "    budget: { max_tokens: 1000 }",
      "    strategy: { priority: high }",
      "  - name: spare",
      "    strategy: { priority: normal, fallback: false }",
      "cache: { mode: all }",
      "resource_limits:",
      "  memory: { limit: 4GiB }",
    ].join("\n"),
  );
  // Budgets, priorities, the cache and resource limits are all enforced now: nothing is listed.
  assert.deepEqual(loadConfig({ file, env: {} }).notEnforced, []);
});

test("the template loads back to exactly the defaults and shows every key", () => {
  const text = configTemplate();
  const { file, dir } = withFile(text);
  const fromTemplate = loadConfig({ file, env: {} });
  assert.deepEqual(fromTemplate.config, loadConfig({ env: {}, cwd: dir }).config);
  assert.deepEqual(fromTemplate.notEnforced, []);

  for (const key of Object.keys(ConfigSchema.properties)) {
    assert.match(text, new RegExp(`^(# )?${key}:`, "m"), `top-level key ${key} missing from the template`);
  }
  // Every key at every depth appears, commented or not.
  const keys = new Set<string>();
  const walk = (s: unknown): void => {
    const node = s as { properties?: Record<string, unknown>; items?: unknown };
    for (const [k, v] of Object.entries(node.properties ?? {})) {
      keys.add(k);
      walk(v);
    }
    if (node.items !== undefined) walk(node.items);
  };
  walk(ConfigSchema);
  for (const key of keys) assert.match(text, new RegExp(`[\\s#-] ?${key}:`), `key ${key} missing from the template`);
});

test("the template with its optional keys uncommented is a valid config", () => {
  // jwt lists its four alternative key sources; leave that block commented.
  let inJwt = false;
  const body = configTemplate()
    .split("\n")
    .filter((l) => !/^# [A-Z]/.test(l) && !/^# (MOLTBOT|MODEL)/.test(l) && !l.startsWith("# moltbot.yaml"))
    .flatMap((l) => {
      if (/#\s+jwt:/.test(l)) inJwt = true;
      else if (/^\S/.test(l)) inJwt = false;
      return inJwt ? [] : [l.replace(/^(\s*)# /, "$1")];
    });
  const dir = tmp();
  mkdirSync(join(dir, "sub"));
  const file = join(dir, "sub", "full.yaml");
  writeFileSync(file, body.join("\n"));
  const { config } = loadConfig({ file, env: {} });
  assert.equal(config.model_pool[0]?.name, "text-generation");
  assert.equal(config.resource_limits.memory?.limit, "4GiB");
  assert.equal(config.security.tls?.min_version, "TLS1_2");
});

test("units parse to typed values", () => {
  assert.equal(parseBytes("4GiB"), 4294967296);
  assert.equal(parseBytes("512MB"), 512_000_000);
  assert.equal(parseBytes("1MiB"), 1048576);
  assert.equal(parseBytes("1.5KiB"), 1536);
  assert.equal(parseBytes("1024"), 1024);
  assert.equal(parseBytes(2048), 2048);
  assert.equal(parseDuration("100ms"), 100);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("7d"), 604_800_000);
  assert.equal(parsePercent("150%"), 1.5);
  assert.equal(parseRate("10MB/s"), 10_000_000);
  assert.equal(parseRate("1MiB/s"), 1048576);
  for (const [parse, bad] of [
    [parseBytes, "4 GiB"],
    [parseBytes, "-1"],
    [parseBytes, "4G"],
    [parseDuration, "30"],
    [parseDuration, "1w"],
    [parsePercent, "150 %"],
    [parsePercent, "1.5"],
    [parseRate, "10MB"],
  ] as [(v: string) => number, string][]) {
    assert.throws(() => parse(bad), { code: "config_invalid" }, bad);
  }
  assert.throws(() => parseBytes(-1), { message: 'expected byte size like "4GiB", got -1' });
});
