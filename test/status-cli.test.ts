// `moltbot status` as an operator runs it: real `bin/moltbot` processes against a small HTTP
// server answering GET /admin/status with documents of the contract's shape (figures known in
// advance, a server that goes away and comes back), and once against the real server. Also the
// CLI's usage errors, and that short commands do not load the server's dependencies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { heavyModulesOf, runCli } from "./helpers/cli.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");

const cli = runCli;

/**
 * A server answering the status contract. Its figures follow its own uptime exactly (the worker
 * burns half a core, finishes 2 requests/s of 40 tokens each), so the CLI's rates are known.
 */
function fakeStatusServer(port = 0): Promise<{ server: Server; port: number; requests: string[] }> {
  const startedMs = Date.now();
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? "");
    const window = Number(new URL(req.url ?? "/", "http://x").searchParams.get("window") ?? 5);
    // Whole milliseconds, so the figures derived from it are exact in binary floating point.
    const up = Math.max(1, Date.now() - startedMs) / 1000;
    const doc = {
      server: { version: "9.8.7", pid: 4242, started_at: new Date(startedMs).toISOString(), uptime_s: up, listen: "http://127.0.0.1:8080" },
      window_s: window,
      models: [
        {
          name: "demo",
          version: "v1.0",
          state: "ready",
          pid: 4343,
          rss_bytes: 300 * 2 ** 20,
          cpu_seconds: 7 + up * 0.5,
          restarts: 1,
          slots: { busy: 3, total: 32 },
          queue: { high: 1, normal: 2, low: 5 },
          totals: { requests: 100 + up * 2, errors: 4, prompt_tokens: 999, completion_tokens: 5000 + up * 80, cached_tokens: 0 },
          window: { requests: 3 * window, errors: 2, completion_tokens: 50 * window, latency_ms: { p50: 123.4, p95: 456.7 } },
          resources: {
            limits: [
              { limit: "cpu.quota", value: "150%", enforced: true, reason: null },
              { limit: "memory.limit", value: "4GiB", enforced: true, reason: null },
              { limit: "io.read_bps", value: "10MB/s", enforced: false, reason: "no disk" },
            ],
            usage: { cpu_throttled_s: 1.25, cpu_throttled_periods: 9, memory_bytes: 310 * 2 ** 20, memory_peak_bytes: 402 * 2 ** 20, io_read_bytes: 0, io_write_bytes: 0, oom_kills: 0 },
          },
        },
      ],
      entries: [{ name: "chat", model: "demo", priority: "high", budget: { spent: 0.0123, limit: 50, month: "2026-11" } }],
    };
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(doc));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve({ server, port: (server.address() as { port: number }).port, requests }));
  });
}

function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Polls `cond` until it holds; fails after `ms` with `what()` to show why. */
async function waitFor(cond: () => boolean, what: () => string, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting; output so far:\n${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("status prints the server, each model's figures and each pool entry once, then exits 0", async () => {
  const { server, port, requests } = await fakeStatusServer();
  try {
    const r = await cli(["status", "--url", `http://127.0.0.1:${port}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(requests[0], "/admin/status?window=5");
    const out = r.stdout;
    assert.match(out, /moltbot 9\.8\.7 at http:\/\/127\.0\.0\.1:8080 {2}pid 4242 {2}up \d+s/);
    const [head, row] = out.split("\n").filter((l) => /^(MODEL|demo) /.test(l));
    assert.deepEqual(head!.split(/\s{2,}/), ["MODEL", "VERSION", "STATE", "PID", "RSS", "CPU", "SLOTS", "QUEUE h/n/l", "REQ/S", "TOK/S", "P50", "P95", "ERRORS", "RESTARTS"]);
    // First refresh: rates from the window figures (3 requests and 50 tokens per second of window).
    assert.deepEqual(row!.split(/\s+/), ["demo", "v1.0", "ready", "4343", "300M", "-", "3/32", "1/2/5", "3.0", "50.0", "123ms", "457ms", "2", "1"]);
    assert.match(out, /^chat\s+demo\s+high\s+0\.0123\s+50\.00\s+2026-11$/m);
    assert.match(out, /^limits demo v1\.0: cpu\.quota 150% \(throttled 1\.3s\), memory\.limit 4GiB \(now 310M, peak 402M\), io\.read_bps 10MB\/s NOT ENFORCED \(no disk\)$/m);
    assert.doesNotMatch(out, /\x1b/, "a single print has no terminal control");
  } finally {
    await stop(server);
  }
});

test("status --json prints the server's document with derived rates, one line per refresh", async () => {
  const { server, port } = await fakeStatusServer();
  try {
    const once = await cli(["status", "--json"], { MOLTBOT_URL: `http://127.0.0.1:${port}` });
    assert.equal(once.code, 0, once.stderr);
    const lines = once.stdout.trim().split("\n");
    assert.equal(lines.length, 1);
    const doc = JSON.parse(lines[0]!) as { reachable: boolean; url: string; server: { version: string }; models: Array<Record<string, unknown>>; entries: unknown[] };
    assert.equal(doc.reachable, true);
    assert.equal(doc.url, `http://127.0.0.1:${port}`);
    assert.equal(doc.server.version, "9.8.7");
    assert.equal(doc.models[0]!.rss_bytes, 300 * 2 ** 20);
    assert.equal(doc.models[0]!.cpu_percent, null, "no CPU delta on the first refresh");
    assert.equal(doc.models[0]!.requests_per_s, 3);
    assert.equal(doc.models[0]!.tokens_per_s, 50);
    assert.equal(doc.entries.length, 1);

    // Refreshed: rates are deltas of the totals over the server's uptime between answers.
    const child = spawn(process.execPath, [BIN, "status", "--json", "--interval", "0.2", "--url", `http://127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    await waitFor(() => out.split("\n").length > 3, () => out);
    child.kill("SIGINT");
    assert.equal(await exited, 0);
    const second = JSON.parse(out.split("\n")[1]!) as { models: Array<{ cpu_percent: number; requests_per_s: number; tokens_per_s: number }> };
    assert.ok(Math.abs(second.models[0]!.cpu_percent - 50) < 1e-6, `cpu_percent ${second.models[0]!.cpu_percent}`);
    assert.ok(Math.abs(second.models[0]!.requests_per_s - 2) < 1e-6);
    assert.ok(Math.abs(second.models[0]!.tokens_per_s - 80) < 1e-6);
    assert.doesNotMatch(out, /\x1b/, "--json has no terminal control");
  } finally {
    await stop(server);
  }
});

test("status --interval redraws in place, rides out a server restart, and Ctrl-C exits 0 with the cursor shown", async () => {
  let fake = await fakeStatusServer();
  const port = fake.port;
  const child: ChildProcess = spawn(process.execPath, [BIN, "status", "--interval", "0.2", "--url", `http://127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, COLUMNS: "70" },
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  try {
    await waitFor(() => /^demo /m.test(out), () => out);
    assert.ok(out.startsWith("\x1b[?25l\x1b[H"), "hides the cursor, draws from the top");
    await stop(fake.server);
    const downAt = out.length;
    await waitFor(() => /unreachable for \d+s .*\n {2}connect ECONNREFUSED/.test(out.slice(downAt)), () => out);
    fake = await fakeStatusServer(port);
    const backAt = out.length;
    await waitFor(() => /^demo /m.test(out.slice(backAt)), () => out);
    child.kill("SIGINT");
    assert.equal(await exited, 0, out);
    assert.ok(out.endsWith("\x1b[?25h\n"), "shows the cursor again at the end");
    const frames = out.split("\x1b[H").slice(1);
    assert.ok(frames.length >= 3, "up, unreachable, back");
    for (const frame of frames) {
      assert.match(frame, /\x1b\[J/, "each frame clears the rest of the screen");
      for (const line of frame.replace(/\x1b\[(J|K|\?25[hl])/g, "").split("\n")) assert.ok(line.length <= 70, `cut to the width: ${JSON.stringify(line)}`);
    }
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await stop(fake.server);
  }
});

test("status finds the server from the config file, and fails with one line when it is unreachable", async () => {
  const { server, port } = await fakeStatusServer();
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-status-"));
  const yaml = path.join(dir, "moltbot.yaml");
  await writeFile(yaml, `server:\n  host: 0.0.0.0\n  port: ${port}\n`);
  try {
    const viaConfig = await cli(["status", "--config", yaml]);
    assert.equal(viaConfig.code, 0, viaConfig.stderr);
    assert.match(viaConfig.stdout, /moltbot 9\.8\.7/);
    const viaEnv = await cli(["status"], { MOLTBOT_CONFIG: yaml });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
  } finally {
    await stop(server);
  }
  const down = await cli(["status", "--config", yaml]);
  assert.equal(down.code, 1);
  assert.equal(down.stdout, "");
  assert.equal(down.stderr.trim().split("\n").length, 1, down.stderr);
  assert.match(down.stderr, new RegExp(`^moltbot: error: cannot read the status of http://127\\.0\\.0\\.1:${port}/admin/status\\?window=5: connect ECONNREFUSED`));
});

test("usage errors: one line naming what was wrong, exit 2", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["deploy", "--such-flag"], /^moltbot: error: unknown option --such-flag \(see 'moltbot deploy --help'\)$/],
    [["frobnicate"], /^moltbot: error: unknown command 'frobnicate'; commands: deploy, init, status, budget/],
    [["statsu"], /^moltbot: error: unknown command 'statsu'; did you mean 'status'\?/],
    [["deploy", "--port"], /^moltbot: error: option --port needs a value/],
    [["status", "--url"], /^moltbot: error: option --url needs a value/],
    [["deploy", "--engine", "fast"], /^moltbot: error: option --engine: "fast" is not one of: ffi, node-llama-cpp/],
    [["init"], /^moltbot: error: missing <dir>/],
    [["status", "--interval", "0"], /^moltbot: error: option --interval: expected a number of seconds > 0/],
    [["status", "--interval", "soon"], /^moltbot: error: option --interval: expected a number of seconds > 0/],
    [["status", "--url", "localhost:8080"], /^moltbot: error: option --url: expected an http:\/\/ or https:\/\/ URL, got 'localhost:8080'/],
    [["status", "extra"], /^moltbot: error: unexpected argument 'extra'/],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(args)));
  results.forEach((r, i) => {
    const [args, expected] = cases[i]!;
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "", args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr.trim(), expected, args.join(" "));
  });
  const typo = results[0]!.stderr;
  assert.equal(typo.match(/such/gi)?.length, 1, "the unknown flag is named once");
});

test("--help and status load none of the server's dependencies", async () => {
  const { server, port } = await fakeStatusServer();
  try {
    for (const args of [["--help"], ["deploy", "--help"], ["status", "--url", `http://127.0.0.1:${port}`]]) {
      const r = await heavyModulesOf(args);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.sawCli, "the hook saw the CLI load");
      assert.deepEqual(r.heavy, [], `moltbot ${args.join(" ")}`);
    }
  } finally {
    await stop(server);
  }
});

test("status against the real server", async () => {
  const { makeRepository, startServer } = await import("./helpers/fixtures.js");
  const s = await startServer(await makeRepository([{ name: "tiny", version: "v1.0" }]));
  try {
    const gen = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tiny", prompt: "status", max_tokens: 8 }) });
    assert.equal(gen.status, 200);
    const text = await cli(["status", "--url", s.url]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^tiny\s+v1\.0\s+ready\s+\d+\s+\d+M\s/m);
    const json = await cli(["status", "--url", s.url, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { models: Array<{ name: string; totals: { requests: number }; requests_per_s: number | null }> };
    assert.equal(doc.models[0]!.name, "tiny");
    assert.equal(doc.models[0]!.totals.requests, 1);
    assert.equal(typeof doc.models[0]!.requests_per_s, "number");
  } finally {
    await s.close();
  }
});
