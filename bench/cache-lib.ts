// Shared by the response-cache benchmarks: a `moltbot deploy` of the demo model with a given
// `cache` section, on its own data dir, and one timed non-streamed chat request.
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { benchModel, freePort, startServed, type Served } from "./lib.js";

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "bin", "moltbot");

export interface CacheServer extends Served {
  dataDir: string;
}

/** `cacheYaml`: the `cache:` section as flow YAML, e.g. `{ mode: off }`. Reuse `dataDir` to keep the store. */
export async function startCacheServer(cacheYaml: string, dataDir = mkdtempSync(path.join(os.tmpdir(), "moltbot-bench-cache-"))): Promise<CacheServer> {
  const model = await benchModel("demo");
  const config = path.join(dataDir, "moltbot.yaml");
  writeFileSync(config, `data_dir: ${dataDir}\nmetrics: { enabled: false }\ncache: ${cacheYaml}\n`);
  const port = freePort();
  const s = await startServed(process.execPath, [BIN, "deploy", "--config", config, "--model-path", model.modelPath, "--port", String(port), "--log-level", "WARNING"], port, "/readyz");
  return { ...s, dataDir };
}

/** One whole (non-streamed) greedy chat request; its latency in ms and the x-moltbot-cache header. */
export async function timedAsk(url: string, question: string, maxTokens: number): Promise<{ ms: number; cache: string }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: question }], max_tokens: maxTokens, temperature: 0 }),
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
  return { ms: performance.now() - t0, cache: res.headers.get("x-moltbot-cache") ?? "none" };
}
