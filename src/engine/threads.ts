// The default decode thread count, chosen from measurements on a 2-core machine (see
// docs/benchmarks.md). More threads than work makes llama.cpp's compute threads spin and
// fight for cores, which on a small model costs far more than it gains.
import os from "node:os";
import type { EngineKind } from "./load-engine.js";

export function resolveThreads(setting: number | "auto", engine: EngineKind): number {
  if (setting !== "auto") return setting;
  const cores = os.availableParallelism();
  // node-llama-cpp's JS thread competes with its own compute threads: leave it a core.
  return engine === "node-llama-cpp" ? Math.max(1, cores - 1) : cores;
}
