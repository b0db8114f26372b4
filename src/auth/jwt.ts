// Bearer-token authentication: JWTs verified with `jose` (a well-kept implementation of JWS/JWT;
// signature checks, algorithm allow-lists and claim checks are exactly what not to hand-write),
// and, when a store is given, API keys (`mb_...`, api-keys.ts). The server's auth hook and the
// `moltbot/auth` library export are this one class.
//
// Fail closed everywhere: the algorithm comes from the allow-list, never from the token alone;
// `exp` is required; a token over maxTokenBytes is refused before it is parsed; every refusal is
// `invalid_token` with a reason that names the claim at fault but never echoes the token.
import { createPublicKey, type KeyObject } from "node:crypto";
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JSONWebKeySet } from "jose";
import { MoltbotError } from "../errors.js";
import type { Principal } from "./principal.js";

export const JWT_ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** API keys are told from JWTs by this prefix (a JWT starts with "eyJ"). */
export const API_KEY_PREFIX = "mb_";

/** What checks an API key (api-keys.ts); throws `invalid_token` for an unknown, revoked or expired key. */
export interface ApiKeyVerifier {
  verify(key: string): Principal;
}

export interface JWTAuthOptions {
  /** HMAC secret for HS256/384/512. */
  secretKey?: string | Uint8Array;
  /** PEM (SPKI) public key, or a KeyObject, for RS*, PS*, ES*, EdDSA. */
  publicKey?: string | KeyObject;
  /** A JWKS document of public keys (a token's `kid` picks one). */
  jwks?: JSONWebKeySet;
  /** The one accepted algorithm (or use `algorithms`). Default: HS256 with a secret, else required. */
  algorithm?: JwtAlgorithm;
  /** Accepted algorithms; tokens of any other `alg` (including `none`) are refused. */
  algorithms?: readonly JwtAlgorithm[];
  /** Required `iss`. */
  issuer?: string;
  /** Required `aud` (one of the token's audiences). */
  audience?: string;
  /** Tolerance on `exp` and `nbf`, in seconds. Default 30. */
  clockSkewS?: number;
  /** Longest token accepted, in bytes. Default 8192. */
  maxTokenBytes?: number;
  /** Also accept API keys (`mb_...`) checked by this store. */
  apiKeys?: ApiKeyVerifier;
  /** Source of "now" for `exp`/`nbf` (tests move it). */
  clock?: () => Date;
}

/** The headers of a Fastify/Express/node:http request (a plain object) or of a fetch Request (Headers). */
export interface RequestLike {
  headers: Record<string, string | string[] | undefined> | { get(name: string): string | null };
  principal?: Principal | null;
}
/** A Fastify reply (`header`) or a node:http/Express response (`setHeader`). */
export interface ReplyLike {
  header?(name: string, value: string): unknown;
  setHeader?(name: string, value: string): unknown;
}

/** Checks a request's token and scopes; sets `request.principal`. A Fastify preHandler as is. */
export type TokenGuard = (request: RequestLike, reply?: ReplyLike) => Promise<Principal>;

const DEFAULT_MAX_TOKEN_BYTES = 8192;
const DEFAULT_CLOCK_SKEW_S = 30;

type KeyInput = Uint8Array | KeyObject | ReturnType<typeof createLocalJWKSet>;

export class JWTAuth {
  readonly algorithms: readonly JwtAlgorithm[];
  readonly #key: KeyInput | undefined;
  readonly #opts: JWTAuthOptions;
  readonly #maxTokenBytes: number;

  constructor(opts: JWTAuthOptions) {
    const sources = (["secretKey", "publicKey", "jwks"] as const).filter((k) => opts[k] !== undefined);
    if (sources.length > 1) throw new TypeError(`JWTAuth: give one of secretKey, publicKey, jwks (got ${sources.join(", ")})`);
    if (sources.length === 0 && opts.apiKeys === undefined) throw new TypeError("JWTAuth: give a key (secretKey, publicKey or jwks) or an API key store");
    const algorithms = opts.algorithms ?? (opts.algorithm !== undefined ? [opts.algorithm] : opts.secretKey !== undefined ? (["HS256"] as const) : []);
    for (const a of algorithms) if (!(JWT_ALGORITHMS as readonly string[]).includes(a)) throw new TypeError(`JWTAuth: unknown algorithm ${String(a)}`);
    const hmac = algorithms.filter((a) => a.startsWith("HS"));
    if (sources.length > 0) {
      if (algorithms.length === 0) throw new TypeError("JWTAuth: name the accepted algorithms (algorithm or algorithms)");
      // One kind of key per instance: a public key must never double as an HMAC secret
      // (algorithm confusion), so HS* and public-key algorithms are not mixed.
      if (hmac.length > 0 && hmac.length < algorithms.length) throw new TypeError("JWTAuth: HS* and public-key algorithms need different keys; list one kind");
      if ((hmac.length > 0) !== (opts.secretKey !== undefined)) throw new TypeError(`JWTAuth: algorithms ${algorithms.join(", ")} do not fit the ${sources[0]} given (HS* take secretKey, others a public key)`);
    }
    this.algorithms = [...algorithms];
    this.#opts = opts;
    this.#maxTokenBytes = opts.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES;
    if (opts.secretKey !== undefined) {
      const secret = typeof opts.secretKey === "string" ? new TextEncoder().encode(opts.secretKey) : opts.secretKey;
      if (secret.byteLength === 0) throw new TypeError("JWTAuth: secretKey is empty");
      this.#key = secret;
    } else if (opts.publicKey !== undefined) {
      this.#key = typeof opts.publicKey === "string" ? createPublicKey(opts.publicKey) : opts.publicKey;
      if (this.#key.type !== "public") throw new TypeError(`JWTAuth: publicKey is a ${this.#key.type} key; give the public key`);
    } else if (opts.jwks !== undefined) {
      this.#key = createLocalJWKSet(opts.jwks);
    }
  }

  /** The principal a token stands for; throws MoltbotError `invalid_token` with the reason. */
  async verify(token: string): Promise<Principal> {
    if (Buffer.byteLength(token) > this.#maxTokenBytes) throw invalid(`the token is longer than ${this.#maxTokenBytes} bytes`);
    if (token.startsWith(API_KEY_PREFIX)) {
      if (!this.#opts.apiKeys) throw invalid("API keys are not accepted by this server");
      return this.#opts.apiKeys.verify(token);
    }
    const key = this.#key;
    if (key === undefined) throw invalid("JWTs are not accepted by this server (no key configured)");
    let payload: JWTPayload;
    try {
      const options = {
        algorithms: [...this.algorithms],
        clockTolerance: this.#opts.clockSkewS ?? DEFAULT_CLOCK_SKEW_S,
        requiredClaims: ["exp"],
        ...(this.#opts.issuer === undefined ? {} : { issuer: this.#opts.issuer }),
        ...(this.#opts.audience === undefined ? {} : { audience: this.#opts.audience }),
        ...(this.#opts.clock === undefined ? {} : { currentDate: this.#opts.clock() }),
      };
      // jose's overloads want the key and the resolver apart.
      payload = (typeof key === "function" ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options)).payload;
    } catch (err) {
      throw invalid(reasonOf(err), err);
    }
    return principalOf(payload);
  }

  /** The bearer token of a request (throws `invalid_token` when absent or malformed), then `verify`. */
  async authenticate(request: RequestLike): Promise<Principal> {
    return this.verify(bearerToken(request));
  }

  /**
   * A guard for routes needing `scopes` (all of them): sets `request.principal` and resolves
   * to it, or throws a MoltbotError (`invalid_token` 401, `insufficient_scope` 403, with
   * `status`) after setting `WWW-Authenticate` on `reply` when one is given. Usable as a
   * Fastify `preHandler`/`onRequest` hook, or awaited from any other framework's handler.
   */
  requireToken(opts: { scopes?: readonly string[] } = {}): TokenGuard {
    const scopes = [...(opts.scopes ?? [])];
    return async (request, reply) => {
      try {
        const principal = await this.authenticate(request);
        requireScopes(principal, scopes);
        request.principal = principal;
        return principal;
      } catch (err) {
        if (reply) challenge(reply, err);
        throw err;
      }
    };
  }
}

/** Throws `insufficient_scope` unless the principal holds every scope. */
export function requireScopes(principal: Principal, scopes: readonly string[]): void {
  const missing = scopes.filter((s) => !principal.scopes.has(s));
  if (missing.length > 0) {
    throw new MoltbotError("insufficient_scope", `the token lacks scope${missing.length > 1 ? "s" : ""} ${missing.map((s) => `'${s}'`).join(", ")} needed here`, { param: missing.join(" ") });
  }
}

/** Sets RFC 6750's `WWW-Authenticate` for an auth refusal (anything else: nothing). */
export function challenge(reply: ReplyLike, err: unknown): void {
  const value = challengeFor(err);
  if (value === undefined) return;
  if (typeof reply.header === "function") reply.header("www-authenticate", value);
  else if (typeof reply.setHeader === "function") reply.setHeader("www-authenticate", value);
}

export function challengeFor(err: unknown): string | undefined {
  if (!(err instanceof MoltbotError)) return undefined;
  if (err.code === "invalid_token") return `Bearer realm="moltbot", error="invalid_token"`;
  if (err.code === "insufficient_scope") return `Bearer realm="moltbot", error="insufficient_scope", scope="${err.param ?? ""}"`;
  return undefined;
}

/** The token of `Authorization: Bearer <token>`; `invalid_token` when absent or malformed. */
export function bearerToken(request: RequestLike): string {
  const h = request.headers;
  const raw = typeof (h as { get?: unknown }).get === "function" ? (h as { get(n: string): string | null }).get("authorization") : (h as Record<string, string | string[] | undefined>).authorization;
  if (raw === undefined || raw === null || raw === "") throw invalid("no Authorization: Bearer token was sent");
  if (typeof raw !== "string") throw invalid("more than one Authorization header was sent");
  // RFC 6750: "Bearer" (any case), one or more spaces, then b64token characters only.
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i.exec(raw);
  if (!m) throw invalid("the Authorization header is not of the form 'Bearer <token>'");
  return m[1]!;
}

function invalid(reason: string, cause?: unknown): MoltbotError {
  return new MoltbotError("invalid_token", `invalid token: ${reason}`, cause === undefined ? undefined : { cause });
}

/** jose's refusal, as a reason that names the claim but never the token. */
function reasonOf(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return "the token has expired (exp)";
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "nbf") return "the token is not valid yet (nbf)";
    if (err.claim === "exp" && err.reason === "missing") return "the token has no exp claim";
    return `claim '${err.claim}' ${err.reason === "missing" ? "is missing" : "does not match"}`;
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "the signature does not verify";
  if (err instanceof joseErrors.JWKSNoMatchingKey) return "no key of the key set matches the token";
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return "several keys of the key set match the token";
  if (err instanceof joseErrors.JOSENotSupported) return "the token uses an unsupported algorithm or key";
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return "the token is malformed";
  if (err instanceof TypeError) return "the token does not fit the configured key";
  return "the token cannot be verified";
}

/** The principal of a verified payload: `sub`, scopes from `scope` and/or `scopes`, `models`, `cost_limit`. */
function principalOf(p: JWTPayload): Principal {
  if (typeof p.sub !== "string" || p.sub === "") throw invalid("the token has no sub claim");
  const scopes = new Set<string>();
  if (p.scope !== undefined) {
    if (typeof p.scope !== "string") throw invalid("claim 'scope' must be a space-separated string");
    for (const s of p.scope.split(" ")) if (s !== "") scopes.add(s);
  }
  if (p.scopes !== undefined) {
    if (!isStringArray(p.scopes)) throw invalid("claim 'scopes' must be an array of strings");
    for (const s of p.scopes) scopes.add(s);
  }
  let models: string[] | undefined;
  if (p.models !== undefined) {
    if (!isStringArray(p.models)) throw invalid("claim 'models' must be an array of pool entry names");
    models = p.models;
  }
  let costLimit: number | undefined;
  if (p.cost_limit !== undefined) {
    if (typeof p.cost_limit !== "number" || !Number.isFinite(p.cost_limit) || p.cost_limit < 0) throw invalid("claim 'cost_limit' must be a number >= 0");
    costLimit = p.cost_limit;
  }
  return { subject: p.sub, kind: "jwt", scopes, models, costLimit };
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}
