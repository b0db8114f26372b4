// `moltbot cache`, the implementation: loaded by commands/cache.ts only when a command runs.
import type { ArgumentsCamelCase } from "yargs";
import { adminCall } from "../admin-call.js";
import { num, obj, str } from "../lenient-json.js";
import type { CacheArgs, CacheClearArgs } from "./cache.js";

const TIMEOUT_MS = 10_000;

export async function stats(args: ArgumentsCamelCase<CacheArgs>): Promise<void> {
  const body = await call(args, "GET", "admin/cache", undefined);
  if (args.json) return void console.log(JSON.stringify(body));
  console.log(renderStats(body));
}

export async function clear(args: ArgumentsCamelCase<CacheClearArgs>): Promise<void> {
  const body = await call(args, "POST", "admin/cache/clear", args.model === undefined ? {} : { model: args.model });
  if (args.json) return void console.log(JSON.stringify(body));
  const cleared = obj(obj(body).cleared);
  console.log(`Cleared ${num(cleared.l1) ?? 0} response(s) from memory and ${num(cleared.l2) ?? 0} from the store${args.model === undefined ? "" : ` for ${args.model}`}`);
}

/** The figures as a few lines; fields a server lacks are shown as "-". */
function renderStats(body: unknown): string {
  const doc = obj(body);
  const mode = str(doc.mode) ?? "-";
  if (mode === "off") return "The response cache is off (cache.mode: off)";
  const l1 = obj(doc.l1);
  const l2 = obj(doc.l2);
  const n = (x: unknown) => (num(x) === null ? "-" : String(num(x)));
  const hits = (num(l1.hits) ?? 0) + (num(l2.hits) ?? 0) + (num(doc.joined) ?? 0);
  const misses = num(doc.misses) ?? 0;
  const rate = hits + misses === 0 ? "-" : `${((100 * hits) / (hits + misses)).toFixed(1)}%`;
  return [
    `mode: ${mode}    hit rate: ${rate} (${hits} hits, ${misses} misses, ${n(doc.bypassed)} bypassed, ${n(doc.in_flight)} in flight)`,
    `LEVEL   ENTRIES  BYTES        HITS  EVICTIONS`,
    `memory  ${n(l1.entries).padStart(7)}  ${n(l1.bytes).padStart(11)}  ${n(l1.hits).padStart(4)}  ${n(l1.evictions).padStart(9)}`,
    l2.enabled === true
      ? `store   ${n(l2.entries).padStart(7)}  ${n(l2.bytes).padStart(11)}  ${n(l2.hits).padStart(4)}  ${n(l2.evictions).padStart(9)}  ${str(l2.file) ?? ""}`
      : "store   off",
    `joined an identical request in flight: ${n(doc.joined)}; not stored (over cache.max_entry_bytes): ${n(doc.too_large)}`,
  ].join("\n");
}

function call(args: CacheArgs, method: "GET" | "POST", path: string, payload: object | undefined): Promise<unknown> {
  return adminCall(args, method, path, payload, { timeoutMs: TIMEOUT_MS, api: "response cache admin API" });
}
