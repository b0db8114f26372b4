// Moltbot's token checks in your own Fastify service: the same code the server runs.
// Run it after `npm run build`:   node examples/auth-fastify.mjs
// It starts a service on a free port, calls it without a token, with a token lacking the
// scope, and with a good one, prints each answer, and exits.
import Fastify from "fastify";
import { SignJWT } from "jose";
import { JWTAuth } from "moltbot/auth";

const secret = process.env.JWT_SECRET ?? "change-me-to-32-random-bytes-or-more";
const auth = new JWTAuth({ secretKey: secret, algorithm: "HS256" });

const app = Fastify();
// As a Fastify preHandler: 401/403 with WWW-Authenticate before the handler runs.
app.get("/hello", { preHandler: auth.requireToken({ scopes: ["inference"] }) }, async (request) => ({
  hello: request.principal.subject,
  scopes: [...request.principal.scopes],
}));
// As a plain function, from any framework: resolves to the Principal or throws (err.status, err.code).
const guard = auth.requireToken({ scopes: ["admin"] });
app.get("/plain", async (request, reply) => {
  try {
    const principal = await guard(request);
    return { admin: principal.subject };
  } catch (err) {
    return reply.code(err.status ?? 500).send({ error: err.code, message: err.message });
  }
});

await app.listen({ port: 0, host: "127.0.0.1" });
const base = `http://127.0.0.1:${app.server.address().port}`;
const token = (scope) =>
  new SignJWT({ scope }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setIssuedAt().setExpirationTime("5m").sign(new TextEncoder().encode(secret));

for (const [label, path, bearer] of [
  ["no token", "/hello", undefined],
  ["scope admin only", "/hello", await token("admin")],
  ["scope inference", "/hello", await token("inference")],
  ["plain guard, scope inference", "/plain", await token("inference")],
  ["plain guard, scope admin", "/plain", await token("admin")],
]) {
  const res = await fetch(base + path, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
  console.log(`${label}: ${res.status} ${res.headers.get("www-authenticate") ?? ""} ${await res.text()}`);
}
await app.close();
