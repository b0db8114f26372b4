// Fail closed: the checks a server runs before it loads anything, so that a security setting
// the operator asked for is either enforced or stops the start with the reason. Never serve
// open when the configuration asked for closed.
//   - a `security.*` key set to a non-default value whose feature is not built (NOT_YET_ENFORCED)
//   - a listener beyond loopback with no authentication, unless security.allow_insecure
// The TLS files are checked where they are loaded (src/server/tls.ts).
import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import { MoltbotError } from "../errors.js";
import type { LoadedConfig } from "./load.js";
import type { MoltbotConfig } from "./schema.js";

/**
 * Whether requests must authenticate. The one place that says what "auth on" means: a new
 * authentication method (API keys) joins here, and the bind check follows.
 */
export function authConfigured(cfg: MoltbotConfig): boolean {
  return cfg.security.jwt !== undefined || cfg.security.api_keys.enabled;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");
LOOPBACK.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

/** Whether `host` (an address or a name) reaches only this machine. A name counts only when every address it resolves to is loopback. */
export async function isLoopbackHost(host: string): Promise<boolean> {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  const family = isIP(bare);
  if (family !== 0) return LOOPBACK.check(bare, family === 4 ? "ipv4" : "ipv6");
  let addresses: { address: string; family: number }[];
  try {
    addresses = await lookup(bare, { all: true });
  } catch {
    // listen() will fail on it anyway, with its own reason.
    return true;
  }
  return addresses.length > 0 && addresses.every((a) => LOOPBACK.check(a.address, a.family === 4 ? "ipv4" : "ipv6"));
}

/** Throws security_unenforceable when the start would serve more openly than configured; returns warnings to log. */
export async function checkSecurity(loaded: LoadedConfig): Promise<string[]> {
  const cfg = loaded.config;
  const unenforced = loaded.notEnforced.filter((k) => k === "security" || k.startsWith("security."));
  if (unenforced.length > 0) {
    throw new MoltbotError(
      "security_unenforceable",
      `${unenforced.join(", ")} ${unenforced.length === 1 ? "is" : "are"} configured but this version of moltbot cannot enforce ${unenforced.length === 1 ? "it" : "them"}: refusing to start rather than serve without ${unenforced.length === 1 ? "it" : "them"} (remove the setting, or run a version that enforces it)`,
    );
  }
  const host = cfg.server.host;
  if (authConfigured(cfg) || (await isLoopbackHost(host))) return [];
  if (!cfg.security.allow_insecure) {
    throw new MoltbotError(
      "security_unenforceable",
      `server.host ${host} listens beyond loopback but no authentication is configured (security.jwt or security.api_keys): refusing to serve open to the network; configure authentication, listen on 127.0.0.1, or set security.allow_insecure: true to accept an open server`,
    );
  }
  return [`server.host ${host} listens beyond loopback without authentication (security.allow_insecure: true): anyone who can reach it can use and administer this server`];
}
