// Backend selection end to end on whatever machine runs the tests (the CI machine has no GPU):
// `auto` ends on the CPU and says, per GPU backend, why it was passed over; an explicit GPU
// that cannot load stops the start (server and `moltbot deploy --gpu`); a pool entry with
// `gpu: false` runs on the CPU without trying a GPU; status and metrics name the device.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { MoltbotError } from "../src/errors.js";
import { makeRepository, removeDir, startServer, tempDir, TEST_ENGINE, type RunningServer } from "./helpers/fixtures.js";
import { runCli } from "./helpers/cli.js";
import { parseSamples, total } from "./helpers/prometheus.js";
import type { AdminStatus } from "../src/server/routes/admin.js";

const SKIP = TEST_ENGINE === "ffi" ? false : "backend selection is the FFI engine's";
const REASON = /^(library missing|load error|no device)/;

describe("engine.backend", { skip: SKIP }, () => {
  let repo: string;
  let srv: RunningServer;
  before(async () => {
    repo = await makeRepository([
      { name: "big", version: "v1" },
      { name: "small", version: "v1" },
    ]);
    srv = await startServer(repo, {
      config: {
        engine: { backend: "auto" },
        model_pool: [
          { name: "big", type: "llm", strategy: { priority: "normal", fallback: "small" } },
          { name: "small", type: "llm", gpu: false, strategy: { priority: "normal", fallback: false } },
        ],
      },
    });
  });
  after(async () => {
    await srv?.close();
    await removeDir(repo);
  });

  test("auto: each worker logs the backend and device it got, and why each GPU backend was skipped", async () => {
    const lines = srv.lines().filter((l) => l.includes("Backend of "));
    const big = lines.find((l) => l.includes("Backend of big:"));
    assert.ok(big, `a backend line for big in:\n${lines.join("\n")}`);
    const m = /Backend of big: (\w+) on (\S+) \((.+?)\), (\d+)\/(\d+) layers offloaded.*?, (\d+) thread\(s\), library (\S+)(?:; skipped (.*))?$/.exec(big);
    assert.ok(m, big);
    if (m[1] === "cpu") {
      // No usable GPU here: both GPU backends were tried first, each with its reason.
      const skipped = m[8] ?? "";
      for (const kind of ["cuda", "vulkan"]) {
        const r = new RegExp(`${kind} \\((.+?)\\)(, |$)`).exec(skipped);
        assert.ok(r, `${kind} is listed as skipped: ${big}`);
        assert.match(r[1]!, REASON);
      }
      assert.equal(m[4], "0", "nothing offloaded on the CPU");
    }
    const small = lines.find((l) => l.includes("Backend of small:"));
    assert.ok(small && /: cpu on /.test(small) && !small.includes("skipped"), `gpu: false goes straight to the CPU: ${small}`);
  });

  test("status and metrics show the device, layers and threads; the models serve", async () => {
    const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
    const r = await client.completions.create({ model: "small", prompt: "hello", max_tokens: 4 });
    assert.ok(r.usage!.completion_tokens > 0);
    const body = (await (await fetch(`${srv.url}/admin/status`)).json()) as AdminStatus;
    const small = body.models.find((x) => x.name === "small")!;
    assert.equal(small.placement?.backend, "cpu");
    assert.equal(small.placement?.device, "CPU");
    assert.ok(small.placement!.description.length > 0, "the CPU's description");
    assert.equal(small.placement?.device_memory_bytes, null);
    assert.equal(small.placement?.offloaded_layers, 0);
    assert.ok(small.placement!.total_layers >= 2 && small.placement!.threads >= 1);
    const samples = parseSamples(await (await fetch(`${srv.url}/metrics`)).text());
    assert.equal(total(samples, "moltbot_worker_backend_info", { model: "small", backend: "cpu", device: "CPU" }), 1);
    assert.equal(total(samples, "moltbot_worker_offloaded_layers", { model: "small" }), 0);
    assert.equal(total(samples, "moltbot_worker_layers", { model: "small" }), small.placement!.total_layers);
  });
});

describe("an explicit GPU that cannot be used", { skip: SKIP }, () => {
  let repo: string;
  before(async () => {
    repo = await makeRepository([{ name: "tiny", version: "v1" }]);
  });
  after(async () => removeDir(repo));

  test("engine.backend: vulkan stops the start with backend_unavailable and the reason, never a CPU fallback", async () => {
    await assert.rejects(startServer(repo, { config: { engine: { backend: "vulkan" } } }), (err: unknown) => {
      assert.ok(err instanceof MoltbotError);
      assert.equal(err.code, "backend_unavailable");
      assert.match(err.message, /engine\.backend is vulkan, but Vulkan cannot be used \((library missing|load error|no device)/);
      return true;
    });
  });

  test("a pool entry's gpu index needs a GPU backend", async () => {
    await assert.rejects(
      startServer(repo, { config: { engine: { backend: "cpu" }, model_pool: [{ name: "tiny", type: "llm", gpu: 0, strategy: { priority: "normal", fallback: false } }] } }),
      (err: unknown) => err instanceof MoltbotError && err.code === "config_invalid" && /model_pool\[0\]\.gpu: 0, but engine\.backend is cpu/.test(err.message),
    );
  });

  test("moltbot deploy --gpu cuda exits 1 with the reason", async () => {
    const data = await tempDir();
    const r = await runCli(["deploy", "--model-path", repo, "--port", "0", "--gpu", "cuda"], { MOLTBOT_DATA_DIR: data });
    await removeDir(data);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /engine\.backend is cuda, but CUDA cannot be used \((library missing|load error|no device)/);
  });
});
