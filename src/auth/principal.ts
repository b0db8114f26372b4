// Who a request acts for. Set on every request by the auth hook (src/auth/), read by the
// routes, the pool (a token's `models` and cost cap) and the audit log.

export type PrincipalKind = "jwt" | "api_key" | "anonymous";

export interface Principal {
  /** The JWT `sub`; `key:<name>` for an API key; "anonymous" when auth is off. */
  subject: string;
  kind: PrincipalKind;
  scopes: ReadonlySet<string>;
  /** Pool entries this principal may use (a token's `models` claim); undefined: every entry. */
  models?: readonly string[] | undefined;
  /** Monthly cost cap of this subject, kept in the ledger beside the entries'; undefined: none. */
  costLimit?: number | undefined;
}

/** Scopes the routes ask for. */
export const SCOPES = ["inference", "admin", "metrics"] as const;
export type Scope = (typeof SCOPES)[number];

/** The principal of a server without authentication (it binds to loopback only). */
export const ANONYMOUS: Principal = { subject: "anonymous", kind: "anonymous", scopes: new Set(SCOPES) };

declare module "fastify" {
  interface FastifyRequest {
    /** Who the request acts for: set by the auth hook (src/auth/server-auth.ts) before any route runs; null only for a request refused before it (a malformed URL). */
    principal: Principal | null;
  }
}
