// `moltbot audit` as an operator runs it, and crashes: erasure (search no longer finds the
// user, verify still passes), a budget reset recorded by the CLI into the same chain, a torn
// last line, and a writer process killed mid-stream.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AuditLog } from "../src/audit/audit-log.js";
import { AuditKeys } from "../src/audit/keys.js";
import { readRecords, verifyChain } from "../src/audit/segments.js";
import { until } from "./helpers/fixtures.js";
import { ROOT, cli, dirs, lines, options } from "./helpers/audit.js";

test("erase: the user's records stay and verify, but search no longer finds them", async () => {
  const d = await dirs();
  const audit = await AuditLog.open(options(d));
  for (let i = 0; i < 4; i++) audit.record({ action: "request", user: i % 2 ? "alice" : "bob", method: "POST", route: "/infer", status: 200 });
  await audit.close();
  let s = cli(["audit", "search", "--user", "alice", "--config", d.config, "--json"]);
  assert.equal(s.code, 0, s.stderr);
  assert.equal(s.stdout.trim().split("\n").length, 2);
  assert.equal(JSON.parse(s.stdout.split("\n")[0]!).user, "alice");

  const e = cli(["audit", "erase", "--user", "alice", "--config", d.config]);
  assert.equal(e.code, 0, e.stderr);
  s = cli(["audit", "search", "--user", "alice", "--config", d.config]);
  assert.equal(s.code, 0);
  assert.equal(s.stdout, "");
  assert.match(s.stderr, /no key for that user/);
  s = cli(["audit", "search", "--user", "bob", "--config", d.config]);
  assert.equal(s.stdout.trim().split("\n").length, 2);
  const t = cli(["audit", "tail", "-n", "1", "--config", d.config]);
  assert.match(t.stdout, /#5 audit\.erase 'auditor' target=subject:[0-9a-f]{32} outcome=ok/);
  assert.equal(cli(["audit", "verify", "--config", d.config]).code, 0);
  // The erased user's records are still there, under a pseudonym nothing resolves any more.
  const keys = new AuditKeys(d.keysFile);
  const names = keys.names();
  keys.close();
  const subjects = [...readRecords(d.file)].filter((r) => r.record.action === "request").map((r) => names.get(String(r.record.subject)) ?? "unknown");
  assert.deepEqual(subjects, ["bob", "unknown", "bob", "unknown"]);
});

test("a torn last line (a write cut by a crash) is moved aside at the next open; a killed writer leaves a sound chain", async () => {
  const d = await dirs();
  const audit = await AuditLog.open(options(d));
  for (let i = 0; i < 5; i++) audit.record({ action: "request", user: "carol", status: 200 });
  await audit.close();
  appendFileSync(d.file, '{"seq":6,"time":"2026-11-30T07:00:00.000Z","prev":"ab');
  const v = cli(["audit", "verify", "--config", d.config]);
  assert.equal(v.code, 1);
  assert.match(v.stderr, /line 6: torn last line/);
  const again = await AuditLog.open(options(d));
  again.record({ action: "request", user: "carol", status: 201 });
  await again.close();
  assert.ok(existsSync(`${d.file}.torn`));
  assert.match(readFileSync(d.logFile, "utf8"), /ended in a torn record/);
  assert.deepEqual([...readRecords(d.file)].map((r) => r.seq), [1, 2, 3, 4, 5, 6]);
  assert.equal(verifyChain(d.file, undefined).ok, true);

  // A real writer process killed mid-stream.
  const script = path.join(d.dir, "writer.mjs");
  writeFileSync(
    script,
    `import { AuditLog } from ${JSON.stringify(path.join(ROOT, "dist", "src", "audit", "audit-log.js"))};
import { createLogger } from ${JSON.stringify(path.join(ROOT, "dist", "src", "observe", "logger.js"))};
const a = await AuditLog.open({ file: ${JSON.stringify(d.file)}, keysFile: ${JSON.stringify(d.keysFile)}, fsyncIntervalMs: 1, includeContent: false, retentionMs: undefined, log: createLogger({ level: "ERROR", format: "text", stdout: false }) });
for (;;) { for (let i = 0; i < 50; i++) a.record({ action: "request", user: "w", status: 200, detail: "x".repeat(2000) }); await new Promise((r) => setTimeout(r, 1)); }
`,
  );
  const child = spawn(process.execPath, [script], { stdio: "ignore" });
  await until("the writer appended", () => lines(d.file).length > 200);
  child.kill("SIGKILL");
  await new Promise((r) => child.on("exit", r));
  const after = await AuditLog.open(options(d));
  after.record({ action: "request", user: "carol", status: 200 });
  await after.close();
  const report = verifyChain(d.file, undefined);
  assert.equal(report.ok, true, JSON.stringify(report.problem));
  assert.ok(report.records > 200);
});

test("budget reset by the CLI is recorded in the same chain, with its AUDIT line in log.file", async () => {
  const d = await dirs();
  writeFileSync(d.config, `data_dir: ${d.data}\nlog: { file: ${d.logFile} }\nmodel_pool:\n  - name: text-generation\n    budget: { cost_limit: 5 }\n`);
  const audit = await AuditLog.open(options(d));
  audit.record({ action: "request", user: "erin", status: 200 });
  await audit.close();
  const r = cli(["budget", "reset", "text-generation", "--config", d.config]);
  assert.equal(r.code, 0, r.stderr);
  const recs = [...readRecords(d.file)].map((x) => x.record);
  assert.deepEqual(recs.map((x) => [x.seq, x.action, x.target ?? null]), [[1, "request", null], [2, "budget.reset", "text-generation"]]);
  assert.equal(verifyChain(d.file, undefined).ok, true);
  assert.match(readFileSync(d.logFile, "utf8"), /\[AUDIT\] \[budget\] Budget of text-generation reset by user 'auditor' outcome=ok/);
});
