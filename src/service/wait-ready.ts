// Readiness as systemd's ExecStartPost (or a deploy script) sees it: poll the server's
// GET /readyz, found from the same config the server reads, until it answers 200.
import type { MoltbotConfig } from "../config/schema.js";

/** The /readyz URL of a server listening as configured; a wildcard address is asked on loopback. */
export function readyUrl(server: MoltbotConfig["server"]): string {
  if (server.port === 0) throw new Error("server.port is 0 (a free port at each start): set a fixed port so the readiness check and clients can find the server");
  const host = server.host === "0.0.0.0" ? "127.0.0.1" : server.host === "::" ? "::1" : server.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${server.port}/readyz`;
}

/** Resolve once `url` answers 200; throw with the last answer (or error) after `timeoutMs`. */
export async function waitReady(url: string, timeoutMs: number, intervalMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(Math.max(1, Math.min(2000, deadline - Date.now()))) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text().catch(() => "")}`.trim();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      last = cause ?? (err instanceof Error ? err.message : String(err));
    }
    if (Date.now() >= deadline) throw new Error(`${url} not ready after ${Math.round(timeoutMs / 1000)} s (last: ${last})`);
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
}
