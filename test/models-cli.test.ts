// `moltbot models` as an operator runs it: real `bin/moltbot` processes against a small HTTP
// server answering the model-version admin API's documents (the contract's shapes, figures known
// in advance). What the CLI sends (method, path, body, headers) is checked on the server side.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import os from "node:os";
import path from "node:path";
import { heavyModulesOf, runCli } from "./helpers/cli.js";


const cli = runCli;

const AT = "2026-11-30T05:00:00.000Z";

function report(version: string, passed: boolean) {
  return {
    model: "demo",
    version,
    passed,
    at: AT,
    duration_ms: 812,
    checks: [
      { name: "gguf header", passed: true, detail: "42 tensors, Q8_0, 1.2 MiB", ms: 3 },
      { name: 'prompt 1: expect_contains "the"', passed, detail: passed ? "output: the cat" : "output: a dog\nran", ms: 120 },
    ],
  };
}

const MODELS = {
  models: [
    {
      name: "demo",
      active_version: "v1.0",
      previous_version: "v0.9",
      switching: null,
      versions: [
        { version: "v0.9", state: "failed", path: "/models/demo/v0.9/weights.bin", size_bytes: null, quantization: null, error: "sha256 mismatch: expected 1f2e, got 9a8b", validation: report("v0.9", false) },
        { version: "v1.0", state: "active", path: "/models/demo/v1.0/weights.bin", size_bytes: 1_258_291, quantization: "Q8_0", error: null, validation: report("v1.0", true) },
        { version: "v2.0", state: "available", path: "/models/demo/v2.0/weights.bin", size_bytes: 5 * 2 ** 30, quantization: "Q4_K_M", error: null, validation: null },
      ],
    },
  ],
};

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** The admin API as the contract has it: v2.0 validates; version "broken" fails its checks; "busy" is refused with 409. */
function fakeAdminServer(): Promise<{ server: Server; url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const send = (status: number, doc: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(doc));
      const fail = (status: number, code: string, message: string) => send(status, { error: { message, type: "invalid_request_error", code, param: null } });
      const version = body === "" ? undefined : (JSON.parse(body) as { version?: string }).version;
      const m = /^\/admin\/models\/([^/]+)\/(validate|activate|rollback)$/.exec(req.url ?? "");
      if (req.method === "GET" && req.url === "/admin/models") return send(200, MODELS);
      if (req.method !== "POST" || m === null) return fail(404, "route_not_found", `no route ${req.method} ${req.url}`);
      if (m[1] !== "demo") return fail(404, "model_not_found", `model '${decodeURIComponent(m[1]!)}' not found`);
      if (m[2] === "validate") return send(200, report(version ?? "v1.0", version !== "broken"));
      if (m[2] === "rollback") return send(200, { model: "demo", version: "v0.9", previous: "v1.0", switch_ms: 450, validation: report("v0.9", true) });
      if (version === "busy") return fail(409, "switch_in_progress", "demo is already switching to v2.0 (since 2026-11-30T05:00:00.000Z)");
      return send(200, { model: "demo", version, previous: "v1.0", switch_ms: 1234, validation: report(version ?? "?", true) });
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen }));
  });
}

function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function assertSentBy(s: Seen) {
  assert.equal(s.headers["x-moltbot-user"], os.userInfo().username);
  assert.equal(s.headers["content-type"], "application/json");
}

test("models list: a table per model, the active version marked; --json prints the server's document", async () => {
  const { server, url, seen } = await fakeAdminServer();
  try {
    const r = await cli(["models", "list", "--url", url]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url}`),
      ["GET /admin/models"],
    );
    assertSentBy(seen[0]!);
    const lines = r.stdout.split("\n");
    assert.equal(lines[0], "demo: active v1.0, previous v0.9");
    assert.deepEqual(lines[1]!.trim().split(/\s{2,}/), ["VERSION", "STATE", "SIZE", "QUANT", "LAST VALIDATION"]);
    assert.match(lines[2]!, /^ {5}v0\.9 +failed +- +- +failed 1\/2, 2026-11-30 05:00:00Z \(\d+[smhd] ago\)$/);
    assert.equal(lines[3], "       error: sha256 mismatch: expected 1f2e, got 9a8b");
    assert.match(lines[4]!, /^ {2}\* {2}v1\.0 +active +1\.2 MiB +Q8_0 +passed 2\/2, 2026-11-30 05:00:00Z/);
    assert.match(lines[5]!, /^ {5}v2\.0 +available +5\.0 GiB +Q4_K_M +never$/);

    const json = await cli(["models", "list", "--json"], { MOLTBOT_URL: url });
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), MODELS);
  } finally {
    await stop(server);
  }
});

test("models validate: a table of the checks and a summary; exit 0 when all pass, 1 when one fails", async () => {
  const { server, url, seen } = await fakeAdminServer();
  try {
    const pass = await cli(["models", "validate", "demo:v2.0", "--url", url]);
    assert.equal(pass.code, 0, pass.stderr);
    assert.equal(seen[0]!.method, "POST");
    assert.equal(seen[0]!.url, "/admin/models/demo/validate");
    assert.deepEqual(JSON.parse(seen[0]!.body), { version: "v2.0" });
    assertSentBy(seen[0]!);
    const out = pass.stdout.trimEnd().split("\n");
    assert.deepEqual(out[0]!.split(/\s{2,}/), ["CHECK", "RESULT", "MS", "DETAIL"]);
    assert.deepEqual(out[1]!.split(/\s{2,}/), ["gguf header", "PASS", "3", "42 tensors, Q8_0, 1.2 MiB"]);
    assert.deepEqual(out[2]!.split(/\s{2,}/), ['prompt 1: expect_contains "the"', "PASS", "120", "output: the cat"]);
    assert.equal(out[3], "demo v2.0: validation passed, 2/2 checks in 0.8 s");

    const fail = await cli(["models", "validate", "demo:broken", "--url", url]);
    assert.equal(fail.code, 1, fail.stderr);
    assert.equal(fail.stderr, "");
    const lines = fail.stdout.trimEnd().split("\n");
    assert.deepEqual(lines[2]!.split(/\s{2,}/), ['prompt 1: expect_contains "the"', "FAIL", "120", "output: a dog ran"], "a detail's newline does not break the table");
    assert.equal(lines[3], "demo broken: validation FAILED, 1 of 2 checks failed in 0.8 s");

    // NAME alone validates the active version: no version in the body.
    const active = await cli(["models", "validate", "demo", "--json", "--url", url]);
    assert.equal(active.code, 0, active.stderr);
    assert.deepEqual(JSON.parse(seen[2]!.body), {});
    assert.deepEqual(JSON.parse(active.stdout), report("v1.0", true));
  } finally {
    await stop(server);
  }
});

test("models activate and rollback print the switch in one line; a refused switch prints the server's message, exit 1", async () => {
  const { server, url, seen } = await fakeAdminServer();
  try {
    const positional = await cli(["models", "activate", "demo", "v2.0", "--url", url]);
    assert.equal(positional.code, 0, positional.stderr);
    assert.equal(positional.stdout, "demo: v1.0 -> v2.0 in 1.2 s (validation: 2/2 checks passed)\n");
    assert.equal(seen[0]!.url, "/admin/models/demo/activate");
    assert.deepEqual(JSON.parse(seen[0]!.body), { version: "v2.0" });
    assertSentBy(seen[0]!);

    // --version after a command is the command's own option, not the package version.
    const flag = await cli(["models", "activate", "demo", "--version", "v2.0", "--url", url]);
    assert.equal(flag.code, 0, flag.stderr);
    assert.equal(flag.stdout, "demo: v1.0 -> v2.0 in 1.2 s (validation: 2/2 checks passed)\n");
    assert.deepEqual(JSON.parse(seen[1]!.body), { version: "v2.0" });

    const busy = await cli(["models", "activate", "demo", "busy", "--url", url]);
    assert.equal(busy.code, 1);
    assert.equal(busy.stdout, "");
    assert.equal(busy.stderr, "moltbot: error: demo is already switching to v2.0 (since 2026-11-30T05:00:00.000Z)\n");

    const unknown = await cli(["models", "rollback", "nosuch", "--url", url]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, "moltbot: error: model 'nosuch' not found\n");

    const rollback = await cli(["models", "rollback", "demo", "--url", url]);
    assert.equal(rollback.code, 0, rollback.stderr);
    assert.equal(rollback.stdout, "demo: v1.0 -> v0.9 in 0.5 s (validation: 2/2 checks passed)\n");
    const sent = seen.at(-1)!;
    assert.equal(`${sent.method} ${sent.url}`, "POST /admin/models/demo/rollback");
    assert.deepEqual(JSON.parse(sent.body), {});
    assertSentBy(sent);
  } finally {
    await stop(server);
  }
});

test("models: usage errors are one line, exit 2, and send nothing", async () => {
  const { server, url, seen } = await fakeAdminServer();
  const cases: Array<[string[], RegExp]> = [
    [["models"], /^moltbot: error: name a models command: list, validate, activate or rollback/],
    [["models", "validate"], /^moltbot: error: missing NAME\[:VERSION\]/],
    [["models", "validate", "demo:"], /^moltbot: error: expected NAME or NAME:VERSION, got 'demo:'/],
    [["models", "validate", ":v2.0"], /^moltbot: error: expected NAME or NAME:VERSION, got ':v2.0'/],
    [["models", "activate"], /^moltbot: error: missing NAME/],
    [["models", "activate", "demo"], /^moltbot: error: missing VERSION/],
    [["models", "activate", "demo", "v2.0", "--version", "v3.0"], /^moltbot: error: two versions given: 'v2.0' and --version 'v3.0'/],
    [["models", "activate", "demo", "--version"], /^moltbot: error: option --version needs a value/],
    [["models", "rollback"], /^moltbot: error: missing NAME/],
    [["models", "rollback", "demo", "extra"], /^moltbot: error: unexpected argument 'extra'/],
    [["models", "list", "--url", "localhost:8080"], /^moltbot: error: option --url: expected an http:\/\/ or https:\/\/ URL/],
  ];
  try {
    const results = await Promise.all(cases.map(([args]) => cli([...args, ...(args.includes("--url") ? [] : ["--url", url])])));
    results.forEach((r, i) => {
      const [args, expected] = cases[i]!;
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "", args.join(" "));
      assert.equal(r.stderr.trim().split("\n").length, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr.trim(), expected, args.join(" "));
    });
    assert.deepEqual(seen, []);
  } finally {
    await stop(server);
  }
});

test("models against an unreachable server: one line naming the URL, exit 1; the URL may come from the config", async () => {
  const { server, url } = await fakeAdminServer();
  const port = new URL(url).port;
  const dir = await mkdtemp(path.join(os.tmpdir(), "moltbot-models-"));
  const yaml = path.join(dir, "moltbot.yaml");
  await writeFile(yaml, `server:\n  host: 0.0.0.0\n  port: ${port}\n`);
  const viaConfig = await cli(["models", "list", "--config", yaml]);
  assert.equal(viaConfig.code, 0, viaConfig.stderr);
  assert.match(viaConfig.stdout, /^demo: active v1\.0/);
  await stop(server);
  for (const args of [["models", "list"], ["models", "activate", "demo", "v2.0"]]) {
    const down = await cli([...args, "--config", yaml]);
    assert.equal(down.code, 1, args.join(" "));
    assert.equal(down.stdout, "");
    assert.equal(down.stderr.trim().split("\n").length, 1, down.stderr);
    assert.match(down.stderr, new RegExp(`^moltbot: error: cannot reach http://127\\.0\\.0\\.1:${port}/admin/models(/demo/activate)?: connect ECONNREFUSED`));
  }
});

test("models --help and models list load none of the server's dependencies", async () => {
  const { server, url } = await fakeAdminServer();
  try {
    for (const args of [["models", "--help"], ["models", "list", "--url", url]]) {
      const r = await heavyModulesOf(args);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.sawCli, "the hook saw the CLI load");
      assert.deepEqual(r.heavy, [], `moltbot ${args.join(" ")}`);
    }
  } finally {
    await stop(server);
  }
});
