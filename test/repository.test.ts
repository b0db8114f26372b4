// Model repository layouts, version choice and the one-line errors for bad repositories.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { openRepository } from "../src/repository/repository.js";
import { compareVersions } from "../src/repository/versions.js";
import { MoltbotError } from "../src/errors.js";
import { tempDir, tinyModelPath } from "./helpers/fixtures.js";

async function version(root: string, rel: string, config: unknown = { type: "llm" }, weightsName = "weights.bin") {
  const dir = path.join(root, rel);
  await mkdir(dir, { recursive: true });
  await copyFile(await tinyModelPath(), path.join(dir, weightsName));
  if (config !== undefined) await writeFile(path.join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
}

async function rejectsWith(p: Promise<unknown>, re: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof MoltbotError, "a MoltbotError");
    assert.equal(err.code, "repository_invalid");
    assert.match(err.message, re);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}

test("versions order semantically", () => {
  assert.ok(compareVersions("v1.10", "v1.9") > 0);
  assert.ok(compareVersions("v2.0", "v2.0-rc1") > 0);
  assert.ok(compareVersions("v1", "v1.0.1") < 0);
  assert.equal(compareVersions("v1.0", "v1.0"), 0);
});

test("the seed layout picks the highest version, MODEL_VERSION picks another", async () => {
  const root = await tempDir();
  await version(root, "v1.0", { name: "textgen" });
  await version(root, "v1.9", { name: "textgen" });
  await version(root, "v1.10", { name: "textgen" });
  const [m] = await openRepository(root);
  assert.equal(m!.name, "textgen");
  assert.equal(m!.active.version, "v1.10");
  assert.deepEqual(m!.versions, ["v1.0", "v1.9", "v1.10"]);
  const [pinned] = await openRepository(root, { modelVersion: "v1.9" });
  assert.equal(pinned!.active.version, "v1.9");
  await assert.rejects(openRepository(root, { modelVersion: "v3.0" }), /MODEL_VERSION=v3\.0: no such version .*found v1\.0, v1\.9, v1\.10/);
});

test("weights are found by GGUF magic whatever their name; a version folder and a bare file serve too", async () => {
  const root = await tempDir();
  const dir = await version(root, "m/v2.0", { type: "llm" }, "model-q8.data");
  const [a] = await openRepository(path.join(root, "m"));
  assert.equal(a!.active.weightsPath, path.join(dir, "model-q8.data"));
  assert.equal(a!.name, "m");
  const [b] = await openRepository(dir);
  assert.equal(b!.active.version, "v2.0");
  const [c] = await openRepository(await tinyModelPath());
  assert.equal(c!.name, "tiny");
});

test("multi-model repositories serve each model; name:version pins one", async () => {
  const root = await tempDir();
  await version(root, "chat/v1.0", { name: "chat" });
  await version(root, "chat/v2.0", { name: "chat" });
  await version(root, "embed/v1.0", { name: "embed", type: "embedding" });
  const models = await openRepository(root, { modelVersion: "chat:v1.0" });
  assert.deepEqual(models.map((m) => [m.name, m.active.version, m.active.config.type]), [["chat", "v1.0", "llm"], ["embed", "v1.0", "embedding"]]);
});

test("bad repositories fail with one line naming the path and the problem", async () => {
  const root = await tempDir();
  await rejectsWith(openRepository(path.join(root, "missing")), /missing: model path does not exist/);

  const noWeights = path.join(root, "a", "v1.0");
  await mkdir(noWeights, { recursive: true });
  await writeFile(path.join(noWeights, "config.json"), "{}");
  await rejectsWith(openRepository(path.join(root, "a")), /a\/v1\.0: no weights/);

  const notGguf = path.join(root, "b", "v1.0");
  await mkdir(notGguf, { recursive: true });
  await writeFile(path.join(notGguf, "weights.bin"), "PK\u0003\u0004 this is a zip, not a model");
  await rejectsWith(openRepository(path.join(root, "b")), /b\/v1\.0\/weights\.bin: not a GGUF file/);

  await version(root, "c/v1.0", "{ name: oops");
  await rejectsWith(openRepository(path.join(root, "c")), /c\/v1\.0\/config\.json: malformed JSON/);

  await version(root, "d/v1.0", { type: "vision" });
  await rejectsWith(openRepository(path.join(root, "d")), /d\/v1\.0\/config\.json: type: /);

  await version(root, "e/v1.0", { parallel: "four" });
  await rejectsWith(openRepository(path.join(root, "e")), /config\.json: parallel: .*got "four"/);

  await version(root, "f/v1.0", { contxt_size: 512 });
  await rejectsWith(openRepository(path.join(root, "f")), /config\.json: contxt_size: /);

  // A folder name becomes the model name, which is sent in headers: CR LF there is refused.
  await version(root, "g/bad\r\nname/v1.0", { type: "llm" });
  await rejectsWith(openRepository(path.join(root, "g")), /model name "bad\\r\\nname" is not allowed \(expected a name of letters.*set "name" in config\.json/);
  await version(root, "h/my model/v1.0", { name: "my-model" });
  assert.deepEqual((await openRepository(path.join(root, "h"))).map((m) => m.name), ["my-model"], "config.json's name is used instead");
});
