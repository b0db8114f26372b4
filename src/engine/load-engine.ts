// Picks the engine implementation. Both are imported lazily so a worker only maps the
// native libraries it uses.
import type { Engine, EngineLoadOptions } from "./types.js";

export type EngineKind = "ffi" | "node-llama-cpp";

export async function loadEngine(kind: EngineKind, opts: EngineLoadOptions): Promise<Engine> {
  if (kind === "ffi") {
    const { loadFfiEngine } = await import("./ffi-engine.js");
    return loadFfiEngine(opts);
  }
  const { loadNlcEngine } = await import("./nlc-engine.js");
  return loadNlcEngine(opts);
}
