// The model repository: finds model versions on disk and picks the one to serve.
// Accepted layouts (PRODUCT.md 1.2):
//   a GGUF file                      -> one model, one version
//   <dir>/{config.json, weights}     -> one version folder (`--model-path /models/v2.0`)
//   <dir>/<version>/...              -> one model, several versions (the seed's layout)
//   <dir>/<name>/<version>/...       -> several models
// Weights are recognised by the GGUF magic, whatever the file is called.
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { MoltbotError } from "../errors.js";
import { isGgufFile } from "../gguf/reader.js";
import { MODEL_NAME_EXPECTED, MODEL_NAME_PATTERN, parseModelConfig, type ModelConfig } from "./model-config.js";
import { compareVersions, highestVersion, isVersionName } from "./versions.js";

export interface ModelVersion {
  /** Model name clients use in `model`. */
  name: string;
  version: string;
  /** Folder of this version (or the GGUF's folder for a bare file). */
  dir: string;
  weightsPath: string;
  config: ModelConfig;
}

export interface RepositoryModel {
  name: string;
  /** All versions found, oldest first. */
  versions: string[];
  /** The version chosen to serve. */
  active: ModelVersion;
}

export interface OpenRepositoryOptions {
  /** `MODEL_VERSION`: a version for a one-model repository, or `name:version[,name:version]`. */
  modelVersion?: string | undefined;
}

function fail(message: string): never {
  throw new MoltbotError("repository_invalid", message);
}

async function statOrUndefined(p: string) {
  try {
    return await stat(p);
  } catch {
    return undefined;
  }
}

const MODEL_NAME = new RegExp(MODEL_NAME_PATTERN);

/** A name taken from the disk (folder or file name) is served as `model` and sent in headers. */
function checkedName(name: string, from: string): string {
  // The path is quoted: it holds the bad name, whose control characters would break the line.
  if (!MODEL_NAME.test(name)) fail(`${JSON.stringify(from)}: model name ${JSON.stringify(name)} is not allowed (expected ${MODEL_NAME_EXPECTED}); rename it or set "name" in config.json`);
  return name;
}

async function loadVersion(dir: string, version: string, fallbackName: string): Promise<ModelVersion> {
  const configPath = path.join(dir, "config.json");
  const configText = await readFile(configPath, "utf8").catch((err: NodeJS.ErrnoException) =>
    err.code === "ENOENT" ? undefined : fail(`${configPath}: cannot read (${err.code ?? err.message})`),
  );
  const config = configText === undefined ? parseModelConfig("{}", configPath) : parseModelConfig(configText, configPath);
  const weightsPath = await findWeights(dir, config.weights);
  return { name: config.name ?? checkedName(fallbackName, dir), version, dir, weightsPath, config };
}

async function findWeights(dir: string, named: string | undefined): Promise<string> {
  if (named !== undefined) {
    const p = path.join(dir, named);
    if (!(await statOrUndefined(p))?.isFile()) fail(`${p}: weights file named in config.json does not exist`);
    if (!(await isGgufFile(p))) fail(`${p}: not a GGUF file (wrong magic bytes)`);
    return p;
  }
  const preferred = path.join(dir, "weights.bin");
  if ((await statOrUndefined(preferred))?.isFile()) {
    if (!(await isGgufFile(preferred))) fail(`${preferred}: not a GGUF file (wrong magic bytes)`);
    return preferred;
  }
  const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile() && e.name !== "config.json");
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (await isGgufFile(p)) return p;
  }
  return fail(`${dir}: no weights (expected weights.bin or another GGUF file beside config.json)`);
}

async function isVersionFolder(dir: string): Promise<boolean> {
  if ((await statOrUndefined(path.join(dir, "config.json")))?.isFile()) return true;
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries) if (e.isFile() && (await isGgufFile(path.join(dir, e.name)))) return true;
  return false;
}

async function subfolders(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name);
}

function parseVersionSelector(sel: string | undefined): { all?: string; byName: Map<string, string> } {
  const byName = new Map<string, string>();
  if (sel === undefined || sel.trim() === "") return { byName };
  if (!sel.includes(":")) return { all: sel.trim(), byName };
  for (const part of sel.split(",")) {
    const [name, version] = part.split(":").map((s) => s.trim());
    if (!name || !version) fail(`MODEL_VERSION: expected "version" or "name:version[,name:version]", got "${sel}"`);
    byName.set(name, version);
  }
  return { byName };
}

async function openVersionedModel(dir: string, name: string, wanted: string | undefined, where: string): Promise<RepositoryModel> {
  const versions = (await subfolders(dir)).filter(isVersionName).sort(compareVersions);
  if (versions.length === 0) fail(`${dir}: no version folders (expected ${where}/v1.0/{config.json,weights.bin})`);
  const chosen = wanted ?? highestVersion(versions)!;
  if (!versions.includes(chosen)) fail(`MODEL_VERSION=${chosen}: no such version in ${dir} (found ${versions.join(", ")})`);
  const active = await loadVersion(path.join(dir, chosen), chosen, name);
  return { name: active.name, versions, active };
}

/** Scan a repository path and choose each model's version. Throws one clear line on any problem. */
export async function openRepository(modelPath: string, opts: OpenRepositoryOptions = {}): Promise<RepositoryModel[]> {
  const abs = path.resolve(modelPath);
  const st = await statOrUndefined(abs);
  if (!st) fail(`${abs}: model path does not exist`);
  const selector = parseVersionSelector(opts.modelVersion);

  if (st.isFile()) {
    if (!(await isGgufFile(abs))) fail(`${abs}: not a GGUF file (wrong magic bytes)`);
    const name = checkedName(path.basename(abs).replace(/\.(gguf|bin)$/i, ""), abs);
    const config = parseModelConfig("{}", `${abs} (defaults)`);
    return [{ name, versions: ["v1"], active: { name, version: "v1", dir: path.dirname(abs), weightsPath: abs, config } }];
  }

  if (await isVersionFolder(abs)) {
    const version = path.basename(abs);
    const active = await loadVersion(abs, version, isVersionName(version) ? path.basename(path.dirname(abs)) : version);
    return [{ name: active.name, versions: [version], active }];
  }

  const children = await subfolders(abs);
  if (children.length > 0 && children.every(isVersionName)) {
    return [await openVersionedModel(abs, path.basename(abs), selector.all, abs)];
  }

  const models: RepositoryModel[] = [];
  for (const child of children.sort()) {
    const dir = path.join(abs, child);
    const wanted = selector.byName.get(child) ?? selector.all;
    const versions = (await subfolders(dir)).filter(isVersionName);
    if (selector.all !== undefined && !versions.includes(selector.all)) {
      models.push(await openVersionedModel(dir, child, undefined, dir));
      continue;
    }
    models.push(await openVersionedModel(dir, child, wanted, dir));
  }
  if (models.length === 0) fail(`${abs}: empty model repository (expected v1.0/{config.json,weights.bin} or <name>/v1.0/...)`);
  if (selector.all !== undefined && !models.some((m) => m.active.version === selector.all)) {
    fail(`MODEL_VERSION=${selector.all}: no model in ${abs} has that version`);
  }
  for (const name of selector.byName.keys()) {
    if (!models.some((m) => m.name === name || path.basename(path.dirname(m.active.dir)) === name)) fail(`MODEL_VERSION: no model named "${name}" in ${abs}`);
  }
  const seen = new Set<string>();
  for (const m of models) {
    if (seen.has(m.name)) fail(`${abs}: two models are named "${m.name}" (config.json name must be unique)`);
    seen.add(m.name);
  }
  return models;
}
