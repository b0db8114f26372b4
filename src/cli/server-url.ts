// Which server a client command (`status`, `models`) talks to (--url, else $MOLTBOT_URL, else
// the config's server.host/port), and how: its token, its CA, one request. Light on purpose: the config loader (TypeBox, YAML) is imported
// only when the URL has to come from the config.
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { MoltbotError } from "../errors.js";

/** The two options every client command shares, for its definition. */
export const URL_OPTION = {
  type: "string",
  requiresArg: true,
  describe: "server to ask (default: $MOLTBOT_URL, else server.host/port from the config, else http://127.0.0.1:8080)",
} as const;
export const CONFIG_OPTION = {
  type: "string",
  requiresArg: true,
  describe: "moltbot.yaml giving the default URL (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)",
} as const;

export const CA_FILE_OPTION = {
  type: "string",
  requiresArg: true,
  describe: "PEM CA certificate(s) to trust for an https:// server, beside Node's bundled roots (default: $MOLTBOT_CA_FILE; NODE_EXTRA_CA_CERTS works too)",
} as const;

let extraCa: string[] | undefined;

/** --ca-file, else $MOLTBOT_CA_FILE: read once per command; every request then trusts it (httpsOptions). */
export function useCaFile(args: { "ca-file"?: string }): void {
  const file = args["ca-file"] ?? (process.env.MOLTBOT_CA_FILE || undefined);
  if (file === undefined) return;
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw new MoltbotError("cli_usage", `${args["ca-file"] === undefined ? "MOLTBOT_CA_FILE" : "option --ca-file"}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  // `ca` replaces the trust store: keep the bundled roots beside the given CA.
  extraCa = [...rootCertificates, pem];
}

/** TLS options for node:https requests to the server. */
export function httpsOptions(): { ca?: string[] } {
  return extraCa === undefined ? {} : { ca: extraCa };
}

export const TOKEN_OPTION = {
  type: "string",
  requiresArg: true,
  describe: "Bearer token (JWT or mb_ API key) for a server with auth (default: $MOLTBOT_TOKEN)",
} as const;

/** The Authorization header for --token, else $MOLTBOT_TOKEN; none when neither is set. */
export function authHeader(args: { token?: string }): Record<string, string> {
  const token = args.token ?? process.env.MOLTBOT_TOKEN;
  return token === undefined || token === "" ? {} : { authorization: `Bearer ${token.trim()}` };
}

export function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const u = new URL(text);
  return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
}

/** --url, else $MOLTBOT_URL, else the config's server.host/port (only then is the config read). */
export async function serverUrl(args: { url?: string; config?: string }): Promise<string> {
  if (args.url !== undefined) return args.url;
  const env = process.env.MOLTBOT_URL;
  if (env !== undefined && env !== "") {
    if (!isHttpUrl(env)) throw new MoltbotError("cli_usage", `MOLTBOT_URL: expected an http:// or https:// URL, got '${env}'`);
    return env;
  }
  const { loadConfig } = await import("../config/load.js");
  const { server, security } = loadConfig({ file: args.config, env: process.env }).config;
  // A server listening on every interface is reached on loopback from here.
  const host = server.host === "0.0.0.0" ? "127.0.0.1" : server.host === "::" ? "::1" : server.host;
  return `${security.tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${server.port}`;
}

/** `path` (no leading slash) under the server's base URL, which may itself carry a path. */
export function endpoint(base: string, path: string): string {
  return new URL(path, base.endsWith("/") ? base : `${base}/`).toString();
}

/**
 * One request to the server, answered with its status and body text. node:http(s) rather than
 * fetch: fetch's implementation (undici) loads on the first call and its keep-alive timer holds
 * the process after the answer. No agent: one connection per request, closed after it, so
 * nothing outlives the command. HTTPS trusts `--ca-file`.
 */
export async function requestServer(url: string, opts: { method: "GET" | "POST"; headers: Record<string, string>; payload?: string | undefined; signal: AbortSignal }): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const { request: send } = u.protocol === "https:" ? await import("node:https") : await import("node:http");
  const headers = { ...opts.headers, ...(opts.payload === undefined ? {} : { "content-length": String(Buffer.byteLength(opts.payload)) }) };
  return await new Promise((resolve, reject) => {
    const req = send(u, { method: opts.method, agent: false, signal: opts.signal, headers, ...httpsOptions() }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(opts.payload);
  });
}
