// `moltbot quantize`, the implementation: loaded by commands/quantize.ts only when it runs.
// A repository version is converted into a new version folder beside it: built as a hidden
// `.NAME.partial-PID` folder (the repository skips dot-folders) and renamed into place last, so
// a failure, a full disk or Ctrl-C leaves no half-written version that a server could pick up.

import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ArgumentsCamelCase } from "yargs";
import { loadConfig } from "../../config/load.js";
import { ensureDemoModel } from "../../demo/ensure-demo-model.js";
import { MoltbotError } from "../../errors.js";
import { findPrecision, seedName } from "../../quantize/precisions.js";
import { Quantizer, sha256File, type ConvertOptions, type ConvertResult, type QuantizeProgress } from "../../quantize/quantizer.js";
import { loadModelVersion, openRepository, type ModelVersion } from "../../repository/repository.js";
import { isVersionName } from "../../repository/versions.js";
import { parseRef } from "./models.js";
import type { QuantizeArgs } from "./quantize.js";

function fail(message: string): never {
  throw new MoltbotError("quantization_failed", message);
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/** The repository version `--model NAME[:VERSION]` names. */
async function resolveVersion(args: QuantizeArgs): Promise<ModelVersion & { modelDir: string | undefined }> {
  const loaded = loadConfig({ file: args.config, env: process.env, overrides: { model_path: args["model-path"] } });
  const ref = parseRef(String(args.model)) as { name: string; version?: string };
  let modelPath = loaded.config.model_path;
  // Without a repository `deploy` serves the built-in demo model; its cache folder is a folder of
  // versions (demo/v1.0), so the demo's quantized version lands beside it.
  if (modelPath === undefined && ref.name === "demo") modelPath = path.dirname(path.dirname(await ensureDemoModel()));
  if (modelPath === undefined) fail("no model repository: set model_path in the config or pass --model-path (or convert a file with --input)");
  const models = await openRepository(modelPath);
  const model = models.find((m) => m.name === ref.name);
  if (model === undefined) fail(`no model named '${ref.name}' in ${modelPath} (found: ${models.map((m) => m.name).join(", ")})`);
  const version = ref.version === undefined ? model.active : await loadModelVersion(model, ref.version);
  return { ...version, modelDir: model.dir };
}

export async function quantize(args: ArgumentsCamelCase<QuantizeArgs>): Promise<void> {
  const precision = findPrecision(String(args.precision))!; // the definition's check refused others
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\n${sig}: stopping the quantizer and removing its partial output\n`);
    controller.abort();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const progress = progressPrinter(args.json === true);
  const common = {
    precision: precision.name,
    ...(args.threads !== undefined ? { threads: args.threads } : {}),
    allowRequantize: args["allow-requantize"] === true,
    onProgress: progress.tensor,
    signal: controller.signal,
  };
  let result: ConvertResult;
  let sourcePath: string;
  let versionDir: string | undefined;
  let modelName: string | undefined;
  try {
    if (args.input !== undefined) {
      sourcePath = path.resolve(args.input);
      result = await new Quantizer({ modelPath: sourcePath }).convert({ ...common, outputPath: String(args.output), force: args.force === true });
    } else {
      const source = await resolveVersion(args);
      sourcePath = source.weightsPath;
      modelName = source.name;
      if (args.output !== undefined) {
        result = await new Quantizer({ modelPath: sourcePath }).convert({ ...common, outputPath: args.output, force: args.force === true });
      } else {
        if (source.modelDir === undefined) fail(`${source.dir} is not inside a folder of versions: name the file to write with --output`);
        const outVersion = args["output-version"] ?? `${source.version}-${seedName(precision)}`;
        if (!isVersionName(outVersion) || outVersion.includes("/") || outVersion.startsWith(".")) fail(`--output-version: '${outVersion}' is not a version name (like v2.0-int8)`);
        versionDir = path.join(source.modelDir, outVersion);
        result = await writeVersion(source, versionDir, common, args.force === true);
      }
    }
  } finally {
    progress.done();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  let evaluation: unknown;
  if (args.eval) {
    const { evaluateQuantization, renderEvaluation } = await import("../../quantize/evaluate.js");
    const report = await evaluateQuantization({ sourcePath, outputPath: result.outputPath, ...(args.threads !== undefined ? { threads: args.threads } : {}), log: args.json ? undefined : (m) => process.stderr.write(`${m}\n`) });
    evaluation = report;
    if (!args.json) {
      console.log(renderResult(result, versionDir, modelName));
      console.log("");
      console.log(renderEvaluation(report).join("\n"));
      return;
    }
  }
  if (args.json) console.log(JSON.stringify({ ...result, versionDir: versionDir ?? null, ...(evaluation === undefined ? {} : { evaluation }) }));
  else console.log(renderResult(result, versionDir, modelName));
}

/** Quantize into a hidden folder beside the version, with its config.json, then rename it into place. */
async function writeVersion(
  source: ModelVersion,
  versionDir: string,
  common: Omit<ConvertOptions, "outputPath" | "force">,
  force: boolean,
): Promise<ConvertResult> {
  if (!force && (await exists(versionDir))) fail(`${versionDir}: version exists (pass --force to replace it)`);
  const parent = path.dirname(versionDir);
  const tmpDir = path.join(parent, `.${path.basename(versionDir)}.partial-${process.pid}`);
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir);
  try {
    const weightsName = path.basename(source.weightsPath);
    const quantizer = new Quantizer({ modelPath: source.weightsPath });
    // Refuse bad input before hashing a source of gigabytes.
    await quantizer.check({ ...common, outputPath: path.join(tmpDir, weightsName) });
    const sourceSha = await sha256File(source.weightsPath);
    const result = await quantizer.convert({ ...common, outputPath: path.join(tmpDir, weightsName) });
    const configPath = path.join(source.dir, "config.json");
    const config = JSON.parse(await readFile(configPath, "utf8").catch(() => "{}")) as Record<string, unknown>;
    const out = {
      ...config,
      ...(config.name === undefined ? { name: source.name } : {}),
      quantization: result.fileType,
      source_version: source.version,
      source_sha256: sourceSha,
      sha256: result.sha256,
    };
    await writeFile(path.join(tmpDir, "config.json"), JSON.stringify(out, null, 2) + "\n");
    common.signal?.throwIfAborted();
    if (await exists(versionDir)) {
      // --force: the old version goes aside first, so the folder is never half old, half new.
      const old = path.join(parent, `.${path.basename(versionDir)}.old-${process.pid}`);
      await rename(versionDir, old);
      await rename(tmpDir, versionDir);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmpDir, versionDir);
    }
    return { ...result, outputPath: path.join(versionDir, weightsName) };
  } catch (err) {
    await rm(tmpDir, { recursive: true, force: true });
    throw err;
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function renderResult(r: ConvertResult, versionDir: string | undefined, modelName?: string): string {
  const lines = [
    `${versionDir === undefined ? "wrote" : `version ${path.basename(versionDir)}:`} ${r.outputPath}`,
    `  ${r.fileType}: ${mib(r.inputBytes)} -> ${mib(r.outputBytes)} (${(r.reduction * 100).toFixed(1)}% smaller) in ${r.seconds.toFixed(1)} s`,
    `  tensors: ${Object.entries(r.tensorTypes).sort((a, b) => b[1] - a[1]).map(([t, n]) => `${n} ${t}`).join(", ")}`,
    `  sha256: ${r.sha256}`,
  ];
  if (r.fallbacks.length > 0) {
    lines.push(`  ${r.fallbacks.length} tensor(s) kept another type than asked (llama.cpp's fallback):`);
    for (const f of r.fallbacks) lines.push(`    ${f.name}: ${f.used} instead of ${f.wanted} (${f.reason})`);
  }
  if (versionDir !== undefined && modelName !== undefined) lines.push(`  next: moltbot models validate ${modelName}:${path.basename(versionDir)}, then moltbot models activate ${modelName} ${path.basename(versionDir)}`);
  return lines.join("\n");
}

/** Progress on stderr: one rewritten line on a terminal, a line per tenth otherwise. */
function progressPrinter(quiet: boolean): { tensor: (p: QuantizeProgress) => void; done: () => void } {
  const tty = process.stderr.isTTY === true;
  let lastTenth = -1;
  let drawn = false;
  return {
    tensor: (p) => {
      if (quiet) return;
      const text = `quantizing [${String(p.index).padStart(String(p.count).length)}/${p.count}] ${p.name} ${p.from === p.to ? `${p.from} (kept)` : `${p.from} -> ${p.to}`}`;
      if (tty) {
        process.stderr.write(`\r\x1b[K${text}`);
        drawn = true;
        return;
      }
      const tenth = Math.floor((p.index * 10) / p.count);
      if (tenth !== lastTenth || p.index === p.count) {
        lastTenth = tenth;
        process.stderr.write(`${text}\n`);
      }
    },
    done: () => {
      if (drawn) process.stderr.write("\r\x1b[K");
    },
  };
}
