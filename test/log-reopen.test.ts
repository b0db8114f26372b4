// Log files under logrotate: renamed away, then `kill -USR1` makes the writer reopen the path.
// No record may be lost or doubled while a process writes continuously, and a real server's
// request lines carry the request id and the error code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { makeRepository, tempDir } from "./helpers/fixtures.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(HERE, "..", "..", "bin", "moltbot");

/** Collects a child's stdout; `until` resolves once it matches (or fails if the child exits). */
function watch(child: ChildProcess) {
  let out = "";
  const waiters: Array<() => void> = [];
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
    waiters.forEach((w) => w());
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    exited,
    text: () => out,
    until: (re: RegExp) =>
      new Promise<RegExpExecArray>((resolve, reject) => {
        const check = () => {
          const m = re.exec(out);
          if (m !== null) resolve(m);
        };
        waiters.push(check);
        void exited.then(() => reject(new Error(`exited before ${re}:\n${out}`)));
        // A bound, not a pause: fails with what came instead of hanging the run.
        setTimeout(() => reject(new Error(`waited 60 s for ${re}, got:\n${out}`)), 60_000).unref();
        check();
      }),
  };
}

/** Polls a file condition the test cannot be told about (another process writes the file). */
async function waitFor(what: string, cond: () => boolean): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > 30_000) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const size = (f: string) => (existsSync(f) ? statSync(f).size : 0);

test("rename + SIGUSR1 repeatedly, with size rotation too, under continuous writes: every record exactly once", async () => {
  const dir = await tempDir("moltbot-reopen-");
  const file = path.join(dir, "moltbot.log");
  const child = spawn(process.execPath, [path.join(HERE, "helpers", "log-writer.js"), file, String(64 * 1024), "1000"], { stdio: ["ignore", "pipe", "pipe"] });
  const w = watch(child);
  await w.until(/ready\n/);
  const ROTATIONS = 20;
  for (let k = 0; k < ROTATIONS; k++) {
    // The writer has reopened (or started) and written a while: some size rotations (64 KiB) too.
    await waitFor(`records in the new file (rotation ${k})`, () => size(file) > 40_000);
    if (k === ROTATIONS / 2) await waitFor("a size rotation", () => existsSync(`${file}.1`));
    renameSync(file, `${file}.r${k}`);
    child.kill("SIGUSR1");
  }
  await waitFor("records after the last reopen", () => size(file) > 0);
  child.kill("SIGTERM");
  const [, last, reopens] = await w.until(/last (\d+) reopens (\d+)\n/);
  assert.equal(await w.exited, 0);
  assert.equal(Number(reopens), ROTATIONS);

  const files = readdirSync(dir).map((n) => path.join(dir, n));
  const seen = new Uint8Array(Number(last) + 1);
  let renamedWithRecords = 0;
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    if (/\.r\d+$/.test(f) && text.length > 0) renamedWithRecords++;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const m = / n=(\d+)$/.exec(line);
      assert.ok(m, `a whole record: ${JSON.stringify(line)}`);
      const n = Number(m[1]);
      seen[n] = seen[n]! + 1;
    }
  }
  assert.ok(Number(last) > 1000, `the writer wrote throughout (${last})`);
  assert.ok(files.some((f) => /\.log\.\d+$/.test(f)), "size rotation happened as well");
  assert.equal(renamedWithRecords, ROTATIONS, "every renamed file holds records");
  const missing = [...seen.keys()].filter((n) => seen[n] === 0);
  const doubled = [...seen.keys()].filter((n) => seen[n]! > 1);
  assert.deepEqual({ missing: missing.slice(0, 10), doubled: doubled.slice(0, 10) }, { missing: [], doubled: [] });
});

test("deploy reopens its log on SIGUSR1; request lines carry the request id and error code", async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  const dir = await tempDir("moltbot-reopen-");
  const file = path.join(dir, "moltbot.log");
  const config = path.join(dir, "moltbot.yaml");
  writeFileSync(config, `log:\n  file: ${file}\n`);
  const child = spawn(process.execPath, [BIN, "deploy", "--config", config, "--model-path", repo, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
  const w = watch(child);
  try {
    const [, port] = await w.until(/Listening on http:\/\/[^:]+:(\d+)/);
    renameSync(file, `${file}.1`); // logrotate's create mode
    writeFileSync(file, "");
    child.kill("SIGUSR1");
    // The file, not stdout: the server writes stdout first, so its line may arrive earlier.
    await waitFor("the reopen line in the new file", () => readFileSync(file, "utf8").includes("Log file reopened"));
    assert.match(readFileSync(file, "utf8"), /\[INFO\] \[server\] Log file reopened \(SIGUSR1\)\n$/);

    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "none", maxRetries: 0 });
    await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }, { headers: { "x-request-id": "req-ok-1" } });
    await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }, { headers: { "x-request-id": "req-stream-1" } }).then(async (s) => {
      for await (const _ of s);
    });
    const bad = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "req-bad-1" },
      body: JSON.stringify({ model: "tiny", messages: "not a list" }),
    });
    assert.equal(bad.status, 400);
    // The refusal, the access line and the audit line.
    await waitFor("the lines of the refused request in the file", () => readFileSync(file, "utf8").split("req-bad-1").length === 4);

    const logs = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [BIN, "logs", "--config", config, "--grep", "req-"], { encoding: "utf8" }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    const lines = logs.trim().split("\n");
    const at = (id: string) => lines.filter((l) => l.includes(`request_id=${id}`) && !l.includes("[AUDIT]"));
    assert.match(logs, /\[AUDIT\] \[api\] User 'anonymous' accessed \/v1\/chat\/completions with method POST status=400 request_id=req-bad-1/);
    assert.match(at("req-ok-1").join("\n"), /\[INFO\] \[api\] POST \/v1\/chat\/completions 200 [\d.]+ms request_id=req-ok-1$/);
    assert.match(at("req-stream-1").join("\n"), /\[INFO\] \[api\] POST \/v1\/chat\/completions 200 [\d.]+ms request_id=req-stream-1$/);
    const badLines = at("req-bad-1");
    assert.equal(badLines.length, 2, logs);
    assert.match(badLines[0]!, /\[WARNING\] \[api\] Request refused POST \/v1\/chat\/completions \(400\): .* code=invalid_request request_id=req-bad-1$/);
    assert.match(badLines[1]!, /\[INFO\] \[api\] POST \/v1\/chat\/completions 400 [\d.]+ms request_id=req-bad-1$/);
    assert.equal(readFileSync(`${file}.1`, "utf8").includes("req-"), false, "nothing went to the renamed file after the reopen");
  } finally {
    child.kill("SIGTERM");
    await w.exited;
  }
});
