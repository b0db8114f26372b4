// `moltbot service install|wait-ready` as an operator runs them: real bin/moltbot processes,
// real files in temp dirs, the unit checked by systemd's own `systemd-analyze verify`.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { makeRepository, tempDir } from "./helpers/fixtures.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const NAME = `moltbot-test-${process.pid}`;

const children: Array<ReturnType<typeof spawn>> = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}, opts: { uid?: number; gid?: number; cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000, ...opts });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliAsync(args: string[], env: NodeJS.ProcessEnv, opts: { uid?: number; gid?: number; cwd?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"], ...opts });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Without the variables a developer's shell may carry into the child. */
function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const k of ["MOLTBOT_CONFIG", "MOLTBOT_CACHE_DIR", "SUDO_USER"]) if (!(k in extra)) delete env[k];
  return env;
}

function analyzeAvailable(): string | undefined {
  const r = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? undefined : "systemd-analyze is not installed: the unit is not verified by systemd";
}

function verify(unitFile: string, user: boolean, env: NodeJS.ProcessEnv = {}) {
  // verify loads the unit as systemd would: ExecStart's binary must exist (it does: this node).
  const r = spawnSync("systemd-analyze", [...(user ? ["--user"] : []), "verify", unitFile], { encoding: "utf8", env: { ...process.env, ...env } });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

async function configDir(yaml: string): Promise<{ dir: string; file: string }> {
  const dir = await tempDir();
  const file = path.join(dir, "moltbot.yaml");
  await writeFile(file, yaml);
  return { dir, file };
}

test("install --dry-run prints a unit with the required directives that systemd-analyze verify accepts, and writes nothing", async (t) => {
  const { dir, file } = await configDir("server:\n  port: 18123\nlog:\n  file: ./logs/moltbot.log\nworker:\n  drain_timeout_ms: 12000\n");
  const cache = path.join(dir, "cache");
  // MOLTBOT_PORT in the installer's shell must not leak into the unit's view of the config.
  const r = cli(["service", "install", "--dry-run", "--config", file, "--name", NAME], cleanEnv({ MOLTBOT_CACHE_DIR: cache, MOLTBOT_PORT: "1" }));
  assert.equal(r.code, 0, r.stderr);
  const unit = r.stdout;
  const node = process.execPath;
  for (const line of [
    "Type=exec",
    `ExecStart=${node} ${BIN} deploy`,
    `ExecStartPost=${node} ${BIN} service wait-ready --timeout 300`,
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    `ReadWritePaths=${path.join(dir, "data")} ${path.join(dir, "logs")} ${cache}`,
    "PrivateTmp=yes",
    "Delegate=yes",
    "KillSignal=SIGTERM",
    "TimeoutStopSec=22",
    `WorkingDirectory=${dir}`,
    `Environment=MOLTBOT_CONFIG=${file}`,
    "WantedBy=multi-user.target",
  ]) {
    assert.ok(unit.split("\n").includes(line), `missing ${JSON.stringify(line)} in:\n${unit}`);
  }
  assert.match(unit, /^User=\S+$/m);
  assert.equal(existsSync(path.join("/etc/systemd/system", `${NAME}.service`)), false, "a dry run writes nothing");

  const skip = analyzeAvailable();
  if (skip) return t.skip(skip);
  const unitFile = path.join(dir, `${NAME}.service`);
  await writeFile(unitFile, unit);
  const v = verify(unitFile, false);
  assert.equal(v.code, 0, v.out);
  assert.equal(v.out.trim(), "", "no warnings");
});

test("install --user writes into the user's config dir, prints the systemctl commands, and refuses to overwrite a different unit", async (t) => {
  const { file } = await configDir("server:\n  port: 18124\n");
  const home = await mkdtemp(path.join(os.tmpdir(), "moltbot-home-"));
  const env = cleanEnv({ HOME: home, XDG_CONFIG_HOME: path.join(home, "cfg"), XDG_CACHE_HOME: path.join(home, "xcache") });
  const unitFile = path.join(home, "cfg", "systemd", "user", `${NAME}.service`);

  const r = cli(["service", "install", "--user", "--config", file, "--name", NAME], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Wrote ${unitFile}$`, "m"));
  assert.ok(r.stdout.includes(`systemctl --user daemon-reload && systemctl --user enable --now ${NAME}`), r.stdout);
  const unit = readFileSync(unitFile, "utf8");
  assert.ok(unit.includes(`Environment=MOLTBOT_CONFIG=${file}`));
  assert.ok(unit.includes(`Environment=MOLTBOT_CACHE_DIR=${path.join(home, "xcache", "moltbot")}`));
  assert.ok(unit.includes("WantedBy=default.target"));
  assert.doesNotMatch(unit, /^(ProtectSystem|ReadWritePaths|PrivateTmp|User)=/m, "options a user manager cannot apply are left out");
  assert.match(unit, /^NoNewPrivileges=yes$/m);
  assert.deepEqual(spawnSync("find", [home, "-name", "*.tmp-*"], { encoding: "utf8" }).stdout, "", "no temp file left");

  // Neither of these writes: run them together.
  const [same, differ] = await Promise.all([
    cliAsync(["service", "install", "--user", "--config", file, "--name", NAME], env),
    cliAsync(["service", "install", "--user", "--config", file, "--name", NAME, "--ready-timeout", "60"], env),
  ]);
  assert.equal(same.code, 0, same.stderr);
  assert.match(same.stdout, /^Unchanged: /m);
  assert.equal(differ.code, 1);
  assert.match(differ.stderr, /exists and differs .* pass --force/);
  assert.equal(readFileSync(unitFile, "utf8"), unit, "left as it was");

  const forced = cli(["service", "install", "--user", "--config", file, "--name", NAME, "--ready-timeout", "60", "--force"], env);
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(forced.stdout, /^Replaced /m);
  assert.match(readFileSync(unitFile, "utf8"), /wait-ready --timeout 60\nTimeoutStartSec=75\n/);

  const skip = analyzeAvailable();
  if (skip) return t.skip(skip);
  const v = verify(unitFile, true, { HOME: home, XDG_CONFIG_HOME: path.join(home, "cfg"), XDG_RUNTIME_DIR: await tempDir("moltbot-run-") });
  assert.equal(v.code, 0, v.out);
});

test("install refuses a bad config, a config without a fixed port, and a system unit without root", async () => {
  const bad = await configDir("server:\n  port: eighty\n");
  const anyPort = await configDir("server:\n  port: 0\n");
  const good = await configDir("server:\n  port: 18125\n");
  await chmod(good.dir, 0o755);
  // As root, ask as the unprivileged "nobody"; never write to /etc/systemd/system from a test.
  const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const [r, zero, missing, notRoot] = await Promise.all([
    cliAsync(["service", "install", "--dry-run", "--config", bad.file, "--name", NAME], cleanEnv({})),
    cliAsync(["service", "install", "--dry-run", "--config", anyPort.file], cleanEnv({})),
    cliAsync(["service", "install", "--dry-run"], cleanEnv({}), { cwd: await tempDir() }),
    cliAsync(["service", "install", "--config", good.file, "--name", NAME], cleanEnv({}), asUser),
  ]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^moltbot: error: .*moltbot\.yaml: server\.port: expected integer 0\.\.65535, got "eighty"/);

  assert.equal(zero.code, 1);
  assert.match(zero.stderr, /server\.port is 0 .*set a fixed port/);

  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /name the config file with --config FILE/);

  assert.equal(notRoot.code, 1, notRoot.stdout + notRoot.stderr);
  assert.match(notRoot.stderr, new RegExp(`writing /etc/systemd/system/${NAME}\\.service needs root: run it with sudo, pass --user`));
});

test("wait-ready returns once the configured server answers /readyz, and fails with the reason after its timeout", async () => {
  const port = await freePort();
  const repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  const { file } = await configDir(`model_path: ${repo}\nserver:\n  port: ${port}\nthreads: 1\n`);

  const early = cli(["service", "wait-ready", "--config", file, "--timeout", "1"], cleanEnv({}));
  assert.equal(early.code, 1);
  assert.match(early.stderr, new RegExp(`http://127\\.0\\.0\\.1:${port}/readyz not ready after 1 s \\(last: ECONNREFUSED\\)`));

  // As systemd runs it: the check starts with the server, which reads the same config.
  const waiter = spawn(process.execPath, [BIN, "service", "wait-ready", "--timeout", "60"], { env: cleanEnv({ MOLTBOT_CONFIG: file }), stdio: ["ignore", "pipe", "pipe"] });
  const server = spawn(process.execPath, [BIN, "deploy"], { env: cleanEnv({ MOLTBOT_CONFIG: file }), stdio: ["ignore", "pipe", "pipe"] });
  children.push(waiter, server);
  let out = "";
  waiter.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  waiter.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  const code = await new Promise<number | null>((resolve) => waiter.on("exit", resolve));
  assert.equal(code, 0, out);
  assert.match(out, new RegExp(`^ready: http://127\\.0\\.0\\.1:${port}/readyz`));
  assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
  server.kill("SIGTERM");
  assert.equal(await new Promise((resolve) => server.on("exit", resolve)), 0);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}
