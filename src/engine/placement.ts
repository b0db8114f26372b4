// The one line a worker's placement is logged as when it is ready (the main process logs it:
// no native code here). What `auto` passed over, and why, is the part an operator needs when a
// GPU server turns out to run on the CPU.
import type { EnginePlacement } from "./types.js";

export function describePlacement(model: string, p: EnginePlacement): string {
  const memory = p.deviceMemoryBytes === null ? "" : `, ${(p.deviceMemoryBytes / 2 ** 20).toFixed(0)} MiB of device memory`;
  const skipped = p.skipped.length === 0 ? "" : `; skipped ${p.skipped.map((s) => `${s.kind} (${s.reason})`).join(", ")}`;
  return `Backend of ${model}: ${p.backend} on ${p.device} (${p.description}), ${p.offloadedLayers}/${p.totalLayers} layers offloaded${memory}, ${p.threads} thread(s), library ${p.library}${skipped}`;
}
