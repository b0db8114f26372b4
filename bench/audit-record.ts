// What the audit log costs a request, without a server: the onResponse hook's part on the
// request path (requestEvent + AuditLog.record, which also writes the AUDIT line to the main
// log file), and the batch writer's part off it (pseudonyms, sealing, one write and one fsync
// per batch), per record, for batches of the size one audit.fsync_interval collects.
//
//   node --import tsx bench/audit-record.ts [--requests 100000] [--batch 1000]
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { FastifyRequest } from "fastify";
import { AuditLog } from "../src/audit/audit-log.js";
import { requestEvent } from "../src/audit/request-event.js";
import { createLogger } from "../src/observe/logger.js";
import { commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({ options: { requests: { type: "string", default: "100000" }, batch: { type: "string", default: "1000" } } });
const N = Number(values.requests);
const BATCH = Number(values.batch);

const requests = Array.from({ length: 64 }, (_, i) => ({
  url: i % 2 ? "/v1/chat/completions" : "/infer?x=1",
  method: "POST",
  ip: "10.0.0.7",
  id: `req-${i}`,
  principal: { subject: `user${i % 8}` },
  auditInference: i % 4 === 0 ? null : { model: "demo", version: "v1.0", status: 200, promptTokens: 40, completionTokens: 64, cost: 0.0012 },
})) as unknown as FastifyRequest[];

async function run(mainLogFile: boolean): Promise<{ recordUs: number; flushUs: number }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "moltbot-bench-audit-"));
  const log = createLogger({ level: "INFO", format: "text", stdout: false, ...(mainLogFile ? { file: path.join(dir, "moltbot.log") } : {}) });
  // A long interval: the batches are flushed by hand below, so the two parts are timed apart.
  const audit = await AuditLog.open({ file: path.join(dir, "audit.log"), keysFile: path.join(dir, "audit-keys.sqlite"), fsyncIntervalMs: 3_600_000, includeContent: false, retentionMs: undefined, log });
  let recordMs = 0;
  let flushMs = 0;
  for (let done = 0; done < N; done += BATCH) {
    const t0 = performance.now();
    for (let i = 0; i < BATCH; i++) audit.record(requestEvent(requests[(done + i) & 63]!, 200));
    const t1 = performance.now();
    await audit.flush();
    flushMs += performance.now() - t1;
    recordMs += t1 - t0;
  }
  await audit.close();
  log.close();
  rmSync(dir, { recursive: true, force: true });
  return { recordUs: (recordMs * 1000) / N, flushUs: (flushMs * 1000) / N };
}

console.log(commandLine());
console.log(machine());
for (const mainLogFile of [true, false]) {
  const rounds = [];
  for (let r = 0; r < 3; r++) rounds.push(await run(mainLogFile));
  const rec = median(rounds.map((x) => x.recordUs));
  const fl = median(rounds.map((x) => x.flushUs));
  console.log(`main log ${mainLogFile ? "to a file" : "off    "}: request path ${rec.toFixed(2)} us/request (requestEvent + record), batch writer ${fl.toFixed(2)} us/record (batch ${BATCH}, one fsync), median of 3 x ${N}`);
}
