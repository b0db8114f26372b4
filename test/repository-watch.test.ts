// repository.poll_interval: a version folder that appears while the server runs is noticed and
// validated; with repository.auto_activate it is activated when it passes and is newer.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { removeDir, startServer, tempDir, until, type RunningServer } from "./helpers/fixtures.js";

const cleanup: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function writeVersion(root: string, version: string, config: Record<string, unknown> = {}): Promise<void> {
  const dir = path.join(root, "demo", version);
  await mkdir(dir, { recursive: true });
  // config.json first: the watcher may look between the two writes (a folder without weights is
  // looked at again next time; weights without their config.json would be validated without it).
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "demo", context_size: 256, ...config }));
  await writeRandomLlamaModel(path.join(dir, "weights.bin"), randomModelOptions("tiny", { seed: version.length }));
}

async function serve(autoActivate: boolean): Promise<{ root: string; srv: RunningServer }> {
  const root = await tempDir("moltbot-watch-");
  await writeVersion(root, "v1.0");
  const srv = await startServer(path.join(root, "demo"), { config: { repository: { poll_interval: "100ms", auto_activate: autoActivate } } });
  cleanup.push(async () => {
    await srv.close();
    await removeDir(root);
  });
  return { root, srv };
}

async function listing(srv: RunningServer): Promise<{ active_version: string; versions: Array<{ version: string; state: string; validation: { passed: boolean } | null; error: string | null }> }> {
  const r = await fetch(`${srv.url}/admin/models`);
  return ((await r.json()) as { models: never[] }).models[0]!;
}

test("auto_activate: a new version that passes is activated; one that fails is not", async () => {
  const { root, srv } = await serve(true);
  await writeVersion(root, "v2.0", { validation: [{ prompt: "hello", max_tokens: 2 }] });
  await until("v2.0 active", async () => (await listing(srv)).active_version === "v2.0", 30_000);
  assert.ok(srv.lines().some((l) => /New version found: demo v2\.0; activating it \(repository\.auto_activate\)/.test(l)));
  assert.ok(srv.lines().some((l) => /requested by the repository watcher/.test(l)));

  await writeVersion(root, "v3.0", { validation: [{ prompt: "hello", max_tokens: 2, expect_contains: "not in any output" }] });
  await until("v3.0 refused", async () => (await listing(srv)).versions.find((v) => v.version === "v3.0")?.state === "failed", 30_000);
  assert.equal((await listing(srv)).active_version, "v2.0");
});

test("without auto_activate a new version is validated, not activated", async () => {
  const { root, srv } = await serve(false);
  await writeVersion(root, "v2.0");
  await until("v2.0 validated", async () => (await listing(srv)).versions.find((v) => v.version === "v2.0")?.validation?.passed === true, 30_000);
  const l = await listing(srv);
  assert.equal(l.active_version, "v1.0");
  assert.equal(l.versions.find((v) => v.version === "v2.0")!.state, "available");
  // The report is kept before the watcher logs its verdict: wait for the line, not just the report.
  await until("the watcher's verdict in the log", () => srv.lines().some((line) => /demo v2\.0 passed validation .*moltbot models activate demo v2\.0/.test(line)), 10_000);
});
