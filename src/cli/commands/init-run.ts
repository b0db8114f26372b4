// `moltbot init`, the implementation: loaded by commands/init.ts only when the command runs.
import { copyFile, mkdir, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ArgumentsCamelCase } from "yargs";
import { configTemplate } from "../../config/template.js";
import { ensureDemoModel } from "../../demo/ensure-demo-model.js";
import { MoltbotError } from "../../errors.js";
import type { InitArgs } from "./init.js";

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

// Write to a temporary name, then rename: an interrupted init never leaves a half file.
async function writeAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

export async function init(args: ArgumentsCamelCase<InitArgs>): Promise<void> {
  const dir = path.resolve(args.dir);
  const yamlPath = path.join(dir, "moltbot.yaml");
  const versionDir = path.join(dir, "models", "v1.0");
  if (!args.force && ((await exists(yamlPath)) || (await exists(versionDir)))) {
    throw new MoltbotError("cli_usage", `${dir} already holds moltbot.yaml or models/v1.0; pass --force to overwrite`);
  }
  const gguf = await ensureDemoModel({ log: (m) => console.log(m) });
  await mkdir(versionDir, { recursive: true });
  const tmpWeights = path.join(versionDir, `weights.bin.tmp-${process.pid}`);
  await copyFile(gguf, tmpWeights);
  await rename(tmpWeights, path.join(versionDir, "weights.bin"));
  await copyFile(path.join(path.dirname(gguf), "config.json"), path.join(versionDir, "config.json"));
  const template = configTemplate().replace(/^#? ?model_path:.*$/m, "model_path: ./models");
  await writeAtomic(yamlPath, template);
  console.log(`Created ${yamlPath}`);
  console.log(`Created ${versionDir}/ (config.json, weights.bin: the demo model)`);
  console.log(`Serve it with: moltbot deploy --config ${path.relative(process.cwd(), yamlPath) || yamlPath}`);
}
