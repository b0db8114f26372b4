// resource_limits as numbers: the global section with a pool entry's own keys over it, parsed
// and checked at start (planPool), so a value the kernel would refuse is a config error with
// its key path rather than a warning at spawn time.
import type { MoltbotConfig } from "../../config/schema.js";
import { parseBytes, parseDuration, parsePercent, parseRate } from "../../config/units.js";
import { MoltbotError } from "../../errors.js";

export type ResourceLimitsConfig = MoltbotConfig["resource_limits"];

/** The limits one worker runs under; an absent field is unlimited. */
export interface ResourceLimits {
  /** CPU bandwidth: `quota` cores (1.5 = 150%) per `periodUs`. */
  cpu?: { quota: number; periodUs: number; text: string };
  memory?: { limitBytes: number; text: string };
  /** Swap allowed beyond memory.limit (needs it). */
  swap?: { bytes: number; text: string };
  ioRead?: { bps: number; text: string };
  ioWrite?: { bps: number; text: string };
}

/** One configured limit, as status and the log name it. */
export type LimitName = "cpu.quota" | "memory.limit" | "memory.swap" | "io.read_bps" | "io.write_bps";

/** cgroups' CFS period default; the kernel accepts 1 ms .. 1 s. */
const DEFAULT_PERIOD_MS = 100;

export function hasLimits(l: ResourceLimits): boolean {
  return l.cpu !== undefined || l.memory !== undefined || l.swap !== undefined || l.ioRead !== undefined || l.ioWrite !== undefined;
}

/** The configured limits by name, with the text the operator wrote. */
export function limitEntries(l: ResourceLimits): Array<{ name: LimitName; text: string; amount: number }> {
  const out: Array<{ name: LimitName; text: string; amount: number }> = [];
  if (l.cpu) out.push({ name: "cpu.quota", text: l.cpu.text, amount: l.cpu.quota });
  if (l.memory) out.push({ name: "memory.limit", text: l.memory.text, amount: l.memory.limitBytes });
  if (l.swap) out.push({ name: "memory.swap", text: l.swap.text, amount: l.swap.bytes });
  if (l.ioRead) out.push({ name: "io.read_bps", text: l.ioRead.text, amount: l.ioRead.bps });
  if (l.ioWrite) out.push({ name: "io.write_bps", text: l.ioWrite.text, amount: l.ioWrite.bps });
  return out;
}

const text = (v: string | number): string => (typeof v === "number" ? `${v}` : v);

/**
 * The limits of one model: `own` (a pool entry's resource_limits) key by key over `global`.
 * `at` is the key path of `own` for messages. Throws config_invalid for values the kernel
 * would refuse or that mean nothing (swap without a memory limit).
 */
export function resolveLimits(global: ResourceLimitsConfig, own: ResourceLimitsConfig | undefined, source: string, at: string): ResourceLimits {
  const cpu = { ...global.cpu, ...own?.cpu };
  const memory = { ...global.memory, ...own?.memory };
  const io = { ...global.io, ...own?.io };
  const fail = (key: string, why: string): never => {
    const [sec, name] = key.split(".") as ["cpu" | "memory" | "io", string];
    const ownSet = (own?.[sec] as Record<string, unknown> | undefined)?.[name] !== undefined;
    throw new MoltbotError("config_invalid", `${source}: ${ownSet ? at : "resource_limits"}.${key}: ${why}`);
  };
  const out: ResourceLimits = {};
  if (cpu.quota !== undefined) {
    const quota = parsePercent(cpu.quota);
    const periodMs = cpu.period === undefined ? DEFAULT_PERIOD_MS : parseDuration(cpu.period);
    if (periodMs < 1 || periodMs > 1000) fail("cpu.period", `${cpu.period} is outside 1ms..1s, the range of the kernel's CFS period`);
    const periodUs = Math.round(periodMs * 1000);
    if (quota * periodUs < 1000) fail("cpu.quota", `${cpu.quota} of a ${periodMs} ms period is under 1 ms, the smallest quota the kernel takes`);
    out.cpu = { quota, periodUs, text: cpu.quota };
  } else if (cpu.period !== undefined) {
    fail("cpu.period", "set without cpu.quota; the period only measures the quota");
  }
  if (memory.limit !== undefined) {
    const limitBytes = parseBytes(memory.limit);
    // Below this a Node worker cannot even finish its own start; the kernel would kill it at once.
    if (limitBytes < 16 * 2 ** 20) fail("memory.limit", `${text(memory.limit)} is below 16MiB, less than a worker process needs to start`);
    out.memory = { limitBytes, text: text(memory.limit) };
  }
  if (memory.swap !== undefined) {
    if (out.memory === undefined) fail("memory.swap", "set without memory.limit; swap is what a worker may use beyond its limit");
    out.swap = { bytes: parseBytes(memory.swap), text: text(memory.swap) };
  }
  if (io.read_bps !== undefined) out.ioRead = { bps: positiveRate(io.read_bps, () => fail("io.read_bps", "must be above 0")), text: io.read_bps };
  if (io.write_bps !== undefined) out.ioWrite = { bps: positiveRate(io.write_bps, () => fail("io.write_bps", "must be above 0")), text: io.write_bps };
  return out;
}

function positiveRate(v: string, zero: () => never): number {
  const bps = parseRate(v);
  return bps > 0 ? bps : zero();
}

/**
 * Compute threads for a worker under a CPU quota: no more than the cores the quota buys,
 * rounded up (150% -> 2). More threads than that only take turns being throttled, and
 * ggml's spinning barrier makes each turn cost a whole period (src/engine/threads.ts).
 */
export function threadsWithinQuota(threads: number, limits: ResourceLimits): number {
  if (limits.cpu === undefined) return threads;
  return Math.max(1, Math.min(threads, Math.ceil(limits.cpu.quota - 1e-9)));
}
