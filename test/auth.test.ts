// Authentication end to end: a real server with RS256 JWTs (issuer and audience required) and
// API keys, attacked with real requests (the `openai` client where it fits, fetch for raw
// headers); API keys made and revoked by the real CLI in a child process; the failure to start
// on an unreadable key; `moltbot token issue`; and the moltbot/auth library example.
import { after, before, describe, mock, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import OpenAI from "openai";
import { SignJWT, UnsecuredJWT, type JWTPayload } from "jose";
import { makeRepository, startServer, tempDir, type RunningServer } from "./helpers/fixtures.js";
import { ApiKeyStore, apiKeyStorePath } from "../src/auth/api-keys.js";
import { JWTAuth } from "../src/auth/jwt.js";
import { ledgerPath, openSqliteLedger } from "../src/ledger/sqlite-ledger.js";
import { subjectLedgerKey } from "../src/pool/model-pool.js";
import { loadConfig } from "../src/config/load.js";
import { ConfigReloader } from "../src/server/reload.js";
import { openServerAuth } from "../src/auth/server-auth.js";

const run = promisify(execFile);
const ROOT = path.resolve(fileURLToPath(import.meta.url), "../../..");
const CLI = path.join(ROOT, "bin", "moltbot");
const ISSUER = "https://id.example.com";
const AUDIENCE = "moltbot";

const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
const other = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });

let repo: string;
let srv: RunningServer;
let dataDir: string;

/** An RS256 token for the server; `claims` override the defaults (scope inference, 5 min). */
function sign(claims: JWTPayload = {}, opts: { key?: crypto.KeyObject; sub?: string | null; exp?: number | null } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ scope: "inference", ...claims }).setProtectedHeader({ alg: "RS256" }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt(now);
  if (opts.sub !== null) jwt = jwt.setSubject(opts.sub ?? "alice");
  if (opts.exp !== null) jwt = jwt.setExpirationTime(opts.exp ?? now + 300);
  return jwt.sign(opts.key ?? privateKey);
}

async function get(route: string, authorization?: string): Promise<{ status: number; challenge: string | null; text: string; code: string | undefined }> {
  const res = await fetch(srv.url + route, { headers: authorization === undefined ? {} : { authorization } });
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    code = undefined;
  }
  return { status: res.status, challenge: res.headers.get("www-authenticate"), text, code };
}

/** A refused token: 401, the challenge, the reason, and the token nowhere in the answer. */
async function refused(token: string, reason: RegExp, route = "/v1/models"): Promise<void> {
  const r = await get(route, `Bearer ${token}`);
  assert.equal(r.status, 401, r.text);
  assert.equal(r.code, "invalid_token");
  assert.match(r.challenge ?? "", /^Bearer realm="moltbot", error="invalid_token"$/);
  assert.match(r.text, reason);
  assert.ok(!r.text.includes(token.slice(-20)), "the answer never echoes the token");
}

const client = (apiKey: string) => new OpenAI({ baseURL: srv.baseURL, apiKey, maxRetries: 0 });
const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { cwd: dataDir, env: { ...process.env, MOLTBOT_CONFIG: "", MOLTBOT_TOKEN: "" } });

before(async () => {
  repo = await makeRepository([{ name: "tiny", version: "v1", parallel: 2, contextSize: 256 }]);
  const keyDir = await tempDir("moltbot-auth-");
  const pubFile = path.join(keyDir, "jwt.pub");
  await writeFile(pubFile, publicPem);
  dataDir = path.join(keyDir, "data");
  srv = await startServer(repo, {
    dataDir,
    config: {
      model_pool: [
        { name: "chat", model: "tiny", type: "llm" },
        { name: "other", model: "tiny", type: "llm" },
        // 0.01 per token, so a token's cost_limit of 0.3 covers about 30 tokens.
        { name: "priced", model: "tiny", type: "llm", pricing: { input_per_1k: 10, output_per_1k: 10 }, strategy: { fallback: false } },
      ],
      security: { jwt: { algorithms: ["RS256"], public_key_file: pubFile, issuer: ISSUER, audience: AUDIENCE, clock_skew: "30s" }, api_keys: { enabled: true } },
    },
  });
});
after(async () => srv?.close());

describe("routes and scopes", () => {
  test("health probes stay open; security.jwt is enforced, not reported as pending", async () => {
    assert.equal((await get("/healthz")).status, 200);
    assert.equal((await get("/readyz")).status, 200);
    assert.ok(srv.lines().some((l) => /Authentication on: JWT \(RS256\) and API keys/.test(l)));
    assert.ok(!srv.lines().some((l) => /security.* is set but not yet enforced/.test(l)));
  });

  test("no token: 401 with the challenge on /v1, /infer, /admin, /metrics and unknown paths", async () => {
    for (const route of ["/v1/models", "/admin/status", "/admin/models", "/metrics", "/no/such/route"]) {
      const r = await get(route);
      assert.equal(r.status, 401, route);
      assert.equal(r.code, "invalid_token", route);
      assert.equal(r.challenge, 'Bearer realm="moltbot", error="invalid_token"', route);
    }
    const infer = await fetch(`${srv.url}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "hi" }) });
    assert.equal(infer.status, 401);
  });

  test("a token with scope inference runs chat completions through the openai client", async () => {
    const c = client(await sign());
    const r = await c.chat.completions.create({ model: "chat", messages: [{ role: "user", content: "hello" }], max_tokens: 3 });
    assert.equal(r.model, "chat");
    assert.deepEqual((await c.models.list()).data.map((m) => m.id), ["chat", "other", "priced"]);
  });

  test("a valid token without the route's scope: 403 insufficient_scope naming it", async () => {
    const adminOnly = await sign({ scope: "admin" });
    await assert.rejects(client(adminOnly).chat.completions.create({ model: "chat", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError);
      assert.equal(err.code, "insufficient_scope");
      assert.equal(err.headers.get("www-authenticate"), 'Bearer realm="moltbot", error="insufficient_scope", scope="inference"');
      return true;
    });
    const inferenceOnly = await sign();
    const r = await get("/admin/status", `Bearer ${inferenceOnly}`);
    assert.equal(r.status, 403);
    assert.equal(r.code, "insufficient_scope");
    assert.equal((await get("/admin/status", `Bearer ${adminOnly}`)).status, 200);
    assert.equal((await get("/metrics", `Bearer ${adminOnly}`)).status, 403);
    assert.equal((await get("/metrics", `Bearer ${await sign({ scope: undefined, scopes: ["metrics"] })}`)).status, 200, "scopes as an array");
  });

  test("the admin API logs the token's subject as who asked", async () => {
    const res = await fetch(`${srv.url}/admin/models/tiny/activate`, {
      method: "POST",
      headers: { authorization: `Bearer ${await sign({ scope: "admin inference" }, { sub: "ops-bob" })}`, "content-type": "application/json", "x-moltbot-user": "mallory" },
      body: JSON.stringify({ version: "v1" }),
    });
    assert.equal(res.status, 200, await res.text());
    assert.ok(srv.lines().some((l) => /requested by ops-bob \(from /.test(l)));
    assert.ok(!srv.lines().some((l) => /mallory/.test(l)), "the header is not believed when auth is on");
  });
});

describe("attacks on the JWT check", () => {
  test("alg none", async () => {
    const token = new UnsecuredJWT({ scope: "inference admin" }).setSubject("alice").setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime("5m").encode();
    await refused(token, /algorithm is not accepted|malformed/);
  });

  test("algorithm confusion: HS256 signed with the RS public key as its secret", async () => {
    const token = await new SignJWT({ scope: "inference" }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime("5m").sign(new TextEncoder().encode(publicPem));
    await refused(token, /algorithm is not accepted/);
  });

  test("a wrong signature (another key), and a payload altered after signing", async () => {
    await refused(await sign({}, { key: other.privateKey }), /signature does not verify/);
    const [h, , s] = (await sign()).split(".");
    const forged = Buffer.from(JSON.stringify({ sub: "alice", scope: "inference admin", iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 })).toString("base64url");
    await refused(`${h}.${forged}.${s}`, /signature does not verify/);
  });

  test("expired beyond the clock skew; within it still accepted", async () => {
    const now = Math.floor(Date.now() / 1000);
    await refused(await sign({}, { exp: now - 120 }), /expired/);
    assert.equal((await get("/v1/models", `Bearer ${await sign({}, { exp: now - 5 })}`)).status, 200);
  });

  test("not yet valid (nbf)", async () => {
    await refused(await sign({ nbf: Math.floor(Date.now() / 1000) + 120 }), /not valid yet/);
  });

  test("wrong audience or issuer; missing exp or sub", async () => {
    const now = Math.floor(Date.now() / 1000);
    await refused(await new SignJWT({ scope: "inference" }).setProtectedHeader({ alg: "RS256" }).setSubject("a").setIssuer(ISSUER).setAudience("someone-else").setExpirationTime(now + 60).sign(privateKey), /'aud'/);
    await refused(await new SignJWT({ scope: "inference" }).setProtectedHeader({ alg: "RS256" }).setSubject("a").setIssuer("https://evil.example").setAudience(AUDIENCE).setExpirationTime(now + 60).sign(privateKey), /'iss'/);
    await refused(await sign({}, { exp: null }), /no exp claim/);
    await refused(await sign({}, { sub: null }), /no sub claim/);
  });

  test("malformed Authorization headers", async () => {
    const good = await sign();
    for (const header of ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", `Bearer ${good} extra`, `Token ${good}`, "Bearer not.a.jwt", "Bearer e30.e30.", "Bearer %%%"]) {
      const r = await get("/v1/models", header);
      assert.equal(r.status, 401, header);
      assert.equal(r.code, "invalid_token", header);
    }
  });

  test("an oversize token is refused before it is parsed", async () => {
    const huge = await sign({ pad: "x".repeat(9000) });
    await refused(huge, /longer than 8192 bytes/);
  });
});

describe("the models claim", () => {
  test("limits the pool entries a token may use: 403 model_not_allowed naming the entry", async () => {
    const c = client(await sign({ models: ["chat"] }));
    await assert.rejects(c.chat.completions.create({ model: "other", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError);
      assert.equal(err.code, "model_not_allowed");
      assert.match(err.message, /'other'/);
      return true;
    });
    assert.deepEqual((await c.models.list()).data.map((m) => m.id), ["chat"], "only the allowed entries are listed");
    await assert.rejects(c.models.retrieve("other"), (err: unknown) => err instanceof OpenAI.PermissionDeniedError && err.code === "model_not_allowed");
    const r = await c.completions.create({ model: "chat", prompt: "a", max_tokens: 2 });
    assert.equal(r.model, "chat");
  });

  test("without a model named, the first entry the token may use serves", async () => {
    const res = await fetch(`${srv.url}/infer`, {
      method: "POST",
      headers: { authorization: `Bearer ${await sign({ models: ["other"] })}`, "content-type": "application/json" },
      body: JSON.stringify({ input: "hello", max_tokens: 2 }),
    });
    const body = (await res.json()) as { model: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.model, "other", "not chat, the pool's first entry");
  });

  test("a models claim of the wrong type is an invalid token", async () => {
    await refused(await sign({ models: "chat" }), /'models' must be an array/);
  });
});

describe("a subject's monthly cost cap (cost_limit claim)", () => {
  test("reserved before and settled after each request in the ledger: concurrent requests never overspend", async () => {
    const c = client(await sign({ cost_limit: 0.3 }, { sub: "carol" }));
    const ask = () => c.completions.create({ model: "priced", prompt: "hello there", max_tokens: 8, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const results = await Promise.allSettled(Array.from({ length: 6 }, ask));
    const served = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<OpenAI.Completion>).value);
    const refusals = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as InstanceType<typeof OpenAI.APIError>);
    assert.ok(served.length >= 1 && refusals.length >= 1, `served ${served.length}, refused ${refusals.length}`);
    for (const e of refusals) {
      assert.equal(e.status, 429);
      assert.equal(e.code, "budget_exceeded");
      assert.match(e.message, /'carol' has reached its monthly cost limit \(0\.3\)/);
    }
    const cost = served.reduce((sum, r) => sum + (r.usage!.prompt_tokens + r.usage!.completion_tokens) * 0.01, 0);
    const ledger = openSqliteLedger(ledgerPath(dataDir));
    try {
      const row = ledger.status().find((x) => x.entry === subjectLedgerKey("carol"))!;
      assert.ok(Math.abs(row.spent - cost) < 1e-9, `spent ${row.spent}, served cost ${cost}`);
      assert.ok(row.spent <= 0.3, "never over the cap");
      assert.equal(row.reserved, 0, "every reservation settled");
    } finally {
      ledger.close();
    }
  });
});

describe("API keys", () => {
  test("created by the CLI, used as a Bearer token, revoked by the CLI: refused at the next request", async () => {
    const created = await cli("token", "create", "--data-dir", dataDir, "--name", "ci", "--scopes", "inference", "--expires", "30d");
    const key = created.stdout.trim();
    assert.match(key, /^mb_[0-9a-f]{12}_[\w-]{43}$/);
    assert.match(created.stderr, /shown once/);
    const c = client(key);
    assert.equal((await c.chat.completions.create({ model: "chat", messages: [{ role: "user", content: "hi" }], max_tokens: 2 })).model, "chat");
    assert.equal((await get("/admin/status", `Bearer ${key}`)).status, 403, "scope inference only");

    const listed = JSON.parse((await cli("token", "list", "--data-dir", dataDir, "--json")).stdout) as Array<{ name: string; scopes: string[]; expiresAt: string }>;
    assert.deepEqual(listed.map((k) => [k.name, k.scopes]), [["ci", ["inference"]]]);
    assert.ok(!JSON.stringify(listed).includes(key.slice(16)), "list never shows the key");

    await cli("token", "revoke", "ci", "--data-dir", dataDir);
    await refused(key, /API key 'ci' was revoked/);
  });

  test("unknown and expired keys are refused", async () => {
    await refused(`mb_000000000000_${"A".repeat(43)}`, /unknown API key/);
    const past = ApiKeyStore.open(apiKeyStorePath(dataDir), { clock: () => new Date(Date.now() - 3_600_000) });
    const { key } = past.create({ name: "old", scopes: ["inference"], ttlMs: 60_000 });
    past.close();
    await refused(key, /API key 'old' has expired/);
  });

  test("keys are compared in constant time: timingSafeEqual on two 32-byte digests", async () => {
    const store = ApiKeyStore.open(apiKeyStorePath(dataDir));
    const { key } = store.create({ name: "timing", scopes: ["inference"], models: ["chat"] });
    store.close();
    const spy = mock.method(crypto, "timingSafeEqual");
    try {
      assert.equal((await get("/v1/models", `Bearer ${key}`)).status, 200);
      const wrong = key.slice(0, -4) + (key.endsWith("AAAA") ? "BBBB" : "AAAA");
      await refused(wrong, /unknown API key/);
      assert.equal(spy.mock.callCount(), 2);
      for (const call of spy.mock.calls) {
        const [a, b] = call.arguments as [Buffer, Buffer];
        assert.equal(a.length, 32);
        assert.equal(b.length, 32);
      }
      assert.deepEqual(spy.mock.calls.map((c) => c.result), [true, false]);
    } finally {
      spy.mock.restore();
    }
  });
});

describe("start-up and the CLI", () => {
  test("a reload never writes the HMAC secret to the log", async () => {
    const dir = await tempDir();
    const yaml = path.join(dir, "moltbot.yaml");
    const write = (jwt: object | undefined) => writeFile(yaml, JSON.stringify({ log: { level: "DEBUG" }, security: jwt === undefined ? {} : { jwt } }));
    await write({ secret: "old-secret-value" });
    const load = { file: yaml, env: {} };
    const started = loadConfig(load).config;
    const reloader = new ConfigReloader({ load, started, pool: srv.server.models, repository: srv.server.repository, log: srv.log });
    await write({ secret: "new-secret-value" });
    assert.deepEqual(reloader.reload().needsRestart, ["security.jwt.secret: (redacted) -> (redacted)"]);
    await write(undefined);
    assert.match(reloader.reload().needsRestart.join("\n"), /^security\.jwt: \{.*"secret":"\(redacted\)".*\} -> \(unset\)$/);
    assert.ok(!srv.lines().some((l) => /old-secret-value|new-secret-value/.test(l)));
  });

  test("key sources: HS256 secret_file, ES256 PEM, EdDSA in a JWKS file", async () => {
    const dir = await tempDir();
    const es = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const ed = crypto.generateKeyPairSync("ed25519");
    await writeFile(path.join(dir, "hs.secret"), "shared-secret-of-enough-length\n");
    await writeFile(path.join(dir, "es.pub"), es.publicKey.export({ type: "spki", format: "pem" }));
    await writeFile(path.join(dir, "jwks.json"), JSON.stringify({ keys: [{ ...ed.publicKey.export({ format: "jwk" }), kid: "k1", alg: "EdDSA" }] }));
    const cases = [
      { jwt: { algorithms: ["HS256"], secret_file: "hs.secret" }, alg: "HS256", key: new TextEncoder().encode("shared-secret-of-enough-length") as Uint8Array | crypto.KeyObject },
      { jwt: { algorithms: ["ES256"], public_key_file: "es.pub" }, alg: "ES256", key: es.privateKey },
      { jwt: { algorithms: ["EdDSA"], jwks_file: "jwks.json" }, alg: "EdDSA", key: ed.privateKey },
    ] as const;
    for (const c of cases) {
      const file = path.join(dir, "moltbot.yaml");
      await writeFile(file, JSON.stringify({ security: { jwt: c.jwt } }));
      const loaded = loadConfig({ file, env: {} });
      const server = openServerAuth(loaded.config, loaded.dataDir)!;
      const token = await new SignJWT({ scope: "inference" }).setProtectedHeader({ alg: c.alg, kid: "k1" }).setSubject("svc").setExpirationTime("1m").sign(c.key);
      assert.equal((await server.auth.verify(token)).subject, "svc", c.alg);
      await assert.rejects(server.auth.verify(await new SignJWT({}).setProtectedHeader({ alg: "RS256" }).setSubject("svc").setExpirationTime("1m").sign(privateKey)), /algorithm is not accepted/, c.alg);
      server.close();
    }
  });

  test("a configured key that cannot be read fails the start with one clear line", async () => {
    const missing = path.join(await tempDir(), "nope.secret");
    await assert.rejects(
      startServer(repo, { config: { security: { jwt: { algorithms: ["HS256"], secret_file: missing } } } }),
      (err: Error) => {
        assert.equal(err.message, `security.jwt.secret_file: cannot use ${missing} (ENOENT); refusing to start without the key`);
        return true;
      },
    );
  });

  test("status and models send --token or $MOLTBOT_TOKEN; without one the server's refusal is shown", async () => {
    const admin = await sign({ scope: "admin" }, { sub: "ops" });
    const status = await cli("status", "--url", srv.url, "--json", "--token", admin);
    assert.equal((JSON.parse(status.stdout) as { reachable: boolean }).reachable, true);
    const models = await run(process.execPath, [CLI, "models", "list", "--url", srv.url, "--json"], { env: { ...process.env, MOLTBOT_TOKEN: admin } });
    assert.equal((JSON.parse(models.stdout) as { models: Array<{ name: string }> }).models[0]!.name, "tiny");
    await assert.rejects(cli("models", "list", "--url", srv.url), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr, /invalid token: no Authorization: Bearer token was sent/);
      return true;
    });
  });

  test("moltbot token issue signs an HS256 JWT with the configured secret", async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "jwt.secret"), "a-long-enough-shared-secret-for-hs256\n");
    const config = path.join(dir, "moltbot.yaml");
    await writeFile(config, `security:\n  jwt:\n    algorithms: [HS256]\n    secret_file: jwt.secret\n    audience: moltbot\n`);
    const { stdout } = await run(process.execPath, [CLI, "token", "issue", "--config", config, "--sub", "alice", "--scopes", "inference,admin", "--ttl", "1h", "--models", "chat"]);
    const auth = new JWTAuth({ secretKey: "a-long-enough-shared-secret-for-hs256", algorithm: "HS256", audience: "moltbot" });
    const p = await auth.verify(stdout.trim());
    assert.equal(p.subject, "alice");
    assert.deepEqual([...p.scopes], ["inference", "admin"]);
    assert.deepEqual(p.models, ["chat"]);
  });

  test("the moltbot/auth example runs as documented", async () => {
    const { stdout } = await run(process.execPath, [path.join(ROOT, "examples", "auth-fastify.mjs")], { cwd: ROOT });
    const lines = stdout.trim().split("\n");
    assert.match(lines[0]!, /^no token: 401 Bearer realm="moltbot", error="invalid_token" /);
    assert.match(lines[1]!, /^scope admin only: 403 .*insufficient_scope/);
    assert.match(lines[2]!, /^scope inference: 200 +\{"hello":"alice","scopes":\["inference"\]\}$/);
    assert.match(lines[3]!, /^plain guard, scope inference: 403 /);
    assert.match(lines[4]!, /^plain guard, scope admin: 200 +\{"admin":"alice"\}$/);
  });
});
