// `moltbot deploy` with security.tls: listens on https://, and SIGHUP re-reads the certificate
// (a renewal written over the files) while a kept-alive connection goes on being served.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { copyFileSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import type tls from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { makeCerts } from "./helpers/certs.js";
import { makeRepository, tempDir, until } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function get(port: number, agent: https.Agent): Promise<{ status: number; socket: tls.TLSSocket; subject: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: "127.0.0.1", port, servername: "localhost", path: "/readyz", agent }, (res) => {
        const socket = res.socket as tls.TLSSocket;
        const subject = socket.getPeerCertificate().subject.CN as string;
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, socket, subject }));
      })
      .on("error", reject);
  });
}

test("deploy serves https:// and SIGHUP swaps in a renewed certificate without dropping open connections", async () => {
  const dir = await tempDir("moltbot-tls-deploy-");
  const certs = makeCerts(path.join(dir, "certs"));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  copyFileSync(certs.server.cert, cert);
  copyFileSync(certs.server.key, key);
  const repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  const yaml = path.join(dir, "moltbot.yaml");
  // A fixed port: `service wait-ready` finds the server from the config.
  const free = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  await writeFile(yaml, JSON.stringify({ model_path: repo, server: { port: free }, threads: 1, security: { tls: { cert_file: cert, key_file: key } } }));

  const child = spawn(process.execPath, [BIN, "deploy", "--config", yaml], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MOLTBOT_CONFIG: "", MOLTBOT_DATA_DIR: "" } });
  cleanups.push(() => child.exitCode === null && child.kill("SIGKILL"));
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  const LISTEN = /Listening on https:\/\/127\.0\.0\.1:(\d+)/;
  await until(`the server to listen:\n${out}`, () => LISTEN.test(out) || child.exitCode !== null, 30_000);
  assert.equal(child.exitCode, null, out);
  const port = Number(LISTEN.exec(out)![1]);
  assert.equal(port, free);
  const ready = await promisify(execFile)(process.execPath, [BIN, "service", "wait-ready", "--config", yaml, "--timeout", "10"], { env: { ...process.env, MOLTBOT_CONFIG: "" } });
  assert.match(ready.stdout, new RegExp(`^ready: https://127\\.0\\.0\\.1:${port}/readyz`));

  const ca = readFileSync(certs.caCert);
  const kept = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const first = await get(port, kept);
  assert.equal(first.status, 200);
  assert.equal(first.subject, "localhost");

  copyFileSync(certs.server2.cert, cert);
  copyFileSync(certs.server2.key, key);
  child.kill("SIGHUP");
  await until(`the reload line:\n${out}`, () => /\[INFO\] \[server\] Reloaded TLS certificate CN=localhost-renewed/.test(out));
  await until(`the config reload line:\n${out}`, () => /\[INFO\] \[config\] Reloaded .*moltbot\.yaml: no changes/.test(out));

  const again = await get(port, kept);
  assert.equal(again.status, 200);
  assert.equal(again.socket, first.socket, "the open connection was kept");
  assert.equal((await get(port, new https.Agent({ ca }))).subject, "localhost-renewed");
  kept.destroy();

  child.kill("SIGTERM");
  const code = await new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.on("exit", resolve)));
  assert.equal(code, 0, out);
});
