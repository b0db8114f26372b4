// `moltbot token`, the implementation: loaded by commands/token.ts only when a command runs.
import { readFileSync } from "node:fs";
import type { ArgumentsCamelCase } from "yargs";
import { SignJWT } from "jose";
import { loadConfig, type LoadedConfig } from "../../config/load.js";
import { parseDuration } from "../../config/units.js";
import { MoltbotError } from "../../errors.js";
import { ApiKeyStore, apiKeyStorePath, type ApiKeyRecord } from "../../auth/api-keys.js";
import { describeKeyStoreMarker } from "../../auth/key-store-marker.js";
import { SCOPES } from "../../auth/principal.js";
import { recordCliAction } from "../../audit/settings.js";
import { operatorName } from "../operator.js";
import type { TokenCommonArgs, TokenCreateArgs, TokenIssueArgs, TokenRevokeArgs } from "./token.js";

function load(args: TokenCommonArgs): LoadedConfig {
  return loadConfig({ file: args.config, env: process.env, overrides: { data_dir: args["data-dir"] } });
}

function openStore(args: TokenCommonArgs): { store: ApiKeyStore; loaded: LoadedConfig } {
  const loaded = load(args);
  return { store: ApiKeyStore.open(apiKeyStorePath(loaded.dataDir)), loaded };
}

function list_(text: string | undefined): string[] | undefined {
  return text === undefined ? undefined : text.split(/[\s,]+/).filter(Boolean);
}

function scopesOf(text: string): string[] {
  const scopes = list_(text)!;
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0 || unknown.length > 0) throw new MoltbotError("cli_usage", `--scopes: expected some of ${SCOPES.join(", ")}, got '${text}'`);
  return [...new Set(scopes)];
}

function durationMs(option: string, text: string): number {
  try {
    const ms = parseDuration(text);
    if (ms > 0) return ms;
  } catch {
    // the message below says what is expected
  }
  throw new MoltbotError("cli_usage", `--${option}: expected a duration like 30d, 12h or 90m, got '${text}'`);
}

function costLimitOf(v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v) || v < 0) throw new MoltbotError("cli_usage", `--cost-limit: expected a number >= 0, got ${v}`);
  return v;
}

export async function create(args: ArgumentsCamelCase<TokenCreateArgs>): Promise<void> {
  const scopes = scopesOf(args.scopes);
  const ttlMs = args.expires === undefined ? undefined : durationMs("expires", args.expires);
  const { store, loaded } = openStore(args);
  try {
    const { key, record } = store.create({ name: args.name, scopes, models: list_(args.models), costLimit: costLimitOf(args["cost-limit"]), ttlMs });
    await recordCliAction(loaded, { action: "token.create", user: operatorName(), target: record.name, outcome: "ok", detail: `scopes ${record.scopes.join(" ")}${record.expiresAt ? `, expires ${record.expiresAt}` : ""}` });
    if (args.json) return void console.log(JSON.stringify({ key, ...record }));
    console.log(key);
    console.error(`Created API key '${record.name}' (${record.scopes.join(" ")}${record.expiresAt ? `, expires ${record.expiresAt}` : ""}). It is shown once: store it now; only its hash is kept in ${store.file}.`);
    if (!loaded.config.security.api_keys.enabled) console.error("Note: security.api_keys.enabled is false in the config: the server does not accept API keys until it is set.");
  } finally {
    store.close();
  }
}

export async function list(args: ArgumentsCamelCase<TokenCommonArgs>): Promise<void> {
  const { store } = openStore(args);
  try {
    const keys = store.list();
    if (args.json) return void console.log(JSON.stringify(keys));
    if (keys.length === 0) return void console.log("No API keys.");
    const rows = [["NAME", "ID", "SCOPES", "MODELS", "COST LIMIT", "CREATED", "EXPIRES", "STATE"], ...keys.map(row)];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  } finally {
    store.close();
  }
}

function row(k: ApiKeyRecord): string[] {
  const expired = k.expiresAt !== undefined && Date.parse(k.expiresAt) <= Date.now();
  const state = k.revokedAt ? `revoked ${k.revokedAt.slice(0, 19)}Z` : expired ? "expired" : "active";
  return [k.name, k.id, k.scopes.join(" "), k.models?.join(",") ?? "all", k.costLimit === undefined ? "-" : String(k.costLimit), k.createdAt.slice(0, 19) + "Z", k.expiresAt ? k.expiresAt.slice(0, 19) + "Z" : "never", state];
}

export async function revoke(args: ArgumentsCamelCase<TokenRevokeArgs>): Promise<void> {
  const { store, loaded } = openStore(args);
  try {
    if (!store.revoke(args.name)) throw new MoltbotError("cli_usage", `no live API key named '${args.name}' in ${store.file} (see moltbot token list)`);
    await recordCliAction(loaded, { action: "token.revoke", user: operatorName(), target: args.name, outcome: "ok" });
    console.log(`Revoked API key '${args.name}'; a running server refuses it from its next request.`);
  } finally {
    store.close();
  }
}

/** The operator's explicit acceptance of the store as it is now (logged in the audit log). */
export async function resetStore(args: ArgumentsCamelCase<TokenCommonArgs>): Promise<void> {
  const loaded = load(args);
  const store = ApiKeyStore.open(apiKeyStorePath(loaded.dataDir), { acceptStore: true });
  try {
    const now = store.state();
    const lost = store.replaced;
    const what = `${now.keys} keys, ${now.revoked} revoked`;
    await recordCliAction(loaded, { action: "token.reset-store", user: operatorName(), target: store.id, outcome: "ok", detail: lost === undefined ? what : `${what}; replaced ${describeKeyStoreMarker(lost)}` });
    if (lost === undefined) return void console.log(`The API key store ${store.id} in ${store.file} matches its marker (${what}); nothing to accept.`);
    console.log(`Accepted the API key store ${store.id} in ${store.file} (${what}) by '${operatorName()}'; the marker recorded ${describeKeyStoreMarker(lost)}.`);
    if (now.keys > 0) console.error("Revoke again (moltbot token revoke NAME) any key revoked since this copy was made: see moltbot token list.");
  } finally {
    store.close();
  }
}

export async function issue(args: ArgumentsCamelCase<TokenIssueArgs>): Promise<void> {
  const scopes = scopesOf(args.scopes);
  const ttlMs = durationMs("ttl", args.ttl);
  const jwt = load(args).config.security.jwt;
  const alg = jwt?.algorithms.find((a) => a.startsWith("HS"));
  const secret = jwt?.secret ?? (jwt?.secret_file === undefined ? undefined : readSecret(jwt.secret_file));
  if (jwt === undefined || alg === undefined || secret === undefined) {
    throw new MoltbotError("cli_usage", "token issue signs with the server's HS key: the config needs security.jwt with an HS algorithm and secret or secret_file");
  }
  const claims: Record<string, unknown> = { scope: scopes.join(" ") };
  const models = list_(args.models);
  if (models !== undefined) claims.models = models;
  const costLimit = costLimitOf(args["cost-limit"]);
  if (costLimit !== undefined) claims.cost_limit = costLimit;
  const now = Math.floor(Date.now() / 1000);
  let signer = new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT" }).setSubject(args.sub).setIssuedAt(now).setExpirationTime(now + Math.ceil(ttlMs / 1000));
  if (jwt.issuer !== undefined) signer = signer.setIssuer(jwt.issuer);
  if (jwt.audience !== undefined) signer = signer.setAudience(jwt.audience);
  const token = await signer.sign(new TextEncoder().encode(secret));
  console.log(args.json ? JSON.stringify({ token, sub: args.sub, scopes, expires_at: new Date((now + Math.ceil(ttlMs / 1000)) * 1000).toISOString() }) : token);
}

function readSecret(file: string): string {
  try {
    return readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new MoltbotError("config_invalid", `security.jwt.secret_file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}
