// The server's side of auth: the JWTAuth and API key store built from `security.jwt` and
// `security.api_keys` (keys read once at start; one that cannot be read fails the start), and the
// onRequest hook that sets `request.principal` and asks each route for its scope.
import { readFileSync } from "node:fs";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { MoltbotConfig } from "../config/schema.js";
import { parseDuration } from "../config/units.js";
import { authConfigured } from "../config/security.js";
import { MoltbotError } from "../errors.js";
import { ApiKeyStore, apiKeyStorePath } from "./api-keys.js";
import { bearerToken, challenge, JWTAuth, requireScopes } from "./jwt.js";
import { ANONYMOUS, type Scope } from "./principal.js";

export interface ServerAuth {
  auth: JWTAuth;
  /** The API key store, when security.api_keys.enabled. */
  keys: ApiKeyStore | undefined;
  /** Whether the metrics route needs scope `metrics`. */
  metricsAuth: boolean;
  close(): void;
}

/** Auth from the config, or undefined when it is off (neither jwt nor api_keys). */
export function openServerAuth(config: MoltbotConfig, dataDir: string, clock?: () => Date): ServerAuth | undefined {
  if (!authConfigured(config)) return undefined;
  const jwt = config.security.jwt;
  const keysOn = config.security.api_keys.enabled;
  const keys = keysOn ? ApiKeyStore.open(apiKeyStorePath(dataDir), clock === undefined ? {} : { clock }) : undefined;
  try {
    const common = { apiKeys: keys, clock, ...(jwt === undefined ? {} : { algorithms: jwt.algorithms, issuer: jwt.issuer, audience: jwt.audience, clockSkewS: parseDuration(jwt.clock_skew) / 1000 }) };
    let auth: JWTAuth;
    if (jwt === undefined) auth = new JWTAuth(common);
    else if (jwt.secret !== undefined) auth = new JWTAuth({ ...common, secretKey: jwt.secret });
    else if (jwt.secret_file !== undefined) auth = new JWTAuth({ ...common, secretKey: readKey("secret_file", jwt.secret_file).trim() });
    else if (jwt.public_key_file !== undefined) auth = new JWTAuth({ ...common, publicKey: readKey("public_key_file", jwt.public_key_file) });
    else if (jwt.jwks_file !== undefined) {
      const text = readKey("jwks_file", jwt.jwks_file);
      let jwks: unknown;
      try {
        jwks = JSON.parse(text);
      } catch (err) {
        throw keyError("jwks_file", jwt.jwks_file, `not JSON: ${(err as Error).message}`);
      }
      if (typeof jwks !== "object" || jwks === null || !Array.isArray((jwks as { keys?: unknown }).keys)) throw keyError("jwks_file", jwt.jwks_file, 'expected a JSON object with a "keys" array');
      auth = wrap("jwks_file", jwt.jwks_file, () => new JWTAuth({ ...common, jwks: jwks as { keys: [] } }));
    } else throw new MoltbotError("config_invalid", "security.jwt: set one of secret, secret_file, public_key_file, jwks_file");
    return { auth, keys, metricsAuth: config.metrics.auth, close: () => keys?.close() };
  } catch (err) {
    keys?.close();
    throw err;
  }
}

function readKey(key: string, file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw keyError(key, file, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  if (text.trim() === "") throw keyError(key, file, "the file is empty");
  return text;
}

function wrap<T>(key: string, file: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw keyError(key, file, (err as Error).message);
  }
}

function keyError(key: string, file: string, why: string): MoltbotError {
  return new MoltbotError("config_invalid", `security.jwt.${key}: cannot use ${file} (${why}); refusing to start without the key`);
}

/** The scope a route needs: null for open routes, "" for any valid token (unknown routes). */
export function scopeOf(routeUrl: string | undefined, metricsPath: string | undefined, metricsAuth: boolean): Scope | "" | null {
  if (routeUrl === "/healthz" || routeUrl === "/readyz") return null;
  if (routeUrl !== undefined && routeUrl === metricsPath) return metricsAuth ? "metrics" : null;
  if (routeUrl === "/infer" || routeUrl?.startsWith("/v1/")) return "inference";
  if (routeUrl?.startsWith("/admin/")) return "admin";
  // A path with no route still needs a valid token: no probing of what exists without one.
  return "";
}

/** The onRequest hook: ANONYMOUS when auth is off; else the token's principal with the route's scope. */
export function authHook(server: ServerAuth | undefined, metricsPath: string | undefined) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (server === undefined) {
      req.principal = ANONYMOUS;
      return;
    }
    // The matched route's pattern, not the raw URL: the scope follows what will actually run.
    const scope = scopeOf(req.routeOptions.url, metricsPath, server.metricsAuth);
    if (scope === null) {
      // Open routes: no token is read (a probe must not depend on the identity provider).
      req.principal = ANONYMOUS_OPEN;
      return;
    }
    try {
      const principal = await server.auth.verify(bearerToken(req));
      // Known before the scope check: a refusal for want of a scope is audited under its subject.
      req.principal = principal;
      if (scope !== "") requireScopes(principal, [scope]);
    } catch (err) {
      challenge(reply, err);
      throw err;
    }
  };
}

/** Who calls an open route (/healthz, /readyz, open metrics) of a server with auth: nobody in particular, and no scopes. */
const ANONYMOUS_OPEN = { ...ANONYMOUS, scopes: new Set<string>() };
