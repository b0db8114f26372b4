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
import { checkGgufIntegrity } from "../gguf/integrity.js";
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
  /** Of the weights file, as checked by checkGgufIntegrity when the version was loaded. */
  sizeBytes: number;
  tensorCount: number;
  /** From `general.file_type` ("Q8_0", "Q4_K_M"); null when the file does not say. */
  quantization: string | null;
}

export interface RepositoryModel {
  name: string;
  /** The folder holding the version folders; undefined for a bare GGUF or a single version folder. */
  dir: string | undefined;
  /** The path the model was opened from: `dir`, the version folder or the GGUF file. */
  source: string;
  /** All versions found at start, oldest first (listModelVersions rescans). */
  versions: string[];
  /** The version chosen to serve. */
  active: ModelVersion;
}

/** One version on disk as `moltbot models list` and GET /admin/models show it. */
export interface VersionListing {
  version: string;
  /** The weights file; null when it cannot be found. */
  path: string | null;
  sizeBytes: number | null;
  quantization: string | null;
  /** Why the version cannot load, as one line; null when it loads. */
  error: string | null;
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

/**
 * Load one version folder: config.json, the weights, and the weights' integrity (a truncated
 * GGUF fails here with one line rather than later in llama.cpp). `located` hears the weights
 * path as soon as it is known, so a listing can show it beside a later error.
 */
async function loadVersion(dir: string, version: string, fallbackName: string, located?: (weightsPath: string) => void): Promise<ModelVersion> {
  if (!(await statOrUndefined(dir))?.isDirectory()) fail(`${dir}: version folder does not exist`);
  const configPath = path.join(dir, "config.json");
  const configText = await readFile(configPath, "utf8").catch((err: NodeJS.ErrnoException) =>
    err.code === "ENOENT" ? undefined : fail(`${configPath}: cannot read (${err.code ?? err.message})`),
  );
  const config = configText === undefined ? parseModelConfig("{}", configPath) : parseModelConfig(configText, configPath);
  const weightsPath = await findWeights(dir, config.weights);
  const name = config.name ?? checkedName(fallbackName, dir);
  located?.(weightsPath);
  const { sizeBytes, tensorCount, quantization } = await checkGgufIntegrity(weightsPath);
  return { name, version, dir, weightsPath, config, sizeBytes, tensorCount, quantization };
}

/** A bare GGUF file: one version "v1" with config.json's defaults. */
async function loadBareFile(file: string, located?: (weightsPath: string) => void): Promise<ModelVersion> {
  if (!(await statOrUndefined(file))?.isFile()) fail(`${file}: model file does not exist`);
  if (!(await isGgufFile(file))) fail(`${file}: not a GGUF file (wrong magic bytes)`);
  const name = checkedName(path.basename(file).replace(/\.(gguf|bin)$/i, ""), file);
  const config = parseModelConfig("{}", `${file} (defaults)`);
  located?.(file);
  const { sizeBytes, tensorCount, quantization } = await checkGgufIntegrity(file);
  return { name, version: "v1", dir: path.dirname(file), weightsPath: file, config, sizeBytes, tensorCount, quantization };
}

/** The model name a version folder falls back to when its config.json names none. */
function folderFallbackName(versionDir: string): string {
  const version = path.basename(versionDir);
  return isVersionName(version) ? path.basename(path.dirname(versionDir)) : version;
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
  return { name: active.name, dir, source: dir, versions, active };
}

/** Scan a repository path and choose each model's version. Throws one clear line on any problem. */
export async function openRepository(modelPath: string, opts: OpenRepositoryOptions = {}): Promise<RepositoryModel[]> {
  const abs = path.resolve(modelPath);
  const st = await statOrUndefined(abs);
  if (!st) fail(`${abs}: model path does not exist`);
  const selector = parseVersionSelector(opts.modelVersion);

  if (st.isFile()) {
    const active = await loadBareFile(abs);
    return [{ name: active.name, dir: undefined, source: abs, versions: [active.version], active }];
  }

  if (await isVersionFolder(abs)) {
    const active = await loadVersion(abs, path.basename(abs), folderFallbackName(abs));
    return [{ name: active.name, dir: undefined, source: abs, versions: [active.version], active }];
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

/** The versions of a model on disk now, oldest first (a folder may have been added or removed since start). */
async function versionsOnDisk(model: RepositoryModel): Promise<string[]> {
  if (model.dir === undefined) return [model.active.version];
  const dir = model.dir;
  const names = await subfolders(dir).catch((err: NodeJS.ErrnoException) => fail(`${dir}: cannot read (${err.code ?? err.message})`));
  return names.filter(isVersionName).sort(compareVersions);
}

/** Load a version known to be on disk; repository_invalid (one line) on any problem. */
async function loadListedVersion(model: RepositoryModel, version: string, located?: (weightsPath: string) => void): Promise<ModelVersion> {
  if (model.dir === undefined) {
    return model.source === model.active.weightsPath ? loadBareFile(model.source, located) : loadVersion(model.source, version, folderFallbackName(model.source), located);
  }
  const v = await loadVersion(path.join(model.dir, version), version, path.basename(model.dir), located);
  // Versions of one model share its name: clients and pool entries address them by it.
  if (v.name !== model.name) fail(`${path.join(v.dir, "config.json")}: name "${v.name}" differs from the model's name "${model.name}"`);
  return v;
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replaceAll(/\s*\n\s*/g, " ");
}

/**
 * Load a version of a model from disk again (its folder may have changed since start).
 * Throws version_not_found when no such folder exists, version_invalid with the same one line
 * as at start when it cannot load (missing or truncated weights, bad config.json, another name).
 */
export async function loadModelVersion(model: RepositoryModel, version: string): Promise<ModelVersion> {
  const where = model.dir ?? model.source;
  let found: string[];
  try {
    found = await versionsOnDisk(model);
  } catch (err) {
    throw new MoltbotError("version_invalid", oneLine(err), { cause: err });
  }
  if (!found.includes(version)) {
    throw new MoltbotError("version_not_found", `model ${model.name} has no version ${version} in ${where} (found: ${found.length > 0 ? found.join(", ") : "none"})`);
  }
  try {
    return await loadListedVersion(model, version);
  } catch (err) {
    throw new MoltbotError("version_invalid", oneLine(err), { cause: err });
  }
}

/** Every version on disk now, oldest first; a version that cannot load is listed with its error. */
export async function listModelVersions(model: RepositoryModel): Promise<VersionListing[]> {
  const listings: VersionListing[] = [];
  for (const version of await versionsOnDisk(model).catch(() => [])) {
    let weightsPath: string | undefined;
    try {
      const v = await loadListedVersion(model, version, (p) => (weightsPath = p));
      listings.push({ version, path: v.weightsPath, sizeBytes: v.sizeBytes, quantization: v.quantization, error: null });
    } catch (err) {
      const sizeBytes = weightsPath === undefined ? null : ((await statOrUndefined(weightsPath))?.size ?? null);
      listings.push({ version, path: weightsPath ?? null, sizeBytes, quantization: null, error: oneLine(err) });
    }
  }
  return listings;
}
