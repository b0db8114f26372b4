// The SQLite budget ledger on real files: limits, exact settlement, concurrency across
// instances and processes, restarts, month rollover, crash reconciliation, TTL and reset.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { costOf, ledgerPath, openSqliteLedger, type SqliteLedger } from "../src/ledger/sqlite-ledger.js";
import type { EntrySpend } from "../src/ledger/ledger.js";
import { tempDir } from "./helpers/fixtures.js";

const LEDGER_MODULE = new URL("../src/ledger/sqlite-ledger.js", import.meta.url).href;

async function ledgerFile(): Promise<string> {
  return ledgerPath(path.join(await tempDir("moltbot-ledger-"), "nested", "data"));
}

function entry(ledger: SqliteLedger, name: string, period?: string): EntrySpend | undefined {
  return ledger.status(period).find((s) => s.entry === name);
}

/** A clock the test moves by hand. */
function manualClock(iso: string) {
  let now = new Date(iso).getTime();
  return {
    clock: () => new Date(now),
    set: (to: string) => (now = new Date(to).getTime()),
    advance: (ms: number) => (now += ms),
  };
}

/** Raw access to the file, for what the API deliberately does not expose (admin log, foreign owners). */
function rawDb(file: string) {
  const Sqlite = createRequire(import.meta.url)("better-sqlite3") as new (f: string) => {
    prepare(sql: string): { run(...p: unknown[]): unknown; all(...p: unknown[]): unknown[] };
    close(): void;
  };
  return new Sqlite(file);
}

/**
 * A child process that opens the ledger, waits for "go <epoch ms>" on stdin and that instant, makes `count` reservations of
 * `amount` against `limit`, prints how many fit, then stays alive until stdin ends (or dies by
 * SIGKILL when `crash` is set, never settling: a crash between reserve and settle).
 */
function reserverProcess(file: string, count: number, amount: number, limit: number, crash = false): { child: ChildProcess; ready: Promise<void>; result: Promise<number> } {
  const script = `
    const { openSqliteLedger } = await import(${JSON.stringify(LEDGER_MODULE)});
    const ledger = openSqliteLedger(${JSON.stringify(file)});
    process.stdout.write("ready\\n");
    process.stdin.setEncoding("utf8");
    let started = false;
    process.stdin.on("data", (line) => {
      if (started) return;
      started = true;
      // Spin to a shared instant so the processes' transactions really overlap.
      const at = Number(/go (\\d+)/.exec(line)?.[1] ?? 0);
      while (Date.now() < at);
      let ok = 0;
      for (let i = 0; i < ${count}; i++) if (ledger.reserve("shared", ${amount}, ${limit}) !== null) ok++;
      process.stdout.write("fit " + ok + "\\n");
      if (${crash}) process.kill(process.pid, "SIGKILL");
    });
    process.stdin.on("end", () => { ledger.close(); process.exit(0); });
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  let onReady: () => void = () => undefined;
  let onResult: (n: number) => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const result = new Promise<number>((resolve) => (onResult = resolve));
  const died = new Promise<never>((_, reject) =>
    child.on("exit", (code, signal) => reject(new Error(`reserver exited (${code ?? signal}) before reporting:\n${out}`))),
  );
  died.catch(() => undefined);
  child.stdout!.on("data", (d: string) => {
    out += d;
    if (out.includes("ready")) onReady();
    const m = /fit (\d+)/.exec(out);
    if (m) onResult(Number(m[1]));
  });
  return { child, ready: Promise.race([ready, died]), result: Promise.race([result, died]) };
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once("exit", () => resolve()));
}

test("reserve admits up to the limit exactly and refuses beyond it; Infinity is uncapped but recorded", async () => {
  const file = await ledgerFile();
  const ledger = openSqliteLedger(file);
  try {
    assert.ok(existsSync(file), "the ledger file and its parent folders are created");
    const a = ledger.reserve("m", 0.6, 1);
    assert.ok(a);
    assert.equal(a.entry, "m");
    assert.equal(a.amount, 0.6);
    assert.match(a.period, /^\d{4}-\d{2}$/);
    assert.equal(ledger.reserve("m", 0.5, 1), null, "0.6 + 0.5 > 1");
    assert.ok(ledger.reserve("m", 0.4, 1), "0.6 + 0.4 == 1 fits exactly");
    assert.equal(ledger.reserve("m", 0.000001, 1), null, "one micro-unit over is refused");
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: a.period, spent: 0, reserved: 1, reservations: 2 });
    // Another entry has its own budget.
    assert.ok(ledger.reserve("other", 1, 1));

    assert.ok(ledger.reserve("free", 1e6, Infinity));
    assert.equal(entry(ledger, "free")?.reserved, 1e6);
    assert.equal(ledger.reserve("zero-limit", 0.000001, 0), null);

    assert.throws(() => ledger.reserve("m", -1, 10), { name: "MoltbotError", code: "internal_error" });
    assert.throws(() => ledger.reserve("m", Number.NaN, 10), /amount must be a finite number/);
    assert.throws(() => ledger.reserve("", 1, 10), /entry name/);
  } finally {
    ledger.close();
  }
});

test("settle replaces the reservation by the actual cost, exactly, once", async () => {
  const ledger = openSqliteLedger(await ledgerFile());
  try {
    const pricing = { input_per_1k: 0.5, output_per_1k: 1.5 };
    // Worst case: 1000 prompt tokens + 500 completion tokens; actual: 123 completion tokens.
    const worst = costOf(1000, 500, pricing);
    assert.equal(worst, 1.25);
    const actual = costOf(1000, 123, pricing);
    assert.equal(actual, 0.6845);
    const r = ledger.reserve("m", worst, 50);
    assert.ok(r);
    assert.equal(entry(ledger, "m")?.reserved, 1.25);
    ledger.settle(r, actual);
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: r.period, spent: 0.6845, reserved: 0, reservations: 0 });

    ledger.settle(r, actual); // a retried settle is a no-op
    assert.equal(entry(ledger, "m")?.spent, 0.6845);

    // Sums are exact to the micro-unit: as floats 0.1 + 0.2 would be 0.30000000000000004.
    const x = ledger.reserve("exact", 0.1, 1)!;
    const y = ledger.reserve("exact", 0.2, 1)!;
    ledger.settle(x, 0.1);
    ledger.settle(y, 0.2);
    for (let i = 0; i < 7; i++) ledger.settle(ledger.reserve("exact", 0.000001, 1)!, 0.000001);
    assert.equal(entry(ledger, "exact")?.spent, 0.300007);

    // A failed request settles what it consumed, here nothing: the reservation is just released.
    const failed = ledger.reserve("m", 10, 50)!;
    ledger.settle(failed, 0);
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: r.period, spent: 0.6845, reserved: 0, reservations: 0 });

    assert.equal(costOf(0, 0, pricing), 0);
    assert.equal(costOf(1, 0, { input_per_1k: 0.002, output_per_1k: 0 }), 0.000002);
    assert.throws(() => costOf(-1, 0, pricing), /promptTokens must be an integer >= 0/);
    assert.throws(() => costOf(1.5, 0, pricing), /promptTokens/);
  } finally {
    ledger.close();
  }
});

test("50 concurrent reservations against a limit that fits 10 never overspend (two instances, one file)", async () => {
  const file = await ledgerFile();
  const a = openSqliteLedger(file);
  const b = openSqliteLedger(file);
  try {
    const attempts = Array.from({ length: 50 }, (_, i) => Promise.resolve().then(() => (i % 2 === 0 ? a : b).reserve("shared", 0.1, 1)));
    const granted = (await Promise.all(attempts)).filter((r) => r !== null);
    assert.equal(granted.length, 10);
    for (const l of [a, b]) assert.deepEqual(entry(l, "shared"), { entry: "shared", period: granted[0]!.period, spent: 0, reserved: 1, reservations: 10 });
    assert.equal(b.reconciled.reservations, 0, "a second ledger in a live process releases nothing");
    // Settling through either instance frees room for exactly what was not spent.
    granted.forEach((r, i) => (i % 2 === 0 ? a : b).settle(r, 0.05));
    assert.deepEqual(entry(a, "shared"), { entry: "shared", period: granted[0]!.period, spent: 0.5, reserved: 0, reservations: 0 });
    const more = Array.from({ length: 20 }, () => b.reserve("shared", 0.1, 1)).filter((r) => r !== null);
    assert.equal(more.length, 5);
  } finally {
    a.close();
    b.close();
  }
});

test("50 reservations racing from 5 processes against a limit that fits 10 never overspend", async () => {
  // The 50-for-10 case of the issue, then a longer race. With the reserve transaction removed,
  // the first round alone overspent in 6 of 6 runs (granted 11-13).
  for (const { processes, each, amount, fits } of [
    { processes: 5, each: 10, amount: 0.1, fits: 10 },
    { processes: 3, each: 1000, amount: 0.001, fits: 1000 },
  ]) {
    const file = await ledgerFile();
    const ledger = openSqliteLedger(file);
    const reservers = Array.from({ length: processes }, () => reserverProcess(file, each, amount, 1));
    try {
      // All open and waiting, then started at one instant so their transactions contend.
      await Promise.all(reservers.map((r) => r.ready));
      const at = Date.now() + 100;
      for (const { child } of reservers) child.stdin!.write(`go ${at}\n`);
      const granted = await Promise.all(reservers.map((r) => r.result));
      assert.equal(granted.reduce((s, n) => s + n, 0), fits, `granted per process: ${granted.join(", ")}`);
      const s = entry(ledger, "shared");
      assert.equal(s?.reserved, 1);
      assert.equal(s?.reservations, fits);
    } finally {
      for (const { child } of reservers) child.stdin!.end();
      await Promise.all(reservers.map(({ child }) => exited(child)));
      ledger.close();
    }
  }
});

test("the ledger survives close and reopen", async () => {
  const file = await ledgerFile();
  const first = openSqliteLedger(file);
  const settled = first.reserve("m", 2, 10)!;
  first.settle(settled, 1.5);
  const open = first.reserve("m", 3, 10)!;
  first.close();
  assert.throws(() => first.status(), /used after close/);
  first.close(); // idempotent

  const again = openSqliteLedger(file);
  try {
    // This process is alive, so its open reservation is kept (not reconciled) and still counts.
    assert.deepEqual(again.reconciled, { reservations: 0, amount: 0 });
    assert.deepEqual(entry(again, "m"), { entry: "m", period: settled.period, spent: 1.5, reserved: 3, reservations: 1 });
    assert.equal(again.reserve("m", 5.6, 10), null);
    again.settle(open, 2.25);
    assert.deepEqual(entry(again, "m"), { entry: "m", period: settled.period, spent: 3.75, reserved: 0, reservations: 0 });
  } finally {
    again.close();
  }
});

test("a new UTC month starts at zero; the old month keeps its figures and late settlements", async () => {
  const t = manualClock("2026-11-30T23:59:00.000Z");
  const file = await ledgerFile();
  const ledger = openSqliteLedger(file, { clock: t.clock });
  try {
    const nov = ledger.reserve("m", 8, 10)!;
    assert.equal(nov.period, "2026-11");
    ledger.settle(nov, 7);
    const straddling = ledger.reserve("m", 3, 10)!;
    assert.equal(ledger.reserve("m", 0.5, 10), null, "November is full");

    t.set("2026-12-01T00:00:01.000Z");
    assert.deepEqual(ledger.status(), [], "December starts at zero without any job");
    const dec = ledger.reserve("m", 10, 10);
    assert.ok(dec, "the whole limit is available again");
    assert.equal(dec.period, "2026-12");

    // Reserved in November, settled in December: charged to November.
    ledger.settle(straddling, 2.5);
    assert.deepEqual(entry(ledger, "m", "2026-11"), { entry: "m", period: "2026-11", spent: 9.5, reserved: 0, reservations: 0 });
    ledger.settle(dec, 4);
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: "2026-12", spent: 4, reserved: 0, reservations: 0 });

    // Months are UTC: 23:30 on Dec 31 in UTC-5 is already January.
    t.set("2026-12-31T23:30:00-05:00");
    assert.equal(ledger.reserve("m", 1, 10)?.period, "2027-01");
    assert.throws(() => ledger.status("2026-13"), /period must be "YYYY-MM"/);
  } finally {
    ledger.close();
  }
  const reopened = openSqliteLedger(file, { clock: t.clock });
  try {
    assert.equal(entry(reopened, "m", "2026-11")?.spent, 9.5, "November's figures survive a restart");
  } finally {
    reopened.close();
  }
});

test("reservations of a crashed process are reconciled at open; a live process's are not", async () => {
  const file = await ledgerFile();
  const live = reserverProcess(file, 2, 1, 100);
  const crashing = reserverProcess(file, 3, 0.5, 100, true);
  try {
    await Promise.all([live.ready, crashing.ready]);
    live.child.stdin!.write("go\n");
    crashing.child.stdin!.write("go\n");
    assert.equal(await live.result, 2);
    await crashing.result.catch(() => undefined); // it may die before its report is read
    await exited(crashing.child);
    assert.equal(crashing.child.signalCode, "SIGKILL");

    // A row left by this host's previous boot, and one from another host sharing the file.
    const raw = rawDb(file);
    const insert = raw.prepare("INSERT INTO reservations (id, entry, period, amount_micros, created_at_ms, host, boot_id, pid) VALUES (?, 'shared', ?, ?, ?, ?, ?, ?)");
    const period = new Date().toISOString().slice(0, 7);
    insert.run("before-reboot", period, 250_000, Date.now(), os.hostname(), "a-previous-boot", process.pid);
    insert.run("other-host", period, 125_000, Date.now(), `not-${os.hostname()}`, "its-boot", 1);
    raw.close();

    const ledger = openSqliteLedger(file);
    try {
      // 3 x 0.5 from the killed process + 0.25 from before the reboot.
      assert.deepEqual(ledger.reconciled, { reservations: 4, amount: 1.75 });
      // Left: the live process's 2 x 1 and the other host's 0.125 (its TTL will judge it).
      assert.deepEqual(entry(ledger, "shared"), { entry: "shared", period, spent: 0, reserved: 2.125, reservations: 3 });
    } finally {
      ledger.close();
    }

    live.child.kill("SIGKILL");
    await exited(live.child);
    const afterLiveDied = openSqliteLedger(file);
    try {
      assert.deepEqual(afterLiveDied.reconciled, { reservations: 2, amount: 2 });
      assert.equal(entry(afterLiveDied, "shared")?.reserved, 0.125);
    } finally {
      afterLiveDied.close();
    }
  } finally {
    for (const p of [live, crashing]) {
      p.child.kill("SIGKILL");
      await exited(p.child);
    }
  }
});

test("reservations expire after the TTL; settling an expired one still records the spend", async () => {
  const t = manualClock("2026-05-10T12:00:00.000Z");
  const ledger = openSqliteLedger(await ledgerFile(), { clock: t.clock, reservationTtlMs: 60_000 });
  try {
    const lost = ledger.reserve("m", 0.6, 1)!;
    assert.equal(ledger.reserve("m", 0.6, 1), null);
    t.advance(59_999);
    assert.equal(entry(ledger, "m")?.reserved, 0.6, "not expired before the TTL");
    t.advance(2);
    assert.equal(entry(ledger, "m"), undefined, "nothing spent or reserved: the entry has no row this month");
    const next = ledger.reserve("m", 0.6, 1);
    assert.ok(next, "the expired reservation no longer holds money");

    ledger.settle(lost, 0.3); // the request did finish after all: what it cost is recorded
    ledger.settle(lost, 0.3); // once
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: "2026-05", spent: 0.3, reserved: 0.6, reservations: 1 });
    assert.equal(ledger.reserve("m", 0.2, 1), null, "0.3 spent + 0.6 reserved + 0.2 > 1");
  } finally {
    ledger.close();
  }
});

test("reset starts an entry's month over and records who did it", async () => {
  const t = manualClock("2026-07-15T08:00:00.000Z");
  const file = await ledgerFile();
  const ledger = openSqliteLedger(file, { clock: t.clock });
  try {
    ledger.settle(ledger.reserve("m", 5, 10)!, 4);
    const inFlight = ledger.reserve("m", 6, 10)!;
    ledger.settle(ledger.reserve("other", 1, 10)!, 1);
    t.advance(1000);
    ledger.reset("m", "alice");
    assert.deepEqual(entry(ledger, "m"), { entry: "m", period: "2026-07", spent: 0, reserved: 0, reservations: 0, resetAt: "2026-07-15T08:00:01.000Z" });
    assert.equal(entry(ledger, "other")?.spent, 1, "other entries are untouched");
    assert.ok(ledger.reserve("m", 10, 10), "the whole limit is available again");

    // The request in flight at the reset still pays for what it consumed.
    ledger.settle(inFlight, 2);
    assert.equal(entry(ledger, "m")?.spent, 2);

    ledger.reset("never-used", "bob");
    assert.equal(entry(ledger, "never-used")?.spent, 0);
    assert.throws(() => ledger.reset("m", ""), /actor/);
  } finally {
    ledger.close();
  }
  const raw = rawDb(file);
  try {
    const log = raw.prepare("SELECT at, actor, action, entry, period, detail FROM admin_log ORDER BY seq").all();
    assert.deepEqual(log, [
      { at: "2026-07-15T08:00:01.000Z", actor: "alice", action: "reset", entry: "m", period: "2026-07", detail: JSON.stringify({ spent: 4, reserved: 6, reservations: 1 }) },
      { at: "2026-07-15T08:00:01.000Z", actor: "bob", action: "reset", entry: "never-used", period: "2026-07", detail: JSON.stringify({ spent: 0, reserved: 0, reservations: 0 }) },
    ]);
  } finally {
    raw.close();
  }
});
