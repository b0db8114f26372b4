// Unit strings an operator writes in moltbot.yaml ("150%", "100ms", "4GiB", "10MB/s") and
// their parsed values. The schema validates these at load time through the `is*` predicates,
// so a consumer that calls `parse*` on a loaded config never sees a throw.
// Decimal (kB, MB, GB) and binary (KiB, MiB, GiB) byte units are kept distinct, as in
// cgroups and Kubernetes, because "4GB" and "4GiB" differ by 7% of a memory limit.

import { MoltbotError } from "../errors.js";

const NUMBER = String.raw`(\d+(?:\.\d+)?|\.\d+)`;

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const BYTES_RE = new RegExp(`^${NUMBER}(b|kb|mb|gb|tb|kib|mib|gib|tib)$`, "i");
const DURATION_RE = new RegExp(`^${NUMBER}(ms|s|m|h|d)$`);
const PERCENT_RE = new RegExp(`^${NUMBER}%$`);
const PLAIN_INT_RE = /^\d+$/;

function invalid(kind: string, value: unknown, example: string): MoltbotError {
  return new MoltbotError("config_invalid", `expected ${kind} like ${example}, got ${JSON.stringify(value)}`);
}

/** Byte size: "4GiB" -> 4294967296, "512MB" -> 512000000, 1024 or "1024" -> 1024. */
export function parseBytes(value: string | number): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0) return value;
    throw invalid("byte size", value, '"4GiB"');
  }
  if (PLAIN_INT_RE.test(value)) return parseBytes(Number(value));
  const m = BYTES_RE.exec(value);
  if (m === null) throw invalid("byte size", value, '"4GiB"');
  const bytes = Math.round(Number(m[1]) * BYTE_UNITS[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(bytes)) throw invalid("byte size", value, '"4GiB"');
  return bytes;
}

/** Duration in milliseconds: "100ms" -> 100, "30s" -> 30000, "1h", "7d". A unit is required. */
export function parseDuration(value: string): number {
  const m = typeof value === "string" ? DURATION_RE.exec(value) : null;
  if (m === null) throw invalid("duration", value, '"30s" (units ms, s, m, h, d)');
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

/** CPU share in cores: "150%" -> 1.5 (one core is 100%, as in `docker --cpus` and top). */
export function parsePercent(value: string): number {
  const m = typeof value === "string" ? PERCENT_RE.exec(value) : null;
  if (m === null) throw invalid("percentage", value, '"150%"');
  return Number(m[1]) / 100;
}

/** Rate in bytes per second: "10MB/s" -> 10000000. */
export function parseRate(value: string): number {
  if (typeof value !== "string" || !value.endsWith("/s")) throw invalid("rate", value, '"10MB/s"');
  try {
    return parseBytes(value.slice(0, -2));
  } catch {
    throw invalid("rate", value, '"10MB/s"');
  }
}

function accepts(parse: (v: string) => number): (v: string) => boolean {
  return (v) => {
    try {
      parse(v);
      return true;
    } catch {
      return false;
    }
  };
}

export const isBytes = accepts(parseBytes);
export const isDuration = accepts(parseDuration);
export const isPercent = accepts(parsePercent);
export const isRate = accepts(parseRate);
