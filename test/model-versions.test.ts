// Model versions on a running server, as an operator drives them (the admin API behind
// `moltbot models`): blue/green activation under steady traffic, rollback, refused versions
// (truncated weights, failed validation, too big for memory), one switch at a time, and the
// active version surviving a restart.
import { after, before, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, open, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import OpenAI from "openai";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { runCli } from "./helpers/cli.js";
import { removeDir, startServer, tempDir, until, type RunningServer } from "./helpers/fixtures.js";

let root: string;
let dataDir: string;
let srv: RunningServer;
let client: OpenAI;

const PROMPT = "Once upon a time";

/** A version folder of model "demo": a tiny random model (its seed sets its outputs) and its config.json. */
async function writeVersion(version: string, seed: number, config: Record<string, unknown> = {}): Promise<string> {
  const dir = path.join(root, "demo", version);
  await mkdir(dir, { recursive: true });
  // Decisive logits: greedy output does not depend on how requests are batched together.
  await writeRandomLlamaModel(path.join(dir, "weights.bin"), randomModelOptions("tiny", { seed, weightStd: 0.5 }));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ name: "demo", parallel: 4, context_size: 256, ...config }));
  return dir;
}

async function admin(method: "GET" | "POST", url: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${srv.url}${url}`, {
    method,
    headers: body === undefined ? { "x-moltbot-user": "tester" } : { "content-type": "application/json", "x-moltbot-user": "tester" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

interface Served {
  version: string;
  stream: boolean;
  text: string;
}

/** Steady traffic: `n` clients in a loop, streamed and whole requests in turn, until stopped. */
function traffic(n: number) {
  const served: Served[] = [];
  const failures: string[] = [];
  let running = true;
  const one = async (stream: boolean): Promise<void> => {
    // `cache: false`: every request must run on a worker (a response-cache hit would prove nothing
    // about which version served, and hits in a tight loop would starve the admin requests).
    const req = { model: "demo", messages: [{ role: "user" as const, content: PROMPT }], max_tokens: 8, temperature: 0, ignore_eos: true, cache: false };
    if (stream) {
      const { data, response } = await client.chat.completions.create({ ...req, stream: true }).withResponse();
      let text = "";
      for await (const chunk of data) text += chunk.choices[0]?.delta?.content ?? "";
      served.push({ version: response.headers.get("x-moltbot-model-version")!, stream, text });
    } else {
      const { data, response } = await client.chat.completions.create(req).withResponse();
      served.push({ version: response.headers.get("x-moltbot-model-version")!, stream, text: data.choices[0]!.message.content ?? "" });
    }
  };
  const loops = Array.from({ length: n }, async (_, i) => {
    for (let k = i; running; k++) {
      try {
        await one(k % 2 === 0);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });
  return {
    served,
    failures,
    count: (version: string) => served.filter((s) => s.version === version).length,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

before(async () => {
  root = await tempDir("moltbot-versions-");
  dataDir = path.join(root, "data");
  await writeVersion("v1.0", 1);
  srv = await startServer(path.join(root, "demo"), { dataDir, config: { worker: { drain_timeout_ms: 20_000 } } });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await srv?.close();
  await removeDir(root);
});

test("activate, refuse bad versions, roll back: zero failed requests, each response wholly from one version", async (t: TestContext) => {
  const load = traffic(4);
  // A failed assertion must not leave the clients looping after the test.
  t.after(() => load.stop());
  await until("traffic on v1.0", () => load.count("v1.0") >= 6, 60_000);

  // Added while serving: found by the admin API without a restart.
  await writeVersion("v2.0", 2, { validation: [{ prompt: PROMPT, max_tokens: 4, max_latency_ms: 60_000 }] });
  const truncated = await writeVersion("v3.0", 3);
  const weights = path.join(truncated, "weights.bin");
  const bytes = await readFile(weights);
  await writeFile(weights, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  await writeVersion("v4.0", 4, { validation: [{ prompt: PROMPT, max_tokens: 4, expect_contains: "never in this output" }] });

  const activated = await admin("POST", "/admin/models/demo/activate", { version: "v2.0" });
  assert.equal(activated.status, 200, JSON.stringify(activated.body));
  assert.equal(activated.body.version, "v2.0");
  assert.equal(activated.body.previous, "v1.0");
  assert.equal(activated.body.validation.passed, true);
  t.diagnostic(`activation of v2.0 took ${activated.body.switch_ms} ms (load + validation; the switch itself is one assignment)`);
  // From the moment the activation answered, new requests are served by v2.0.
  const next = await client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: PROMPT }], max_tokens: 2 }).withResponse();
  assert.equal(next.response.headers.get("x-moltbot-model-version"), "v2.0");
  assert.ok(srv.lines().some((l) => /\[INFO\] \[model_loader\] Model v2\.0 loaded successfully/.test(l)), "the seed's load line");
  assert.ok(srv.lines().some((l) => /Activation of demo v2\.0 requested by tester/.test(l)), "who asked is logged");
  await until("traffic on v2.0", () => load.count("v2.0") >= 6, 60_000);

  // One switch at a time: a second one while the first loads gets 409, the first goes on.
  const failing = admin("POST", "/admin/models/demo/activate", { version: "v4.0" });
  let ended = false;
  void failing.finally(() => (ended = true));
  await until("the activation of v4.0 under way", async () => ended || (await admin("GET", "/admin/models")).body.models[0].switching?.to === "v4.0", 30_000);
  assert.ok(!ended, `the activation of v4.0 ended before it was seen under way: ${JSON.stringify(ended && (await failing).body)}`);
  const second = await admin("POST", "/admin/models/demo/activate", { version: "v3.0" });
  assert.equal(second.status, 409);
  assert.equal(second.body.error.code, "switch_in_progress");
  const refused = await failing;
  assert.equal(refused.status, 422);
  assert.equal(refused.body.error.code, "validation_failed");
  assert.match(refused.body.error.message, /expect_contains/);

  const broken = await admin("POST", "/admin/models/demo/activate", { version: "v3.0" });
  assert.equal(broken.status, 422);
  assert.equal(broken.body.error.code, "version_invalid");
  assert.match(broken.body.error.message, /truncated/);

  const back = await admin("POST", "/admin/models/demo/rollback", {});
  assert.equal(back.status, 200, JSON.stringify(back.body));
  assert.equal(back.body.version, "v1.0");
  assert.equal(back.body.previous, "v2.0");
  const beforeBack = load.count("v1.0");
  await until("traffic on v1.0 again", () => load.count("v1.0") >= beforeBack + 6, 60_000);
  await load.stop();

  assert.deepEqual(load.failures, [], "no request failed");
  // Greedy decoding of one prompt: every response of a version is that version's one text (a
  // response mixing two versions would differ), whether streamed or not.
  const texts = (version: string) => new Set(load.served.filter((s) => s.version === version).map((s) => s.text));
  assert.equal(texts("v1.0").size, 1, `v1.0 texts: ${[...texts("v1.0")].join(" | ")}`);
  assert.equal(texts("v2.0").size, 1, `v2.0 texts: ${[...texts("v2.0")].join(" | ")}`);
  assert.notDeepEqual([...texts("v1.0")], [...texts("v2.0")], "the two versions answer differently");
  assert.ok(load.served.every((s) => s.version === "v1.0" || s.version === "v2.0"));
  t.diagnostic(`${load.served.length} requests served, none failed`);

  const listing = await admin("GET", "/admin/models");
  const states = Object.fromEntries(listing.body.models[0].versions.map((v: { version: string; state: string }) => [v.version, v.state]));
  assert.equal(states["v1.0"], "active");
  assert.ok(states["v2.0"] === "available" || states["v2.0"] === "draining");
  assert.equal(states["v3.0"], "failed");
  assert.equal(states["v4.0"], "failed");
  const v2 = listing.body.models[0].versions.find((v: { version: string }) => v.version === "v2.0");
  assert.equal(v2.validation.passed, true);
  assert.equal(v2.quantization, "F32");
  assert.equal(listing.body.models[0].previous_version, "v2.0");
});

test("bad admin requests: one clear error each, the serving version untouched", async () => {
  const cases: Array<[string, unknown, number, string]> = [
    ["/admin/models/nope/activate", { version: "v2.0" }, 404, "model_not_found"],
    ["/admin/models/demo/activate", { version: "v9.9" }, 404, "version_not_found"],
    ["/admin/models/demo/activate", { version: "../v1.0" }, 400, "invalid_request"],
    ["/admin/models/demo/activate", {}, 400, "invalid_request"],
  ];
  for (const [url, body, status, code] of cases) {
    const r = await admin("POST", url, body);
    assert.equal(r.status, status, `${url} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, code);
  }
  // Weights that are not the ones config.json names are refused before they load.
  await writeVersion("v7.0", 7, { sha256: "0".repeat(64) });
  const wrong = await admin("POST", "/admin/models/demo/activate", { version: "v7.0" });
  assert.equal(wrong.status, 422, JSON.stringify(wrong.body));
  assert.equal(wrong.body.error.code, "version_invalid");
  assert.match(wrong.body.error.message, /sha256 [0-9a-f]{64}, config\.json expects 0{64}/);
  await rm(path.join(root, "demo", "v7.0"), { recursive: true });
  // A version too big for the memory left is refused before anything loads (a sparse file
  // with a valid header: nothing is written to disk).
  const dir = path.join(root, "demo", "v5.0");
  await mkdir(dir, { recursive: true });
  await copyFile(path.join(root, "demo", "v1.0", "weights.bin"), path.join(dir, "weights.bin"));
  const f = await open(path.join(dir, "weights.bin"), "r+");
  await f.truncate(2 ** 40);
  await f.close();
  const huge = await admin("POST", "/admin/models/demo/activate", { version: "v5.0" });
  assert.equal(huge.status, 507, JSON.stringify(huge.body));
  assert.equal(huge.body.error.code, "insufficient_memory");
  await rm(dir, { recursive: true });
  const r = await client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: PROMPT }], max_tokens: 2 }).withResponse();
  assert.equal(r.response.headers.get("x-moltbot-model-version"), "v1.0");
});

test("the active version survives a restart", async () => {
  const r = await admin("POST", "/admin/models/demo/activate", { version: "v2.0" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await srv.close();
  srv = await startServer(path.join(root, "demo"), { dataDir });
  const listed = await fetch(`${srv.url}/v1/models`).then((res) => res.json() as Promise<{ data: Array<{ version: string }> }>);
  assert.equal(listed.data[0]!.version, "v2.0");
  assert.ok(srv.lines().some((l) => /serving v2\.0, the version last activated/.test(l)));
  const listing = await admin("GET", "/admin/models");
  assert.equal(listing.body.models[0].active_version, "v2.0");
  assert.equal(listing.body.models[0].previous_version, "v1.0");
});

test("a version whose folder is removed while it loads is refused; the serving version is untouched", async () => {
  // Several long validation prompts: the folder goes while the version loads or is validated,
  // before the switch (a removal after the switch would be an ordinary removal of a served version).
  const slow = Array.from({ length: 6 }, (_, i) => ({ prompt: `${PROMPT} ${i}`, max_tokens: 200 }));
  const dir = await writeVersion("v6.0", 6, { validation: slow });
  const serving = (await admin("GET", "/admin/models")).body.models[0].active_version;
  const pending = admin("POST", "/admin/models/demo/activate", { version: "v6.0" });
  await until("the activation under way", async () => (await admin("GET", "/admin/models")).body.models[0].switching?.to === "v6.0", 30_000);
  await rm(dir, { recursive: true });
  const r = await pending;
  assert.equal(r.status, 422, JSON.stringify(r.body));
  assert.equal(r.body.error.code, "version_invalid");
  const listing = await admin("GET", "/admin/models");
  assert.equal(listing.body.models[0].active_version, serving);
  assert.ok(!listing.body.models[0].versions.some((v: { version: string }) => v.version === "v6.0"), "a removed version is no longer listed");
});

test("the moltbot models CLI drives the real server", async () => {
  const cli = async (...args: string[]) => {
    const r = await runCli(["models", ...args, "--url", srv.url]);
    return { code: r.code, out: r.stdout + r.stderr };
  };
  const serving = (await admin("GET", "/admin/models")).body.models[0].active_version;
  const other = serving === "v1.0" ? "v2.0" : "v1.0";
  const activated = await cli("activate", "demo", "--version", other);
  assert.equal(activated.code, 0, activated.out);
  assert.match(activated.out, new RegExp(`demo: ${serving.replace(".", "\\.")} -> ${other.replace(".", "\\.")} in [\\d.]+ s`));
  const listed = await cli("list");
  assert.equal(listed.code, 0, listed.out);
  assert.match(listed.out, new RegExp(`\\*\\s+${other.replace(".", "\\.")}\\s+active`));
  const failed = await cli("validate", "demo:v4.0");
  assert.equal(failed.code, 1, failed.out);
  assert.match(failed.out, /FAIL/);
  const back = await cli("rollback", "demo");
  assert.equal(back.code, 0, back.out);
  assert.equal((await admin("GET", "/admin/models")).body.models[0].active_version, serving);
});
