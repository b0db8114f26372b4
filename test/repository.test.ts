// Model repository layouts, version choice and the one-line errors for bad repositories.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { listModelVersions, loadModelVersion, openRepository } from "../src/repository/repository.js";
import { compareVersions } from "../src/repository/versions.js";
import { MoltbotError } from "../src/errors.js";
import { tempDir, tinyModelPath, rejectsWithLine } from "./helpers/fixtures.js";

async function version(root: string, rel: string, config: unknown = { type: "llm" }, weightsName = "weights.bin") {
  const dir = path.join(root, rel);
  await mkdir(dir, { recursive: true });
  await copyFile(await tinyModelPath(), path.join(dir, weightsName));
  if (config !== undefined) await writeFile(path.join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
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
  await rejectsWithLine(openRepository(path.join(root, "missing")), /missing: model path does not exist/);

  const noWeights = path.join(root, "a", "v1.0");
  await mkdir(noWeights, { recursive: true });
  await writeFile(path.join(noWeights, "config.json"), "{}");
  await rejectsWithLine(openRepository(path.join(root, "a")), /a\/v1\.0: no weights/);

  const notGguf = path.join(root, "b", "v1.0");
  await mkdir(notGguf, { recursive: true });
  await writeFile(path.join(notGguf, "weights.bin"), "PK\u0003\u0004 this is a zip, not a model");
  await rejectsWithLine(openRepository(path.join(root, "b")), /b\/v1\.0\/weights\.bin: not a GGUF file/);

  await version(root, "c/v1.0", "{ name: oops");
  await rejectsWithLine(openRepository(path.join(root, "c")), /c\/v1\.0\/config\.json: malformed JSON/);

  await version(root, "d/v1.0", { type: "vision" });
  await rejectsWithLine(openRepository(path.join(root, "d")), /d\/v1\.0\/config\.json: type: /);

  await version(root, "e/v1.0", { parallel: "four" });
  await rejectsWithLine(openRepository(path.join(root, "e")), /config\.json: parallel: .*got "four"/);

  await version(root, "f/v1.0", { contxt_size: 512 });
  await rejectsWithLine(openRepository(path.join(root, "f")), /config\.json: contxt_size: /);

  // A folder name becomes the model name, which is sent in headers: CR LF there is refused.
  await version(root, "g/bad\r\nname/v1.0", { type: "llm" });
  await rejectsWithLine(openRepository(path.join(root, "g")), /model name "bad\\r\\nname" is not allowed \(expected a name of letters.*set "name" in config\.json/);
  await version(root, "h/my model/v1.0", { name: "my-model" });
  assert.deepEqual((await openRepository(path.join(root, "h"))).map((m) => m.name), ["my-model"], "config.json's name is used instead");
});

test("a truncated GGUF fails at start with one line, and through loadModelVersion as version_invalid", async () => {
  const root = await tempDir();
  const good = await version(root, "v1.0", { name: "demo" });
  const cut = await version(root, "v2.0", { name: "demo" });
  const size = (await stat(path.join(cut, "weights.bin"))).size;
  await truncate(path.join(cut, "weights.bin"), size - 100);
  const truncated = new RegExp(`v2\\.0/weights\\.bin: truncated GGUF: tensor \\S+ ends at byte ${size} but the file has ${size - 100} bytes`);
  await rejectsWithLine(openRepository(root), truncated);

  const [m] = await openRepository(root, { modelVersion: "v1.0" });
  assert.equal(m!.dir, root);
  assert.equal(m!.active.weightsPath, path.join(good, "weights.bin"));
  assert.equal(m!.active.quantization, "F32");
  assert.ok(m!.active.tensorCount > 0 && m!.active.sizeBytes === size);
  await assert.rejects(loadModelVersion(m!, "v2.0"), (err: unknown) => {
    assert.ok(err instanceof MoltbotError);
    assert.equal(err.code, "version_invalid");
    assert.match(err.message, truncated);
    return true;
  });
  await assert.rejects(loadModelVersion(m!, "v9"), (err: unknown) => {
    assert.ok(err instanceof MoltbotError);
    assert.equal(err.code, "version_not_found");
    assert.equal(err.message, `model demo has no version v9 in ${root} (found: v1.0, v2.0)`);
    return true;
  });
  assert.equal((await loadModelVersion(m!, "v1.0")).weightsPath, path.join(good, "weights.bin"));
});

test("loadModelVersion reloads from disk: a new version, another name, a bad config.json", async () => {
  const root = await tempDir();
  await version(root, "demo/v1.0", { name: "demo" });
  const [m] = await openRepository(path.join(root, "demo"));
  assert.equal(m!.dir, path.join(root, "demo"));
  await version(root, "demo/v2.0", { name: "demo", sha256: "0".repeat(64) });
  const v2 = await loadModelVersion(m!, "v2.0");
  assert.equal(v2.version, "v2.0");
  assert.equal(v2.config.sha256, "0".repeat(64));

  await version(root, "demo/v3.0", { name: "other" });
  await assert.rejects(loadModelVersion(m!, "v3.0"), { code: "version_invalid", message: /v3\.0\/config\.json: name "other" differs from the model's name "demo"/ });
  await version(root, "demo/v4.0", { name: "demo", validation: [{ prompt: "hi" }, { prompt: "x", expect_regex: "(unclosed" }] });
  await assert.rejects(loadModelVersion(m!, "v4.0"), {
    code: "version_invalid",
    message: /v4\.0\/config\.json: validation\[1\]\.expect_regex: invalid regular expression: \/\(unclosed\/: Unterminated group$/,
  });
  await version(root, "demo/v5.0", { name: "demo", sha256: "not-a-hash" });
  await assert.rejects(loadModelVersion(m!, "v5.0"), { code: "version_invalid", message: /v5\.0\/config\.json: sha256: / });

  // A single version folder and a bare file reload too.
  const [single] = await openRepository(path.join(root, "demo", "v1.0"));
  assert.equal(single!.dir, undefined);
  assert.equal((await loadModelVersion(single!, "v1.0")).version, "v1.0");
  const [bare] = await openRepository(await tinyModelPath());
  assert.equal(bare!.dir, undefined);
  assert.equal((await loadModelVersion(bare!, "v1")).weightsPath, await tinyModelPath());
  await assert.rejects(loadModelVersion(bare!, "v2"), { code: "version_not_found" });
});

test("a bad regex in config.json is one clear error at start", async () => {
  const root = await tempDir();
  await version(root, "v1.0", { validation: [{ prompt: "hi", expect_regex: "a[" }] });
  await rejectsWithLine(openRepository(root), /v1\.0\/config\.json: validation\[0\]\.expect_regex: invalid regular expression: \/a\[\/: Unterminated character class$/);
});

test("listModelVersions rescans: an added version appears, a removed one disappears, a broken one shows its error", async () => {
  const root = await tempDir();
  await version(root, "v1.0", { name: "demo" });
  await version(root, "v1.1", { name: "demo" });
  const [m] = await openRepository(root);
  const tiny = await tinyModelPath();
  const size = (await stat(tiny)).size;
  await version(root, "v1.10", { name: "demo" });
  const broken = await version(root, "v1.2", { name: "demo" });
  await truncate(path.join(broken, "weights.bin"), 4096);
  await mkdir(path.join(root, "v1.3"));
  await rm(path.join(root, "v1.1"), { recursive: true });
  const listed = await listModelVersions(m!);
  assert.deepEqual(listed.map((l) => l.version), ["v1.0", "v1.2", "v1.3", "v1.10"]);
  assert.deepEqual(listed[0], { version: "v1.0", path: path.join(root, "v1.0", "weights.bin"), sizeBytes: size, quantization: "F32", error: null });
  assert.equal(listed[1]!.path, path.join(broken, "weights.bin"));
  assert.equal(listed[1]!.sizeBytes, 4096);
  assert.equal(listed[1]!.quantization, null);
  assert.match(listed[1]!.error!, /v1\.2\/weights\.bin: truncated GGUF/);
  assert.deepEqual({ ...listed[2], error: undefined }, { version: "v1.3", path: null, sizeBytes: null, quantization: null, error: undefined });
  assert.match(listed[2]!.error!, /v1\.3: no weights/);
  assert.equal(listed[3]!.error, null);
});
