// Never lose the money records: a real server spends, its ledger.sqlite is emptied (`: >`) or
// deleted, and the next start refuses with ledger_lost instead of restarting the month at zero
// spent; `moltbot budget reset --all` or --accept-new-ledger starts a new ledger on purpose.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import type { DeepPartial } from "../src/config/load.js";
import type { MoltbotConfig } from "../src/config/schema.js";
import type { LedgerMarker } from "../src/ledger/ledger-marker.js";
import { ledgerPath, openSqliteLedger } from "../src/ledger/sqlite-ledger.js";
import { makeRepository, startServer, tempDir } from "./helpers/fixtures.js";
import { BIN } from "./helpers/cli.js";

const CONFIG: DeepPartial<MoltbotConfig> = { model_pool: [{ name: "tiny", budget: { cost_limit: 1000 }, pricing: { input_per_1k: 0, output_per_1k: 1 } }] };

let repo: string;
before(async () => {
  repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
});
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Start, spend on one completion, stop; returns what was spent. */
async function spend(dataDir: string, opts: { acceptNewLedger?: boolean } = {}): Promise<{ lines: string[] }> {
  const srv = await startServer(repo, { config: CONFIG, dataDir, ...opts });
  try {
    const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
    // `cache: false`: each call spends (a repeat would be a free response-cache hit).
    const r = await client.completions.create({ model: "tiny", prompt: "money", max_tokens: 8, temperature: 0, ignore_eos: true, cache: false } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(r.usage!.completion_tokens, 8);
  } finally {
    await srv.close();
  }
  return { lines: srv.lines() };
}

const marker = (dataDir: string) => JSON.parse(readFileSync(path.join(dataDir, "ledger.marker.json"), "utf8")) as LedgerMarker;

function cli(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: "utf8", env: { ...process.env, MOLTBOT_CONFIG: "", MOLTBOT_DATA_DIR: "", USER: "ops" }, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("an emptied ledger refuses the start (server and budget CLI) until `budget reset --all` accepts a new one", async () => {
  const dataDir = await tempDir("moltbot-ledger-lost-");
  await spend(dataDir);
  const before = marker(dataDir);
  assert.equal(before.spent.tiny, 0.008, "the marker holds the month's totals (8 tokens at 1 per 1K)");
  assert.equal(before.file, "ledger.sqlite");

  // The shell's way of emptying a file, as an operator (or a bad script) would.
  execFileSync("sh", ["-c", `: > "${ledgerPath(dataDir)}"`]);
  await assert.rejects(startServer(repo, { config: CONFIG, dataDir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, "ledger_lost", err.message);
    assert.equal(
      err.message,
      `${ledgerPath(dataDir)} is empty, but ledger.marker.json beside it records ledger ${before.ledger_id}: 0.008 spent in ${before.period} (tiny 0.008), recorded ${before.written_at}: refusing to start the month over at zero spent. Restore the file from a backup, or accept a new, empty ledger with \`moltbot budget reset --all\` or \`moltbot deploy --accept-new-ledger\``,
    );
    return true;
  });

  const status = cli(["budget", "status", "--data-dir", dataDir], dataDir);
  assert.equal(status.code, 1, status.stdout);
  assert.match(status.stderr, /^moltbot: error: .*ledger\.sqlite is empty, but ledger\.marker\.json beside it records ledger/);

  const reset = cli(["budget", "reset", "--all", "--data-dir", dataDir], dataDir);
  assert.equal(reset.code, 0, reset.stderr);
  assert.match(reset.stdout, new RegExp(`^Accepted a new, empty budget ledger [0-9a-f-]{36} in .*ledger\\.sqlite by 'ops'; the one lost was ledger ${before.ledger_id}: 0\\.008 spent`));
  const after = marker(dataDir);
  assert.notEqual(after.ledger_id, before.ledger_id);
  assert.deepEqual(after.spent, {});

  await spend(dataDir);
  assert.equal(marker(dataDir).spent.tiny, 0.008, "the new ledger counts from zero, on purpose");
  assert.equal(marker(dataDir).ledger_id, after.ledger_id);
});

test("a deleted ledger refuses the start; deploy --accept-new-ledger starts a new one and says what was lost", async () => {
  const dataDir = await tempDir("moltbot-ledger-lost-");
  await spend(dataDir);
  await spend(dataDir);
  const before = marker(dataDir);
  assert.equal(before.spent.tiny, 0.016, "totals add up across restarts");
  rmSync(ledgerPath(dataDir));
  await assert.rejects(startServer(repo, { config: CONFIG, dataDir }), /ledger\.sqlite is missing, but ledger\.marker\.json beside it records ledger .*: 0\.016 spent/);
  assert.equal(existsSync(ledgerPath(dataDir)), false, "the refused start created no new ledger");

  const { lines } = await spend(dataDir, { acceptNewLedger: true });
  assert.ok(
    lines.some((l) => new RegExp(`\\[WARNING\\] \\[ledger\\] Started a new, empty budget ledger [0-9a-f-]{36} in .*ledger\\.sqlite \\(--accept-new-ledger\\); the one lost was ledger ${before.ledger_id}: 0\\.016 spent`).test(l)),
    lines.join("\n"),
  );
  assert.equal(marker(dataDir).spent.tiny, 0.008);
});

test("another ledger copied over this one is refused too", async () => {
  const dataDir = await tempDir("moltbot-ledger-lost-");
  const otherDir = await tempDir("moltbot-ledger-other-");
  openSqliteLedger(ledgerPath(dataDir)).close();
  const mine = marker(dataDir);
  const other = openSqliteLedger(ledgerPath(otherDir));
  other.close();
  copyFileSync(ledgerPath(otherDir), ledgerPath(dataDir));
  assert.throws(() => openSqliteLedger(ledgerPath(dataDir)), (err: Error & { code?: string }) => {
    assert.equal(err.code, "ledger_lost");
    assert.match(err.message, new RegExp(`ledger\\.sqlite holds another ledger \\(${other.id}\\), but ledger\\.marker\\.json beside it records ledger ${mine.ledger_id}`));
    return true;
  });
  // A ledger from before markers existed (or a marker deleted) gets one, naming it.
  rmSync(path.join(dataDir, "ledger.marker.json"));
  const adopted = openSqliteLedger(ledgerPath(dataDir));
  adopted.close();
  assert.equal(marker(dataDir).ledger_id, other.id);
});
