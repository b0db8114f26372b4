// `moltbot budget status|reset` as an operator runs it: real bin/moltbot processes against a
// temp config and data directory whose ledger this test process fills (and keeps open, like a
// running server would).
import { test } from "node:test";
import assert from "node:assert/strict";
import { userInfo } from "node:os";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ledgerPath, openSqliteLedger } from "../src/ledger/sqlite-ledger.js";
import { tempDir } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");

function cli(args: string[], env: Record<string, string | undefined> = {}) {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ["SUDO_USER", "USER", "LOGNAME", "MOLTBOT_CONFIG", "MOLTBOT_DATA_DIR"]) delete base[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v;
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: base, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function setup() {
  const dir = await tempDir("moltbot-budget-cli-");
  const config = path.join(dir, "moltbot.yaml");
  await writeFile(
    config,
    ["model_pool:", "  - name: text-generation", "    budget: { cost_limit: 50 }", "  - name: embeddings", "    type: embedding", ""].join("\n"),
  );
  return { dir, config, file: ledgerPath(path.join(dir, "data")) };
}

function adminLog(file: string): { actor: string; action: string; entry: string; detail: string }[] {
  const Sqlite = createRequire(import.meta.url)("better-sqlite3") as new (f: string) => { prepare(sql: string): { all(): unknown[] }; close(): void };
  const db = new Sqlite(file);
  try {
    return db.prepare("SELECT actor, action, entry, detail FROM admin_log ORDER BY seq").all() as ReturnType<typeof adminLog>;
  } finally {
    db.close();
  }
}

test("budget status lists every pool entry with spend, reservations, limit and remaining", async () => {
  const { dir, config, file } = await setup();
  const ledger = openSqliteLedger(file);
  try {
    ledger.settle(ledger.reserve("text-generation", 2, 50)!, 1.25);
    ledger.reserve("text-generation", 0.5, 50); // in flight in this (live) process
    ledger.settle(ledger.reserve("retired-model", 1, Infinity)!, 0.1);
    const period = ledger.status()[0]!.period;

    const json = cli(["budget", "status", "--json", "--config", config]);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stderr, "", "a live process's reservation is not released by the CLI");
    assert.deepEqual(JSON.parse(json.stdout), [
      { entry: "text-generation", period, spent: 1.25, reserved: 0.5, reservations: 1, limit: 50, remaining: 48.25, cache_hits: 0, saved: 0, configured: true },
      { entry: "embeddings", period, spent: 0, reserved: 0, reservations: 0, limit: null, remaining: null, cache_hits: 0, saved: 0, configured: true },
      { entry: "retired-model", period, spent: 0.1, reserved: 0, reservations: 0, limit: null, remaining: null, cache_hits: 0, saved: 0, configured: false },
    ]);

    const table = cli(["budget", "status", "--config", config]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split("\n");
    assert.match(lines[0]!, /^ENTRY\s+PERIOD\s+SPENT\s+RESERVED\s+OPEN\s+LIMIT\s+REMAINING\s+CACHE HITS\s+SAVED$/);
    assert.match(lines[1]!, new RegExp(`^text-generation\\s+${period}\\s+1\\.25\\s+0\\.50\\s+1\\s+50\\.00\\s+48\\.25\\s+0\\s+0\\.00$`));
    assert.match(lines[2]!, new RegExp(`^embeddings\\s+${period}\\s+0\\.00\\s+0\\.00\\s+0\\s+unlimited\\s+unlimited\\s+0\\s+0\\.00$`));
    assert.match(lines[3]!, /^retired-model \(not in config\)\s/);

    // --data-dir points at another (empty) state directory: it is created, and all is zero.
    const other = path.join(dir, "elsewhere");
    const empty = cli(["budget", "status", "--json", "--config", config, "--data-dir", other]);
    assert.equal(empty.code, 0, empty.stderr);
    assert.deepEqual(
      (JSON.parse(empty.stdout) as { entry: string; spent: number; reserved: number }[]).map((r) => [r.entry, r.spent, r.reserved]),
      [["text-generation", 0, 0], ["embeddings", 0, 0]],
    );
    assert.ok(existsSync(ledgerPath(other)));
  } finally {
    ledger.close();
  }
});

test("budget reset starts an entry over, records the actor, and refuses a name outside the pool", async () => {
  const { config, file } = await setup();
  const ledger = openSqliteLedger(file);
  try {
    ledger.settle(ledger.reserve("text-generation", 40, 50)!, 40);
    const inFlight = ledger.reserve("text-generation", 10, 50)!;
    assert.equal(ledger.reserve("text-generation", 1, 50), null, "the month is used up");

    const unknown = cli(["budget", "reset", "nope", "--config", config], { SUDO_USER: "ops" });
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr.trim().split("\n").length, 1, unknown.stderr);
    assert.match(unknown.stderr, /^moltbot: error: budget reset: "nope" is not a model_pool entry in .*moltbot\.yaml \(pool entries: text-generation, embeddings\)$/m);
    assert.equal(unknown.stdout, "");

    const reset = cli(["budget", "reset", "text-generation", "--config", config], { SUDO_USER: "ops", USER: "root" });
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stdout, /^Reset the \d{4}-\d{2} budget of "text-generation" by 'ops' \(was spent 40\.00, reserved 10\.00 in 1 reservation\(s\)\)$/m);

    // The server's view (this process's ledger) sees the reset at once.
    assert.ok(ledger.reserve("text-generation", 50, 50), "the whole limit is available again");
    ledger.settle(inFlight, 3); // what the request in flight consumed is still charged

    const byUser = cli(["budget", "reset", "embeddings", "--config", config], { USER: "alice" });
    assert.equal(byUser.code, 0, byUser.stderr);
    assert.match(byUser.stdout, /by 'alice' \(nothing spent or reserved\)/);
    const byNobody = cli(["budget", "reset", "embeddings", "--config", config]);
    // Without SUDO_USER, USER or LOGNAME: the OS account.
    assert.match(byNobody.stdout, new RegExp(`by '${userInfo().username}'`));

    assert.deepEqual(
      adminLog(file).map((r) => [r.actor, r.action, r.entry, JSON.parse(r.detail) as unknown]),
      [
        ["ops", "reset", "text-generation", { spent: 40, reserved: 10, reservations: 1 }],
        ["alice", "reset", "embeddings", { spent: 0, reserved: 0, reservations: 0 }],
        [userInfo().username, "reset", "embeddings", { spent: 0, reserved: 0, reservations: 0 }],
      ],
    );
  } finally {
    ledger.close();
  }
});

test("budget fails with one clear line on a bad config or a missing subcommand", async () => {
  const { dir } = await setup();
  const bad = path.join(dir, "bad.yaml");
  await writeFile(bad, "model_pool:\n  - name: m\n    budget: { cost_limit: -5 }\n");
  const r = cli(["budget", "status", "--config", bad]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /model_pool\[0\]\.budget\.cost_limit/);

  const none = cli(["budget"]);
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /^moltbot: error: /);

  const help = cli(["budget", "--help"]);
  assert.equal(help.code, 0);
  for (const c of ["budget status", "budget reset [name]"]) assert.ok(help.stdout.includes(c), help.stdout);
});
