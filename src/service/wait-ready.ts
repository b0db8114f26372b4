// Readiness as systemd's ExecStartPost (or a deploy script) sees it: poll the server's
// GET /readyz, found from the same config the server reads, until it answers 200.
import { get as httpsGet } from "node:https";
import type { MoltbotConfig } from "../config/schema.js";

/** The /readyz URL of a server listening as configured (https:// with security.tls); a wildcard address is asked on loopback. */
export function readyUrl(server: MoltbotConfig["server"], security?: MoltbotConfig["security"]): string {
  if (server.port === 0) throw new Error("server.port is 0 (a free port at each start): set a fixed port so the readiness check and clients can find the server");
  const host = server.host === "0.0.0.0" ? "127.0.0.1" : server.host === "::" ? "::1" : server.host;
  return `${security?.tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${server.port}/readyz`;
}

/** One attempt's own limit: a server that accepts but does not answer in this long counts as not ready. */
const ATTEMPT_MS = 2000;

/**
 * Resolve once `url` answers 200; throw with the last answer (or error) after `timeoutMs`. An
 * attempt is never cut short by the overall deadline (it may overrun it by up to ATTEMPT_MS):
 * cutting it would report our own abort instead of what the server did (refused, 503, ...),
 * and the first fetch of a process alone can take most of a second on a busy machine.
 */
export async function waitReady(url: string, timeoutMs: number, intervalMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  for (;;) {
    try {
      const res = url.startsWith("https:") ? await probeTls(url) : await fetch(url, { signal: AbortSignal.timeout(ATTEMPT_MS) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text().catch(() => "")}`.trim();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
      last = cause ?? (err instanceof Error && err.name === "TimeoutError" ? `no answer within ${ATTEMPT_MS / 1000} s` : err instanceof Error ? err.message : String(err));
    }
    if (Date.now() >= deadline) throw new Error(`${url} not ready after ${Math.round(timeoutMs / 1000)} s (last: ${last})`);
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
}

/**
 * GET over HTTPS without checking the certificate: this probes the server on this host at the
 * address its own config names, sends nothing secret and reads only the status, and a valid
 * certificate may well not name that address (it names the public host) or chain to a CA this
 * process knows. (fetch cannot turn the check off without undici's dispatcher.)
 */
function probeTls(url: string): Promise<{ status: number; text(): Promise<string> }> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { rejectUnauthorized: false, agent: false, signal: AbortSignal.timeout(ATTEMPT_MS) }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: async () => body }));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}
