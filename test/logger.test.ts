import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, loggerOptions, type LoggerOptions } from "../src/observe/logger.js";
import { loadConfig } from "../src/config/load.js";

// 2023-11-15 14:30:22.123 UTC
const AT = new Date(Date.UTC(2023, 10, 15, 14, 30, 22, 123));
const clock = (): Date => AT;

/** A logger writing to a fresh file only; returns the file's lines after close(). */
function capture(opts: Partial<LoggerOptions>, use: (log: ReturnType<typeof createLogger>) => void): string[] {
  const file = join(mkdtempSync(join(tmpdir(), "moltbot-log-")), "moltbot.log");
  const log = createLogger({ level: "INFO", format: "text", utc: true, stdout: false, clock, file, ...opts });
  use(log);
  log.close();
  const text = readFileSync(file, "utf8");
  assert.ok(text === "" || text.endsWith("\n"));
  return text === "" ? [] : text.slice(0, -1).split("\n");
}

test("text format is exactly the seed's line", () => {
  const lines = capture({}, (log) => {
    log.child("model_loader").info("Model v2.0 loaded successfully");
    log.child("inference").warning("Token limit exceeded (1024/1000)");
    log.child("api").audit("User 'admin' accessed /infer with method POST");
  });
  assert.deepEqual(lines, [
    "[2023-11-15 14:30:22] [INFO] [model_loader] Model v2.0 loaded successfully",
    "[2023-11-15 14:30:22] [WARNING] [inference] Token limit exceeded (1024/1000)",
    "[2023-11-15 14:30:22] [AUDIT] [api] User 'admin' accessed /infer with method POST",
  ]);
});

test("text timestamps are local time unless utc", () => {
  const [line] = capture({ utc: false }, (log) => log.info("x"));
  const p = (n: number): string => String(n).padStart(2, "0");
  const local = `${AT.getFullYear()}-${p(AT.getMonth() + 1)}-${p(AT.getDate())} ${p(AT.getHours())}:${p(AT.getMinutes())}:${p(AT.getSeconds())}`;
  assert.equal(line, `[${local}] [INFO] [moltbot] x`);
});

test("fields follow the message as key=value; newlines cannot break the line", () => {
  const lines = capture({}, (log) => {
    log.child("api").info("request done", { status: 200, path: "/v1/chat", user: "a b", err: new Error("boom") });
    log.info("line one\nline two\r\n\u001b[31mred");
  });
  assert.deepEqual(lines, [
    '[2023-11-15 14:30:22] [INFO] [api] request done status=200 path=/v1/chat user="a b" err="Error: boom"',
    "[2023-11-15 14:30:22] [INFO] [moltbot] line one\\nline two\\r\\n\\u001b[31mred",
  ]);
});

test("json format gives one JSON object per line", () => {
  const lines = capture({ format: "json" }, (log) => {
    log.child("model_loader").info("Model v2.0\nloaded", { version: "v2.0", ms: 12, msg: "shadowed" });
    log.child("api").audit("User 'ops' reloaded", { user: "ops" });
  });
  assert.equal(lines.length, 2);
  assert.deepEqual(JSON.parse(lines[0]!), {
    time: "2023-11-15T14:30:22.123Z",
    level: "INFO",
    component: "model_loader",
    msg: "Model v2.0\nloaded",
    version: "v2.0",
    ms: 12,
    field_msg: "shadowed",
  });
  assert.ok(lines[0]!.startsWith('{"time":"2023-11-15T14:30:22.123Z","level":"INFO","component":"model_loader","msg":'));
  assert.equal(JSON.parse(lines[1]!).level, "AUDIT");
});

test("levels below the threshold are dropped without formatting; AUDIT is always written", () => {
  let formatted = 0;
  const costly = { toJSON: () => (formatted++, "x") };
  const lines = capture({ level: "ERROR", format: "json" }, (log) => {
    assert.equal(log.isLevelEnabled("WARNING"), false);
    assert.equal(log.isLevelEnabled("ERROR"), true);
    assert.equal(log.isLevelEnabled("AUDIT"), true);
    log.debug("d", { costly });
    log.info("i", { costly });
    log.warning("w", { costly });
    log.error("e");
    log.critical("c");
    log.audit("a");
  });
  assert.equal(formatted, 0, "a filtered record must not be formatted");
  assert.deepEqual(
    lines.map((l) => JSON.parse(l).level),
    ["ERROR", "CRITICAL", "AUDIT"],
  );
  const debug = capture({ level: "DEBUG" }, (log) => log.debug("shown"));
  assert.equal(debug.length, 1);
  const critical = capture({ level: "CRITICAL" }, (log) => {
    log.error("hidden");
    log.audit("kept");
  });
  assert.deepEqual(critical, ["[2023-11-15 14:30:22] [AUDIT] [moltbot] kept"]);
});

test("file output creates parent directories and appends", () => {
  const file = join(mkdtempSync(join(tmpdir(), "moltbot-log-")), "a", "b", "moltbot.log");
  for (const msg of ["first", "second"]) {
    const log = createLogger({ level: "INFO", format: "text", utc: true, stdout: false, clock, file });
    log.info(msg);
    log.close();
    log.close(); // idempotent
  }
  assert.equal(readFileSync(file, "utf8"), "[2023-11-15 14:30:22] [INFO] [moltbot] first\n[2023-11-15 14:30:22] [INFO] [moltbot] second\n");
});

test("the file rotates at maxBytes, keeping `keep` old files", () => {
  const file = join(mkdtempSync(join(tmpdir(), "moltbot-log-")), "moltbot.log");
  const line = "[2023-11-15 14:30:22] [INFO] [moltbot] 0\n".length;
  const log = createLogger({ level: "INFO", format: "text", utc: true, stdout: false, clock, file, maxBytes: line * 2, keep: 2 });
  for (let i = 0; i < 7; i++) log.info(String(i));
  log.close();
  const read = (f: string): string => readFileSync(f, "utf8").replace(/\[[^\n]*\] /g, "");
  assert.equal(read(file), "6\n");
  assert.equal(read(`${file}.1`), "4\n5\n");
  assert.equal(read(`${file}.2`), "2\n3\n");
  assert.equal(existsSync(`${file}.3`), false);
});

test("loggerOptions maps the log section of a config", () => {
  const { config } = loadConfig({ env: { MOLTBOT_LOG_LEVEL: "warning" }, cwd: mkdtempSync(join(tmpdir(), "moltbot-log-")) });
  assert.deepEqual(loggerOptions(config.log), { level: "WARNING", format: "text", utc: false, file: undefined, maxBytes: 104857600, keep: 5 });
});

test("reopen() starts a new file at the path after a rename; size rotation survives a file moved away", () => {
  const file = join(mkdtempSync(join(tmpdir(), "moltbot-log-")), "moltbot.log");
  const line = "[2023-11-15 14:30:22] [INFO] [moltbot] 0\n".length;
  const log = createLogger({ level: "INFO", format: "text", utc: true, stdout: false, clock, file, maxBytes: line * 2, keep: 2 });
  log.info("0");
  renameSync(file, `${file}.moved`);
  log.info("1"); // still the moved file: SIGUSR1 has not come yet
  log.info("2"); // past maxBytes: the path is gone, a new file starts there instead of a throw
  renameSync(file, `${file}.moved2`);
  log.reopen();
  log.info("3");
  log.close();
  const read = (f: string): string => readFileSync(f, "utf8").replace(/\[[^\n]*\] /g, "");
  assert.equal(read(`${file}.moved`), "0\n1\n");
  assert.equal(read(`${file}.moved2`), "2\n");
  assert.equal(read(file), "3\n");
});
