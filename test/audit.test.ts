// The audit log (PRODUCT.md 4.3): the hash chain under concurrent writers (this process and
// real `moltbot audit` processes), tampering found at the exact record, restarts, fail-closed
// opens, retention checkpoints, and the real server's records of requests and admin actions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import { AuditLog } from "../src/audit/audit-log.js";
import { AuditKeys } from "../src/audit/keys.js";
import { chainFiles, checkpointPath, readRecords, segmentFiles, verifyChain } from "../src/audit/segments.js";
import { loadConfig } from "../src/config/load.js";
import { ConfigReloader } from "../src/server/reload.js";
import { startServer, tempDir, tinyModelPath, until } from "./helpers/fixtures.js";
import { cli, cliAsync, dirs, lines, options } from "./helpers/audit.js";

test("10,000 concurrent records and three CLI processes appending at once: the chain verifies", async () => {
  const d = await dirs();
  const audit = await AuditLog.open(options(d));
  const erasing = [1, 2, 3].map((i) => cliAsync(["audit", "erase", "--user", `ghost${i}`, "--config", d.config]));
  await Promise.all(
    Array.from({ length: 100 }, async (_, task) => {
      for (let i = 0; i < 100; i++) {
        audit.record({ action: "request", user: `user${task % 7}`, method: "POST", route: "/v1/completions", status: 200, request_id: `${task}-${i}` });
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
    }),
  );
  assert.deepEqual(await Promise.all(erasing), [0, 0, 0]);
  await audit.close();
  const report = verifyChain(d.file, undefined);
  assert.equal(report.ok, true, JSON.stringify(report.problem));
  assert.equal(report.records, 10_003);
  const all = [...readRecords(d.file)];
  assert.equal(all.filter((r) => r.record.action === "audit.erase").length, 3);
  assert.equal(new Set(all.map((r) => r.record.request_id).filter(Boolean)).size, 10_000);
  // No user name in the audit file: only pseudonyms.
  assert.ok(!readFileSync(d.file, "utf8").includes("user3"));
  const v = cli(["audit", "verify", "--config", d.config]);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /OK: 10003 record\(s\), seq 1\.\.10003/);
});

test("an edited, deleted or reordered line is named by line and seq, and verify exits non-zero", async () => {
  const d = await dirs();
  const audit = await AuditLog.open(options(d));
  for (let i = 0; i < 10; i++) audit.record({ action: "request", user: "alice", method: "GET", route: `/r${i}`, status: 200 });
  await audit.close();
  const original = lines(d.file);
  const check = (mutated: string[]) => {
    writeFileSync(d.file, mutated.join("\n") + "\n");
    return verifyChain(d.file, undefined);
  };
  const edited = [...original];
  edited[4] = edited[4]!.replace('"status":200', '"status":500');
  let r = check(edited);
  assert.equal(r.ok, false);
  assert.deepEqual([r.problem!.line, r.problem!.seq], [5, 5]);
  assert.match(r.problem!.reason, /altered/);
  const v = cli(["audit", "verify", "--config", d.config]);
  assert.equal(v.code, 1);
  assert.match(v.stderr, /line 5 \(seq 5\): record altered/);

  r = check(original.filter((_, i) => i !== 4));
  assert.deepEqual([r.problem!.line, r.problem!.seq], [5, 6]);
  assert.match(r.problem!.reason, /expected seq 5, found 6: record 5 missing/);

  const swapped = [...original];
  [swapped[4], swapped[5]] = [swapped[5]!, swapped[4]!];
  r = check(swapped);
  assert.deepEqual([r.problem!.line, r.problem!.seq], [5, 6]);

  // A line rewritten with a fresh hash of its own still breaks the link to the next one.
  const { sealRecord } = await import("../src/audit/chain.js");
  const forged = [...original];
  const rec = JSON.parse(forged[4]!) as Record<string, unknown>;
  delete rec.hash;
  rec.status = 500;
  forged[4] = sealRecord(rec).line;
  r = check(forged);
  assert.deepEqual([r.problem!.line, r.problem!.seq], [6, 6]);
  assert.match(r.problem!.reason, /prev does not match/);

  writeFileSync(d.file, original.join("\n") + "\n");
  assert.equal(verifyChain(d.file, undefined).ok, true);
});

test("a restart continues the chain; a missing, emptied or cut-short file stops the open", async () => {
  const d = await dirs();
  let audit = await AuditLog.open(options(d));
  for (let i = 0; i < 3; i++) audit.record({ action: "request", user: "bob", status: 200 });
  await audit.close();
  audit = await AuditLog.open(options(d));
  for (let i = 0; i < 2; i++) audit.record({ action: "config.reload", user: "SIGHUP", outcome: "ok" });
  await audit.close();
  assert.deepEqual([...readRecords(d.file)].map((r) => r.seq), [1, 2, 3, 4, 5]);
  assert.equal(verifyChain(d.file, undefined).ok, true);

  const saved = readFileSync(d.file);
  truncateSync(d.file, lines(d.file).slice(0, 3).join("\n").length + 1);
  await assert.rejects(AuditLog.open(options(d)), (err: Error & { code?: string }) => err.code === "audit_log_invalid" && /ends at record 3, but .* reached record 5/.test(err.message));
  writeFileSync(d.file, "");
  await assert.rejects(AuditLog.open(options(d)), /is missing or empty, but .*audit-keys\.sqlite records that it reached record 5/);
  rmSync(d.file);
  await assert.rejects(AuditLog.open(options(d)), /is missing or empty/);
  writeFileSync(d.file, saved);
  audit = await AuditLog.open(options(d));
  await audit.close();

  // Removed while open: the writer refuses to start a second chain, holds the events and says why.
  audit = await AuditLog.open(options(d));
  rmSync(d.file);
  audit.record({ action: "request", user: "bob", status: 200 });
  await audit.flush();
  assert.match(readFileSync(d.logFile, "utf8"), /\[ERROR\] \[audit\] Audit log write failed, 1 event\(s\) held in memory and retried: audit log .* is missing or empty/);
  assert.equal(lines(d.file).length, 0);
  writeFileSync(d.file, saved);
  await audit.close();
  assert.deepEqual([...readRecords(d.file)].map((r) => r.seq), [1, 2, 3, 4, 5, 6]);
  assert.equal(verifyChain(d.file, undefined).ok, true);
});

test("prompts and completions are written only with include_content", async () => {
  const d = await dirs();
  const content = { prompt: "my secret prompt", completion: "its answer" };
  let audit = await AuditLog.open(options(d));
  audit.record({ action: "request", user: "frank", status: 200, content });
  await audit.close();
  assert.ok(!readFileSync(d.file, "utf8").includes("secret"));
  audit = await AuditLog.open(options(d, { includeContent: true }));
  audit.record({ action: "request", user: "frank", status: 200, content });
  await audit.close();
  assert.deepEqual([...readRecords(d.file)].map((r) => r.record.content ?? null), [null, content]);
});

test("retention: old daily segments are pruned behind a signed checkpoint; verify starts there", async () => {
  const d = await dirs();
  let now = Date.parse("2026-01-01T12:00:00Z");
  const clock = () => new Date(now);
  const day = 86_400_000;
  for (let k = 0; k < 4; k++) {
    const audit = await AuditLog.open(options(d, { clock, retentionMs: 2 * day }));
    for (let i = 0; i < 3; i++) audit.record({ action: "request", user: "dave", status: 200 });
    await audit.close();
    now += day;
  }
  // Days 1..4: segments of days 1..3 were made; at day 4 the day-1 segment (older than 2 days) went.
  assert.equal(segmentFiles(d.file).length, 2);
  assert.ok(existsSync(checkpointPath(d.file)));
  const keys = new AuditKeys(d.keysFile);
  const key = keys.deploymentKey();
  keys.close();
  const report = verifyChain(d.file, key);
  assert.equal(report.ok, true, JSON.stringify(report.problem));
  assert.deepEqual([report.checkpoint?.seq, report.firstSeq, report.lastSeq, report.records], [3, 4, 12, 9]);
  assert.equal(chainFiles(d.file).length, 3);
  assert.equal(cli(["audit", "verify", "--config", d.config]).code, 0);

  const cp = JSON.parse(readFileSync(checkpointPath(d.file), "utf8")) as { seq: number };
  writeFileSync(checkpointPath(d.file), JSON.stringify({ ...cp, seq: 2 }));
  const bad = cli(["audit", "verify", "--config", d.config]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /checkpoint signature does not match/);
  rmSync(checkpointPath(d.file));
  assert.match(cli(["audit", "verify", "--config", d.config]).stderr, /expected seq 1, found 4: records 1\.\.3 missing/);
});

test("the real server records each of 5,000 concurrent requests (model, version, tokens, cost) and admin action, in the audit file and the main log", async () => {
  const modelPath = await tinyModelPath();
  const dataDir = path.join(await tempDir("moltbot-audit-srv-"), "data");
  const srv = await startServer(modelPath, { dataDir, config: { audit: { fsync_interval: "20ms" } } });
  const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "none" });
  try {
    await Promise.all(Array.from({ length: 8 }, (_, i) => client.completions.create({ model: "tiny", prompt: `Hello ${i}`, max_tokens: 4, temperature: 0 })));
    const stream = await client.completions.create({ model: "tiny", prompt: "Streamed", max_tokens: 3, stream: true });
    for await (const _ of stream) void _;
    // A client that leaves mid-stream: recorded as 499 with what was generated before it left.
    const ac = new AbortController();
    const left = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "go on" }], max_tokens: 4000, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming, { signal: ac.signal });
    let seen = 0;
    try {
      for await (const _ of left) if (++seen === 3) ac.abort();
    } catch {
      // the abort surfaces from the iterator
    }
    // A whole request abandoned while it runs: one record too.
    await until("the abandoned stream's end", () => srv.server.models.entries[0]!.served.worker.inflight === 0);
    const whole = new AbortController();
    const pending = fetch(`${srv.url}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "go on", max_tokens: 4000, ignore_eos: true }), signal: whole.signal });
    await until("the request in the worker", () => srv.server.models.entries[0]!.served.worker.inflight === 1);
    whole.abort();
    await assert.rejects(pending);
    await until("the abandoned request's end", () => srv.server.models.entries[0]!.served.worker.inflight === 0);
    // 5,000 requests, 100 at a time, through the real listener (10,000 records go through AuditLog directly above).
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        for (let i = 0; i < 50; i++) await fetch(`${srv.url}/healthz`).then((r) => r.text());
      }),
    );
    const refused = await fetch(`${srv.url}/admin/models/tiny/activate`, { method: "POST", headers: { "content-type": "application/json", "x-moltbot-user": "ops" }, body: JSON.stringify({ version: "v9" }) });
    assert.equal(refused.status, 404);
    const reloader = new ConfigReloader({ load: { env: {} }, started: loadConfig({ env: {} }).config, pool: srv.server.models, repository: srv.server.repository, log: srv.log, audit: srv.server.audit });
    assert.match(reloader.reload().rejected ?? "", /no config file/);
  } finally {
    await srv.close();
  }
  const file = path.join(dataDir, "audit.log");
  const report = verifyChain(file, undefined);
  assert.equal(report.ok, true, JSON.stringify(report.problem));
  const recs = [...readRecords(file)].map((r) => r.record);
  const inference = recs.filter((r) => r.route === "/v1/completions");
  assert.equal(inference.length, 9);
  for (const r of inference) {
    assert.equal(r.model, "tiny");
    assert.equal(typeof r.version, "string");
    assert.ok((r.prompt_tokens as number) > 0 && (r.completion_tokens as number) > 0, JSON.stringify(r));
    assert.equal(typeof r.cost, "number");
    assert.equal(r.status, 200);
    assert.equal(r.ip, "127.0.0.1");
    assert.equal(r.content, undefined);
  }
  const abandoned = recs.filter((r) => r.route === "/v1/chat/completions");
  assert.equal(abandoned.length, 1, JSON.stringify(abandoned));
  assert.equal(abandoned[0]!.status, 499);
  assert.equal(abandoned[0]!.model, "tiny");
  assert.ok((abandoned[0]!.completion_tokens as number) >= 2 && (abandoned[0]!.completion_tokens as number) < 4000, JSON.stringify(abandoned[0]));
  const abandonedWhole = recs.filter((r) => r.route === "/infer");
  assert.equal(abandonedWhole.length, 1, JSON.stringify(abandonedWhole));
  assert.equal(abandonedWhole[0]!.status, 499);
  assert.equal(recs.filter((r) => r.route === "/healthz").length, 5_000);
  const admin = recs.find((r) => r.action === "model.activate")!;
  assert.deepEqual([admin.target, admin.outcome], ["tiny v9", "version_not_found"]);
  assert.match(String(admin.detail), /ops \(unauthenticated/);
  const reload = recs.find((r) => r.action === "config.reload")!;
  assert.deepEqual([reload.outcome, reload.target], ["rejected", undefined]);
  const main = srv.lines();
  assert.ok(main.some((l) => /\[AUDIT\] \[api\] User 'anonymous' accessed \/v1\/completions with method POST status=200/.test(l)));
  assert.ok(main.some((l) => /\[AUDIT\] \[model\] Model tiny v9 activated by user 'anonymous' outcome=version_not_found/.test(l)));
});
