// `moltbot quantize` as an operator runs it: the real bin/moltbot against a real repository of
// tiny random-weight models. The new version folder it writes is validated by a real server
// through `moltbot models validate`; usage errors and an existing version get one line; Ctrl-C
// mid-quantization leaves no folder behind; --help loads nothing heavy.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { checkGgufIntegrity } from "../src/gguf/integrity.js";
import { randomModelOptions, writeRandomLlamaModel } from "../src/gguf/random-model.js";
import { sha256File } from "../src/quantize/quantizer.js";
import { BIN, heavyModulesOf, runCli } from "./helpers/cli.js";
import { startServer, tempDir } from "./helpers/fixtures.js";

let root: string;
let repo: string;

before(async () => {
  root = await tempDir("moltbot-quant-cli-");
  repo = path.join(root, "models");
  const v1 = path.join(repo, "tiny", "v1.0");
  await mkdir(v1, { recursive: true });
  // Decisive logits, so the validation prompt's expected text survives Q8_0 rounding.
  await writeRandomLlamaModel(path.join(v1, "weights.bin"), randomModelOptions("tiny", { weightStd: 0.5 }));
  await writeFile(path.join(v1, "config.json"), JSON.stringify({ name: "tiny", context_size: 256, parallel: 2, validation: [{ prompt: "the", max_tokens: 4 }] }));
});
after(() => rm(root, { recursive: true, force: true }));

test("quantize --help documents the command and loads no heavy module", async () => {
  const r = await heavyModulesOf(["quantize", "--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.sawCli);
  assert.deepEqual(r.heavy, []);
  for (const opt of ["--model", "--input", "--precision", "--output-version", "--output", "--threads", "--eval", "--force", "--allow-requantize"]) assert.match(r.stdout, new RegExp(`${opt}\\b`));
  assert.match(r.stdout, /int8, int4/);
});

test("usage errors: exit 2 with one line", async () => {
  const cases: [string[], RegExp][] = [
    [["quantize", "--precision", "int8"], /name the source: --model NAME\[:VERSION\] or --input FILE/],
    [["quantize", "--model", "tiny", "--precision", "int3"], /unknown precision 'int3' \(valid: fp32, fp16, int8, int4, /],
    [["quantize", "--input", "x.gguf", "--precision", "int8"], /--input needs --output FILE/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

test("--model NAME writes a version folder that a server validates, with its provenance in config.json", async () => {
  const r = await runCli(["quantize", "--model", "tiny", "--precision", "int8", "--model-path", repo, "--threads", "1"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /version v1\.0-int8: .*v1\.0-int8\/weights\.bin/);
  assert.match(r.stdout, /Q8_0: 0\.5 MiB -> 0\.2 MiB \(\d+\.\d% smaller\)/);
  assert.match(r.stdout, /next: moltbot models validate tiny:v1\.0-int8/);
  assert.match(r.stderr, /quantizing \[21\/21\]/);
  const dir = path.join(repo, "tiny", "v1.0-int8");
  assert.deepEqual((await readdir(path.join(repo, "tiny"))).sort(), ["v1.0", "v1.0-int8"]);
  const config = JSON.parse(await readFile(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(config.quantization, "Q8_0");
  assert.equal(config.source_version, "v1.0");
  assert.equal(config.source_sha256, await sha256File(path.join(repo, "tiny", "v1.0", "weights.bin")));
  assert.equal(config.sha256, await sha256File(path.join(dir, "weights.bin")));
  assert.equal(config.name, "tiny");
  assert.deepEqual(config.validation, [{ prompt: "the", max_tokens: 4 }]);
  assert.equal((await checkGgufIntegrity(path.join(dir, "weights.bin"))).quantization, "Q8_0");

  // The same version again is refused; --force replaces it.
  const again = await runCli(["quantize", "--model", "tiny:v1.0", "--precision", "int8", "--model-path", repo]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^moltbot: error: .*v1\.0-int8: version exists \(pass --force to replace it\)\n$/);
  const forced = await runCli(["quantize", "--model", "tiny:v1.0", "--precision", "int8", "--model-path", repo, "--force", "--json"]);
  assert.equal(forced.code, 0, forced.stderr);
  const doc = JSON.parse(forced.stdout) as { fileType: string; versionDir: string };
  assert.equal(doc.fileType, "Q8_0");
  assert.equal(doc.versionDir, dir);
  assert.deepEqual((await readdir(path.join(repo, "tiny"))).sort(), ["v1.0", "v1.0-int8"]);

  // An already quantized version is refused without --allow-requantize.
  const requant = await runCli(["quantize", "--model", "tiny:v1.0-int8", "--precision", "int4", "--model-path", repo]);
  assert.equal(requant.code, 1);
  assert.match(requant.stderr, /already quantized \(Q8_0\).*--allow-requantize/);

  const srv = await startServer(repo);
  try {
    const v = await runCli(["models", "validate", "tiny:v1.0-int8", "--url", srv.url]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /passed/i);
  } finally {
    await srv.close();
  }
});

test("Ctrl-C while quantizing: the quantizer stops and no version folder is left", async () => {
  // Big enough (~40 MB of F32) that the quantizer is still running when the signal lands.
  const v1 = path.join(repo, "wide", "v1.0");
  await mkdir(v1, { recursive: true });
  await writeRandomLlamaModel(path.join(v1, "weights.bin"), randomModelOptions("tiny", { embeddingLength: 512, feedForwardLength: 2048, blockCount: 3, vocabSize: 1024 }));
  await writeFile(path.join(v1, "config.json"), JSON.stringify({ name: "wide" }));
  const child = spawn(process.execPath, [BIN, "quantize", "--model", "wide", "--precision", "q4_k_m", "--model-path", repo, "--threads", "1"], { env: { ...process.env, MOLTBOT_CONFIG: "" } });
  let stderr = "";
  let signalled = false;
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
    if (!signalled && stderr.includes("quantizing [")) {
      signalled = true;
      child.kill("SIGINT");
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.ok(signalled, stderr);
  assert.equal(code, 1, stderr);
  assert.match(stderr, /SIGINT: stopping the quantizer and removing its partial output/);
  assert.match(stderr, /moltbot: error: quantization aborted; no output written/);
  assert.deepEqual(await readdir(path.join(repo, "wide")), ["v1.0"]);
});
