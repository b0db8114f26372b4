// Fail closed: a security setting that cannot be enforced, or a listener beyond loopback with
// no authentication, stops the start with the reason (in process and from `moltbot deploy`);
// security.allow_insecure accepts the open bind, with a warning.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { NOT_YET_ENFORCED, loadConfig } from "../src/config/load.js";
import { authConfigured, checkSecurity, isLoopbackHost } from "../src/config/security.js";
import { makeRepository, startServer, until } from "./helpers/fixtures.js";
import { BIN } from "./helpers/cli.js";


let repo: string;
before(async () => {
  repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
});
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test("loopback: addresses and names that reach only this machine", async () => {
  for (const host of ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"]) assert.equal(await isLoopbackHost(host), true, host);
  for (const host of ["0.0.0.0", "::", "192.0.2.10", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1"]) assert.equal(await isLoopbackHost(host), false, host);
});

test("authConfigured: security.jwt or security.api_keys turns authentication on", () => {
  assert.equal(authConfigured(loadConfig({ env: {} }).config), false);
  assert.equal(authConfigured(loadConfig({ env: {}, overrides: { security: { jwt: { secret: "s3cret-enough-for-a-test" } } } }).config), true);
  assert.equal(authConfigured(loadConfig({ env: {}, overrides: { security: { api_keys: { enabled: true } } } }).config), true);
});

test("a public bind without authentication refuses to start, naming the way out", async () => {
  for (const host of ["0.0.0.0", "::", "192.0.2.10"]) {
    const t0 = Date.now();
    await assert.rejects(startServer(repo, { config: { server: { host } } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, "security_unenforceable", err.message);
      assert.equal(
        err.message,
        `server.host ${host} listens beyond loopback but no authentication is configured (security.jwt or security.api_keys): refusing to serve open to the network; configure authentication, listen on 127.0.0.1, or set security.allow_insecure: true to accept an open server`,
      );
      return true;
    });
    assert.ok(Date.now() - t0 < 2000, "refused before any model loads");
  }
});

test("security.allow_insecure: true accepts the public bind, with a warning", async () => {
  const srv = await startServer(repo, { config: { server: { host: "0.0.0.0" }, security: { allow_insecure: true } } });
  cleanups.push(() => srv.close());
  assert.equal(srv.server.address.host, "0.0.0.0");
  const port = srv.server.address.port;
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  assert.ok(srv.lines().some((l) => /\[WARNING\] \[config\] server\.host 0\.0\.0\.0 listens beyond loopback without authentication \(security\.allow_insecure: true\)/.test(l)));
  await srv.close();
});

test("a security setting the version cannot enforce stops the start (every one is enforced today: the rule, on a listed one)", async () => {
  const loaded = loadConfig({ env: {} });
  await assert.rejects(checkSecurity({ ...loaded, notEnforced: ["security.jwt"] }), (err: Error & { code?: string }) => {
    assert.equal(err.code, "security_unenforceable", err.message);
    assert.match(err.message, /^security\.jwt is configured but this version of moltbot cannot enforce it: refusing to start rather than serve without it/);
    return true;
  });
  assert.deepEqual(NOT_YET_ENFORCED.filter((k) => k.startsWith("security")), [], "no security setting goes unenforced");
});

test("moltbot deploy --host 0.0.0.0 exits 1 with the reason on one line", async () => {
  const child = spawn(process.execPath, [BIN, "deploy", "--model-path", repo, "--host", "0.0.0.0", "--port", "0", "--threads", "1"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MOLTBOT_CONFIG: "", MOLTBOT_DATA_DIR: path.join(repo, "data") } });
  cleanups.push(() => child.exitCode === null && child.kill("SIGKILL"));
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  child.stdout.resume();
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  await until("stderr", () => err.includes("\n"));
  assert.equal(code, 1, err);
  assert.match(err, /^moltbot: error: server\.host 0\.0\.0\.0 listens beyond loopback but no authentication is configured/m);
});
