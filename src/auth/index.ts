// `moltbot/auth`: the server's token checks as a library, for services beside Moltbot that take
// the same tokens. `new JWTAuth({ secretKey, algorithm: "HS256" })`, then
// `auth.requireToken({ scopes: ["inference"] })` as a Fastify preHandler, or awaited as
// `(request) => Promise<Principal>` from any other framework. README, "Library: moltbot/auth".
export { JWTAuth, JWT_ALGORITHMS, API_KEY_PREFIX, bearerToken, challengeFor, requireScopes } from "./jwt.js";
export type { ApiKeyVerifier, JWTAuthOptions, JwtAlgorithm, ReplyLike, RequestLike, TokenGuard } from "./jwt.js";
export { ANONYMOUS, SCOPES } from "./principal.js";
export type { Principal, PrincipalKind, Scope } from "./principal.js";
export { MoltbotError } from "../errors.js";
