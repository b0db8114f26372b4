// `moltbot service install|wait-ready`, the implementation: loaded by commands/service.ts only
// when a service command runs. Runs the server under systemd. `install` writes a unit
// (src/service/systemd-unit.ts) for a validated config and prints the systemctl commands to
// enable it (it runs none); `wait-ready` is the unit's readiness check (ExecStartPost).
import { spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ArgumentsCamelCase } from "yargs";
import { loadConfig } from "../../config/load.js";
import { MoltbotError } from "../../errors.js";
import { renderUnit, UNIT_NAME, writablePaths, type UnitScope } from "../../service/systemd-unit.js";
import { readyUrl, waitReady } from "../../service/wait-ready.js";
import type { InstallArgs, WaitReadyArgs } from "./service.js";

interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** bin/moltbot of this installation: dist/src/cli/commands/ -> the package root. */
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "bin", "moltbot");

function usage(message: string): never {
  throw new MoltbotError("cli_usage", message);
}

function lookupAccount(name: string): Account {
  // getent asks NSS (LDAP, sssd, ...), which reading /etc/passwd would miss.
  const r = spawnSync("getent", ["passwd", name], { encoding: "utf8" });
  const fields = r.status === 0 ? r.stdout.trim().split(":") : [];
  if (fields.length < 7) usage(`--run-as: no user named ${name}`);
  return { name: fields[0]!, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]! };
}

function configFile(explicit: string | undefined): string {
  const file = explicit ?? (process.env.MOLTBOT_CONFIG || undefined) ?? (existsSync("moltbot.yaml") ? "moltbot.yaml" : undefined);
  if (file === undefined) usage("name the config file with --config FILE (the service reads it through MOLTBOT_CONFIG)");
  return path.resolve(file);
}

/** Create the missing levels of `dir`, owned by `owner` (a root install for a service account). */
function ensureDir(dir: string, owner: Account | undefined): string[] {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = path.dirname(d)) missing.unshift(d);
  for (const d of missing) {
    mkdirSync(d, { mode: 0o750 });
    if (owner !== undefined) chownSync(d, owner.uid, owner.gid);
  }
  return missing;
}

export function serviceInstall(args: ArgumentsCamelCase<InstallArgs>): void {
  const name = args.name.replace(/\.service$/, "");
  if (!UNIT_NAME.test(name)) usage(`--name: ${JSON.stringify(args.name)} is not a unit name (letters, digits, ":_.-")`);
  if (!Number.isInteger(args["ready-timeout"]) || args["ready-timeout"] < 1) usage(`--ready-timeout: expected an integer >= 1, got ${args["ready-timeout"]}`);
  const scope: UnitScope = args.user ? "user" : "system";
  const dryRun = args["dry-run"] === true;
  if (scope === "user" && args["run-as"] !== undefined) usage("--run-as is for system units; a user unit runs as you");

  // The environment the service gets holds MOLTBOT_CONFIG only: validate as it will load,
  // without this shell's MOLTBOT_* variables.
  const loaded = loadConfig({ file: configFile(args.config), env: {} });
  readyUrl(loaded.config.server, loaded.config.security); // port 0 cannot be checked for readiness

  const unitDir =
    scope === "system" ? "/etc/systemd/system" : path.join(process.env.XDG_CONFIG_HOME || path.join(homedir(), ".config"), "systemd", "user");
  const unitFile = path.join(unitDir, `${name}.service`);
  if (scope === "system" && !dryRun && process.getuid?.() !== 0) {
    usage(`writing ${unitFile} needs root: run it with sudo, pass --user for a user unit, or --dry-run to print the unit`);
  }

  let account: Account | undefined;
  let cacheDir: string;
  let cacheByUnit = false;
  if (scope === "system") {
    const sudoUser = process.env.SUDO_USER;
    account = lookupAccount(args["run-as"] ?? (sudoUser && sudoUser !== "root" ? sudoUser : userInfo().username));
    // A system account often has no home (useradd --system): then systemd makes /var/cache/<name> for it.
    cacheByUnit = !process.env.MOLTBOT_CACHE_DIR && !existsSync(account.home);
    cacheDir = process.env.MOLTBOT_CACHE_DIR || (cacheByUnit ? path.join("/var/cache", name) : path.join(account.home, ".cache", "moltbot"));
  } else {
    cacheDir = process.env.MOLTBOT_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), ".cache"), "moltbot");
  }
  const unit = renderUnit(loaded, {
    name,
    scope,
    node: realpathSync(process.execPath),
    bin: realpathSync(BIN),
    user: account?.name,
    cacheDir: path.resolve(cacheDir),
    cacheByUnit,
    readyTimeoutS: args["ready-timeout"],
  });

  if (dryRun) {
    process.stdout.write(unit);
    console.error(`(dry run: ${unitFile} not written)`);
    return;
  }
  const existing = existsSync(unitFile) ? readFileSync(unitFile, "utf8") : undefined;
  if (existing === unit) {
    console.log(`Unchanged: ${unitFile}`);
  } else {
    if (existing !== undefined && !args.force) {
      usage(`${unitFile} exists and differs from the unit for ${loaded.file}; pass --force to replace it (--dry-run shows the new one)`);
    }
    mkdirSync(unitDir, { recursive: true });
    // Write then rename: systemd never reads a half-written unit.
    const tmp = `${unitFile}.tmp-${process.pid}`;
    writeFileSync(tmp, unit, { mode: 0o644 });
    renameSync(tmp, unitFile);
    console.log(`${existing === undefined ? "Wrote" : "Replaced"} ${unitFile}`);
  }
  if (scope === "system") {
    // ProtectSystem=strict refuses to start a unit whose ReadWritePaths= do not exist.
    const owner = account!.uid === process.getuid?.() ? undefined : account;
    for (const dir of writablePaths(loaded, cacheByUnit ? undefined : path.resolve(cacheDir))) {
      for (const made of ensureDir(dir, owner)) console.log(`Created ${made}${owner ? ` (owner ${owner.name})` : ""}`);
    }
  }

  const ctl = scope === "system" ? "systemctl" : "systemctl --user";
  console.log(`Serves ${loaded.file}${account ? ` as user ${account.name}` : ""}; started = ${readyUrl(loaded.config.server, loaded.config.security)} answers 200.`);
  console.log("Enable and start it with:");
  console.log(`  ${ctl} daemon-reload && ${ctl} enable --now ${name}`);
  if (scope === "user") console.log(`  loginctl enable-linger ${userInfo().username}   # keep it running after you log out`);
  console.log(`Re-read the config with \`${ctl} reload ${name}\`; follow the log with \`journalctl ${scope === "user" ? "--user-unit" : "-u"} ${name} -f\`.`);
}

export async function serviceWaitReady(args: ArgumentsCamelCase<WaitReadyArgs>): Promise<void> {
  if (!(args.timeout > 0)) usage(`--timeout: expected seconds > 0, got ${args.timeout}`);
  const loaded = loadConfig({ file: args.config, env: process.env });
  const url = readyUrl(loaded.config.server, loaded.config.security);
  const t0 = Date.now();
  await waitReady(url, args.timeout * 1000);
  console.log(`ready: ${url} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
