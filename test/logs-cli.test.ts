// `moltbot logs` as an operator runs it (real bin/moltbot processes) over a log written by the
// real Logger: JSON records, then text records after a format change, size rotations in the
// middle, a stack trace printed into the file. Expected output is computed from the records.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { appendFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createLogger, type RecordLevel } from "../src/observe/logger.js";
import { logFiles } from "../src/observe/log-reader.js";
import { tempDir } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");

const LEVEL_CYCLE: RecordLevel[] = ["INFO", "DEBUG", "WARNING", "ERROR", "AUDIT", "INFO", "CRITICAL"];
const COMPONENTS = ["api", "inference", "server"];
const COUNT = 40;
const STACK = "    at handler (/srv/app.js:10:5)";

interface Rec {
  i: number;
  time: number;
  level: RecordLevel;
  component: string;
  /** The record's lines as written (head and continuation lines). */
  text: string;
}

// Record times: whole seconds, 5 minutes apart and 2.5 minutes off the grid of "now", so
// `--last 50m` has a clear edge however long the CLI takes to start on a loaded machine.
const now = Math.floor(Date.now() / 1000) * 1000;
const STEP = 5 * 60_000;
const timeOf = (i: number) => now - (COUNT - i) * STEP - STEP / 2;

/** 20 JSON records, then 20 text records; rotation every ~800 bytes; record 25 has a stack trace. */
async function makeLog(): Promise<{ dir: string; file: string; config: string; recs: Rec[] }> {
  const dir = await tempDir("moltbot-logs-");
  const file = path.join(dir, "moltbot.log");
  const config = path.join(dir, "moltbot.yaml");
  writeFileSync(config, `log:\n  file: moltbot.log\n  utc: true\n`);
  let t = 0;
  const common = { level: "DEBUG" as const, utc: true, stdout: false, file, maxBytes: 800, keep: 20, clock: () => new Date(t) };
  let log = createLogger({ ...common, format: "json" });
  for (let i = 0; i < COUNT; i++) {
    if (i === 20) {
      log.close();
      log = createLogger({ ...common, format: "text" });
    }
    t = timeOf(i);
    const level = LEVEL_CYCLE[i % LEVEL_CYCLE.length]!;
    const method = level.toLowerCase() as "info" | "debug" | "warning" | "error" | "audit" | "critical";
    log.child(COMPONENTS[i % COMPONENTS.length]!)[method](`record ${i}`, { request_id: `req-${i}` });
    if (i === 25) appendFileSync(file, `Error: boom\n${STACK}\n`);
  }
  log.close();
  const files = logFiles(file);
  assert.ok(files.length >= 4, `rotated: ${files.join(", ")}`);
  // Split what was written back into records, to compare output byte for byte.
  const lines = files.flatMap((f) => readFileSync(f, "utf8").split("\n").slice(0, -1));
  const recs: Rec[] = [];
  for (const line of lines) {
    const m = /record (\d+)/.exec(line);
    if (m !== null && /^[[{]/.test(line)) {
      const i = Number(m[1]);
      recs.push({ i, time: timeOf(i), level: LEVEL_CYCLE[i % LEVEL_CYCLE.length]!, component: COMPONENTS[i % COMPONENTS.length]!, text: line });
    } else recs[recs.length - 1]!.text += `\n${line}`;
  }
  assert.deepEqual(
    recs.map((r) => r.i),
    Array.from({ length: COUNT }, (_, i) => i),
  );
  return { dir, file, config, recs };
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `moltbot logs ...`; the cases of a test run side by side (the CLI's start-up dominates). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, "logs", ...args], { encoding: "utf8", env: { ...process.env, MOLTBOT_CONFIG: "", ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : null;
      if (code === null) reject(err!);
      else resolve({ code, stdout, stderr });
    });
  });
}

const show = (recs: Rec[]) => recs.map((r) => r.text + "\n").join("");
const utcText = (t: number) => new Date(t).toISOString().slice(0, 19).replace("T", " ");

test("logs prints exactly the records each filter selects, across formats and rotations", async () => {
  const { config, recs } = await makeLog();
  const sev = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 } as Record<string, number>;
  const window = recs.filter((r) => r.i >= 5 && r.i <= 30);
  const plus2 = (t: number) => new Date(t + 2 * 3_600_000).toISOString().slice(0, 19) + "+02:00";
  // [flags, expected output, what it checks]
  const cases: Array<[string[], string, string]> = [
    [[], show(recs), "everything, oldest file first, continuation lines with their record"],
    [["--filter", "warning"], show(recs.filter((r) => (sev[r.level] ?? 0) >= 30)), "WARNING and above, no AUDIT"],
    [["--filter", "AUDIT"], show(recs.filter((r) => r.level === "AUDIT")), "AUDIT only"],
    [["--last", "50m"], show(recs.filter((r) => r.i > COUNT - 10)), "--last"],
    [["--last", "1d"], show(recs), "a window reaching before the oldest file"],
    // --since in the log's zone (log.utc: true), --until in ISO with Z; both inclusive.
    [["--since", utcText(timeOf(5)), "--until", new Date(timeOf(30)).toISOString()], show(window), "--since/--until"],
    [["--since", plus2(timeOf(5)), "--until", plus2(timeOf(30))], show(window), "the zone as an offset; --until to the second takes in that second"],
    [["--since", utcText(timeOf(5) + 1000), "--until", utcText(timeOf(30) - 1000)], show(window.slice(1, -1)), "edges exclusive by a second"],
    [["--since", utcText(timeOf(COUNT) + STEP)], "", "a window after the last record"],
    [["--grep", "req-7"], show([recs[7]!]), "--grep"],
    [["--grep", "at handler ("], show([recs[25]!]), "a continuation line matches its record"],
    [["--component", "inference", "--filter", "ERROR"], show(recs.filter((r) => r.component === "inference" && (r.level === "ERROR" || r.level === "CRITICAL"))), "--component with --filter"],
    [["--component", "api", "--component", "server", "--last", "50m"], show(recs.filter((r) => r.component !== "inference" && r.i > COUNT - 10)), "two components"],
  ];
  const [results, local, jsonRun] = await Promise.all([
    Promise.all(cases.map(([args]) => cli(["--config", config, ...args]))),
    // Without log.utc the same text is local time: TZ "Etc/GMT+2" is UTC-2, so local = UTC - 2 h.
    cli(["--file", path.join(path.dirname(config), "moltbot.log"), "--since", utcText(timeOf(5) - 2 * 3_600_000)], { TZ: "Etc/GMT+2" }),
    cli(["--config", config, "--json", "--since", utcText(timeOf(18)), "--until", utcText(timeOf(25))]),
  ]);
  cases.forEach(([args, expected, what], k) => {
    const r = results[k]!;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.equal(r.stdout, expected, `${what}: ${args.join(" ")}`);
  });
  assert.equal(local.stdout, show(recs.filter((r) => r.i >= 5)), "text timestamps in local time");

  const json = jsonRun.stdout
    .split("\n")
    .slice(0, -1)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    json.map((r) => [r.time, r.level, r.component]),
    recs.slice(18, 26).map((r) => [new Date(r.time).toISOString(), r.level, r.component]),
  );
  assert.equal(json[0]!.msg, "record 18", "a JSON record as written");
  assert.equal(json[0]!.request_id, "req-18");
  assert.equal(json[2]!.msg, "record 20 request_id=req-20", "a text record converted; its fields stay in msg");
  assert.equal(json[7]!.msg, `record 25 request_id=req-25\nError: boom\n${STACK}`, "continuation lines join msg");
});

test("bad flags fail with one line naming the flag", async () => {
  const { config } = await makeLog();
  const cases: Array<[string[], RegExp]> = [
    [["--last", "1hour"], /^moltbot: error: --last: expected a duration like 30m, 1h or 2d .*"1hour"/],
    [["--filter", "LOUD"], /^moltbot: error: --filter: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, AUDIT, got "LOUD"/],
    [["--since", "yesterday"], /^moltbot: error: --since: expected a time like .*"yesterday"/],
    [["--until", "2026-13-01 00:00:00"], /^moltbot: error: --until: expected a time like/],
    [["--follow", "--until", "1h"], /^moltbot: error: --until: cannot be combined with --follow/],
    [["--file", "/nonexistent/moltbot.log"], /^moltbot: error: \/nonexistent\/moltbot\.log: log file not found/],
  ];
  const [results, both, noFile] = await Promise.all([
    Promise.all(cases.map(([args]) => cli(["--config", config, ...args]))),
    cli(["--config", config, "--last", "1h", "--since", "2h"]),
    cli([]),
  ]);
  cases.forEach(([args, re], k) => {
    const r = results[k]!;
    assert.notEqual(r.code, 0, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, re);
  });
  assert.notEqual(both.code, 0);
  assert.match(both.stderr, /last.*since|since.*last/);
  assert.notEqual(noFile.code, 0);
  assert.match(noFile.stderr, /no log file: set log\.file/);
});

test("--follow prints new records across a size rotation and a logrotate rename + reopen", async () => {
  const dir = await tempDir("moltbot-follow-");
  const file = path.join(dir, "moltbot.log");
  const log = createLogger({ level: "INFO", format: "text", stdout: false, file, maxBytes: 300, keep: 5 });
  log.info("before follow");
  const child = spawn(process.execPath, [BIN, "logs", "--file", file, "--follow", "--last", "1h", "--filter", "INFO"], {
    stdio: ["ignore", "pipe", "pipe"],
    cwd: dir,
    env: { ...process.env, MOLTBOT_CONFIG: "" },
  });
  let out = "";
  let err = "";
  const waiters: Array<() => void> = [];
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    out += d;
    waiters.forEach((w) => w());
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  /** Resolves once the output holds `n` lines (or fails when the follower dies). */
  const lines = (n: number) =>
    new Promise<string[]>((resolve, reject) => {
      const check = () => {
        const got = out.split("\n").slice(0, -1);
        if (got.length >= n) resolve(got.map((l) => l.replace(/^\[[^\]]*\] \[INFO\] \[moltbot\] /, "")));
      };
      waiters.push(check);
      void exited.then(() => reject(new Error(`follower exited: ${err}`)));
      // A bound, not a pause: fails the test with what came instead of hanging it.
      setTimeout(() => reject(new Error(`waited 30 s for ${n} lines, got:\n${out}`)), 30_000).unref();
      check();
    });
  try {
    assert.deepEqual(await lines(1), ["before follow"]);
    log.debug("filtered out");
    for (let i = 0; i < 12; i++) log.info(`size ${i}`); // ~45 bytes each: several rotations
    assert.deepEqual((await lines(13)).slice(1), Array.from({ length: 12 }, (_, i) => `size ${i}`));
    // logrotate's create mode: rename, the server keeps writing to the old file until USR1.
    renameSync(file, `${file}.rotated`);
    log.info("into the renamed file");
    writeFileSync(file, "");
    log.info("still into the renamed file");
    log.reopen();
    log.info("after reopen");
    assert.deepEqual((await lines(16)).slice(13), ["into the renamed file", "still into the renamed file", "after reopen"]);
    log.info("last");
    assert.deepEqual((await lines(17)).slice(16), ["last"]);
  } finally {
    log.close();
    child.kill("SIGINT");
    await exited;
  }
  assert.equal(out.split("\n").length - 1, 17, `nothing doubled:\n${out}`);
  assert.equal(err, "");
});
