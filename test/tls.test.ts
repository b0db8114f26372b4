// HTTPS (security.tls) against a real server: handshakes at each TLS version from Node and
// from `openssl s_client`, modern ciphers only, the openai client with the CA trusted
// (NODE_EXTRA_CA_CERTS in a child process), client certificates, a certificate reload that
// keeps open connections, and the start refusals (missing file, wrong key, expired).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, readFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { loadConfig } from "../src/config/load.js";
import { ConfigReloader } from "../src/server/reload.js";
import { makeCerts, type CertSet } from "./helpers/certs.js";
import { makeRepository, startServer, tempDir, until, type RunningServer } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const run = promisify(execFile);

let certs: CertSet;
let repo: string;
let srv: RunningServer;
let port: number;
let liveCert: string;
let liveKey: string;

before(async () => {
  const dir = await tempDir("moltbot-tls-");
  certs = makeCerts(dir);
  // The files the server reads; the reload test overwrites them.
  liveCert = path.join(dir, "live-cert.pem");
  liveKey = path.join(dir, "live-key.pem");
  copyFileSync(certs.server.cert, liveCert);
  copyFileSync(certs.server.key, liveKey);
  repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  srv = await startServer(repo, { config: { security: { tls: { cert_file: liveCert, key_file: liveKey, min_version: "TLS1_2" } } } });
  port = srv.server.address.port;
});
after(async () => {
  await srv?.close();
});

type Handshake = { protocol: string | null; cipher: string; fingerprint: string } | { error: string };

function handshake(p: number, opts: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port: p, servername: "localhost", ca: readFileSync(certs.caCert), ...opts }, () => {
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().name, fingerprint: socket.getPeerCertificate().fingerprint256 });
      socket.end();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

async function sClient(p: number, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const running = run("openssl", ["s_client", "-connect", `127.0.0.1:${p}`, "-servername", "localhost", "-CAfile", certs.caCert, ...args], { timeout: 10_000 });
    running.child.stdin?.end(); // s_client ends its session at EOF on stdin
    const { stdout, stderr } = await running;
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

test("TLS 1.2 and 1.3 handshakes succeed from Node with ECDHE + AEAD; 1.0, 1.1 and CBC ciphers are refused", async () => {
  const v13 = await handshake(port, { minVersion: "TLSv1.3", maxVersion: "TLSv1.3" });
  assert.ok(!("error" in v13), JSON.stringify(v13));
  assert.equal(v13.protocol, "TLSv1.3");

  const v12 = await handshake(port, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" });
  assert.ok(!("error" in v12), JSON.stringify(v12));
  assert.equal(v12.protocol, "TLSv1.2");
  assert.match(v12.cipher, /^ECDHE-.*(GCM|CHACHA20-POLY1305)/);

  // SECLEVEL=0 lets this client offer the old versions; the refusal is the server's alert.
  for (const version of ["TLSv1", "TLSv1.1"] as const) {
    const old = await handshake(port, { minVersion: version, maxVersion: version, ciphers: "DEFAULT@SECLEVEL=0" });
    assert.ok("error" in old, `${version} must be refused: ${JSON.stringify(old)}`);
    assert.match(old.error, /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION/i, version);
  }
  // CBC (no AEAD) and RSA key exchange (no forward secrecy) at TLS 1.2.
  for (const cipher of ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"]) {
    const weak = await handshake(port, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: cipher });
    assert.ok("error" in weak, `${cipher} must be refused: ${JSON.stringify(weak)}`);
  }
  await until("the refusals in the log", () => srv.lines().some((l) => /TLS handshake refused from 127\.0\.0\.1/.test(l)));
  assert.ok(srv.lines().some((l) => /HTTPS only, TLS 1\.2 and 1\.3; certificate CN=localhost/.test(l)));
  // The test certificates live a day.
  assert.ok(srv.lines().some((l) => /\[WARNING\] \[server\] The TLS certificate in .*live-cert\.pem expires in [01]\.\d days/.test(l)));
});

test("openssl s_client: TLS 1.2 and 1.3 verify against the CA; TLS 1.1 and a CBC cipher are refused", async () => {
  const v12 = await sClient(port, "-tls1_2");
  assert.ok(v12.ok, v12.out);
  assert.match(v12.out, /Protocol\s*: TLSv1\.2/);
  assert.match(v12.out, /Verify return code: 0 \(ok\)/);
  const v13 = await sClient(port, "-tls1_3");
  assert.ok(v13.ok, v13.out);
  assert.match(v13.out, /TLSv1\.3/);
  assert.match(v13.out, /Verify return code: 0 \(ok\)/);

  const v11 = await sClient(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0");
  assert.equal(v11.ok, false, v11.out);
  assert.match(v11.out, /alert protocol version|unsupported protocol|no protocols available/i);
  const cbc = await sClient(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA");
  assert.equal(cbc.ok, false, cbc.out);
  assert.match(cbc.out, /handshake failure/i);
});

test("the openai client works over HTTPS with the CA trusted (NODE_EXTRA_CA_CERTS), and refuses it untrusted; plain HTTP gets no answer", async () => {
  const script = [
    'import OpenAI from "openai";',
    "const client = new OpenAI({ baseURL: process.argv[1], apiKey: 'unused', maxRetries: 0 });",
    "const r = await client.completions.create({ model: 'tiny', prompt: 'over tls', max_tokens: 5, temperature: 0, ignore_eos: true });",
    "console.log(JSON.stringify(r.usage));",
  ].join("\n");
  const baseURL = `https://localhost:${port}/v1`;
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: certs.caCert };
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script, baseURL], { cwd: ROOT, env, timeout: 15_000 });
  assert.equal(JSON.parse(stdout).completion_tokens, 5);

  const { NODE_EXTRA_CA_CERTS: _drop, ...untrusted } = process.env;
  await assert.rejects(run(process.execPath, ["--input-type=module", "-e", script, baseURL], { cwd: ROOT, env: untrusted, timeout: 15_000 }), /Connection error|certificate/i);

  const plain = await fetch(`http://127.0.0.1:${port}/healthz`).then(
    (r) => `status ${r.status}`,
    (err: Error) => `failed: ${(err.cause as Error | undefined)?.message ?? err.message}`,
  );
  assert.match(plain, /^failed/);
});

function get(agent: https.Agent): Promise<{ status: number; socket: tls.TLSSocket; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: "127.0.0.1", port, servername: "localhost", path: "/healthz", agent }, (res) => {
      // Read now: a kept-alive socket is detached from the response at its end.
      const socket = res.socket as tls.TLSSocket;
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, socket, fingerprint }));
    });
    req.on("error", reject);
  });
}

test("a reload (SIGHUP's reloader) serves the new certificate to new connections, keeps open ones, and refuses a key that does not match", async () => {
  const ca = readFileSync(certs.caCert);
  const kept = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const first = await get(kept);
  assert.equal(first.status, 200);

  copyFileSync(certs.server2.cert, liveCert);
  copyFileSync(certs.server2.key, liveKey);
  const reloader = new ConfigReloader({ load: { env: {} }, started: loadConfig({ env: {} }).config, pool: srv.server.models, repository: srv.server.repository, log: srv.log, certificates: srv.server });
  const result = reloader.reload();
  assert.match(result.certificate ?? "", /TLS certificate CN=localhost-renewed, valid until .* \(was CN=localhost/);
  await until("the reload line", () => srv.lines().some((l) => /\[INFO\] \[server\] Reloaded TLS certificate CN=localhost-renewed/.test(l)));

  const again = await get(kept);
  assert.equal(again.status, 200);
  assert.equal(again.socket, first.socket, "the open connection was kept");
  assert.equal(again.fingerprint, first.fingerprint, "it keeps the certificate it was opened with");
  const fresh = await get(new https.Agent({ ca }));
  assert.notEqual(fresh.fingerprint, first.fingerprint, "a new connection gets the new certificate");
  kept.destroy();

  // A key from another pair: refused, the renewed certificate keeps serving.
  copyFileSync(certs.server.key, liveKey);
  const refused = reloader.reload();
  assert.match(refused.certificateError ?? "", /security\.tls\.key_file: the key in .* does not match the certificate/);
  assert.ok(srv.lines().some((l) => /\[ERROR\] \[server\] Certificate reload refused, the current certificate stays/.test(l)));
  const still = await get(new https.Agent({ ca }));
  assert.equal(still.fingerprint, fresh.fingerprint);
  copyFileSync(certs.server2.key, liveKey);
});

test("client_auth: require accepts a certificate signed by ca_file only", async () => {
  const mtls = await startServer(repo, { config: { security: { tls: { cert_file: certs.server.cert, key_file: certs.server.key, min_version: "TLS1_3", ca_file: certs.caCert, client_auth: "require" } } } });
  try {
    const p = mtls.server.address.port;
    const withCert = await handshake(p, { cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) });
    assert.ok(!("error" in withCert), JSON.stringify(withCert));
    assert.equal(withCert.protocol, "TLSv1.3");
    // TLS 1.3 checks the client certificate after the client's handshake ends: the refusal
    // arrives as the first read fails, so ask for a response.
    const ask = (opts: tls.ConnectionOptions) =>
      new Promise<string>((resolve) => {
        const s = tls.connect({ host: "127.0.0.1", port: p, servername: "localhost", ca: readFileSync(certs.caCert), ...opts }, () => s.write("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"));
        let data = "";
        s.setEncoding("utf8").on("data", (d: string) => (data += d));
        s.on("end", () => resolve(data.split("\r\n")[0] ?? ""));
        s.on("error", (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
      });
    assert.equal(await ask({ cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) }), "HTTP/1.1 200 OK");
    assert.match(await ask({}), /^error .*CERTIFICATE_REQUIRED|^error ECONNRESET|^$/);
    assert.match(await ask({ cert: readFileSync(certs.stranger.cert), key: readFileSync(certs.stranger.key) }), /^error .*(UNKNOWN_CA|BAD_CERTIFICATE|DECRYPT)|^error ECONNRESET|^$/);
    const v12 = await handshake(p, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) });
    assert.ok("error" in v12, "min_version TLS1_3 refuses TLS 1.2");
  } finally {
    await mtls.close();
  }
});

test("a missing or unreadable file, a key that does not match, or an expired certificate stops the start with one line", async () => {
  const missing = path.join(certs.dir, "nope.pem");
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ cert_file: missing, key_file: certs.server.key }, /^security\.tls\.cert_file: cannot read .*nope\.pem \(ENOENT\)$/],
    [{ cert_file: certs.server.cert, key_file: missing }, /^security\.tls\.key_file: cannot read .*nope\.pem \(ENOENT\)$/],
    [{ cert_file: certs.server.cert, key_file: certs.dir }, /^security\.tls\.key_file: cannot read .* \(EISDIR\)$/],
    [{ cert_file: certs.server.cert, key_file: certs.server2.key }, /^security\.tls\.key_file: the key in .*server2\.key does not match the certificate in .*server\.pem \(CN=localhost\)$/],
    [{ cert_file: certs.expired.cert, key_file: certs.expired.key }, /^security\.tls\.cert_file: the certificate in .*expired\.pem expired on 2020-01-02T00:00:00\.000Z; renew it$/],
    [{ cert_file: certs.server.key, key_file: certs.server.key }, /^security\.tls\.cert_file: .*server\.key holds no PEM certificate/],
  ];
  for (const [files, message] of cases) {
    const t0 = Date.now();
    await assert.rejects(startServer(repo, { config: { security: { tls: { ...files, min_version: "TLS1_2" } } } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, "tls_invalid", err.message);
      assert.match(err.message, message);
      return true;
    });
    assert.ok(Date.now() - t0 < 2000, "refused before any model loads");
  }
});

test("the CLI clients reach an https:// server with --ca-file or $MOLTBOT_CA_FILE, and refuse an untrusted one", async () => {
  const bin = path.join(ROOT, "bin", "moltbot");
  const url = `https://localhost:${port}`;
  const env = { ...process.env, MOLTBOT_CONFIG: "", MOLTBOT_URL: "", MOLTBOT_CA_FILE: "" };
  const status = await run(process.execPath, [bin, "status", "--url", url, "--ca-file", certs.caCert, "--json"], { env, timeout: 15_000 });
  assert.equal(JSON.parse(status.stdout).server.listen, `https://127.0.0.1:${port}`);

  const models = await run(process.execPath, [bin, "models", "list", "--url", url, "--json"], { env: { ...env, MOLTBOT_CA_FILE: certs.caCert }, timeout: 15_000 });
  assert.equal(JSON.parse(models.stdout).models[0].name, "tiny");

  await assert.rejects(run(process.execPath, [bin, "models", "list", "--url", url], { env, timeout: 15_000 }), /certificate/i);
  await assert.rejects(run(process.execPath, [bin, "status", "--url", url, "--ca-file", path.join(certs.dir, "nope.pem")], { env, timeout: 15_000 }), /option --ca-file: cannot read .*nope\.pem \(ENOENT\)/);
});
