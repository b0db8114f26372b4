// The systemd unit `moltbot service install` writes, rendered from a loaded config. Pure: the
// command resolves the accounts, paths and files; this module only decides the unit's text.
//
// Choices a reader may not expect:
// - Type=exec, not notify: Node has no sd_notify. "Started" means ExecStartPost
//   (`moltbot service wait-ready`) saw GET /readyz answer 200, so `systemctl start` returns
//   when the server serves and fails when it never does. A subcommand rather than a curl
//   loop: no dependency on curl, and it reads host/port from the same config as the server.
// - KillMode=mixed: SIGTERM goes to the server alone; it drains in-flight requests and stops
//   its workers itself. The rest of the cgroup gets SIGKILL only at TimeoutStopSec.
// - Delegate=yes: the server may create cgroups for its model workers below its own.
// - Hardening in system units only: ProtectSystem=, ReadWritePaths= and PrivateTmp= need a
//   mount namespace, which a per-user manager can set up only together with PrivateUsers=yes
//   (an unprivileged user namespace, disabled on many hosts; systemd.exec(5)). A user unit
//   keeps NoNewPrivileges= (a prctl, no privilege needed) and runs as confined as its user.
import path from "node:path";
import type { LoadedConfig } from "../config/load.js";

export type UnitScope = "system" | "user";

export interface UnitOptions {
  /** Unit name without ".service". */
  name: string;
  scope: UnitScope;
  /** Absolute path of the node binary. */
  node: string;
  /** Absolute path of bin/moltbot. */
  bin: string;
  /** System units: the account the service runs as. */
  user?: string;
  /** Where the demo model is built (MOLTBOT_CACHE_DIR of the service). */
  cacheDir: string;
  /** System units whose account has no home: the cache is /var/cache/<name>, made by systemd (CacheDirectory=). */
  cacheByUnit?: boolean;
  /** How long ExecStartPost waits for /readyz, in seconds. */
  readyTimeoutS: number;
}

/** Unit names systemd accepts for a plain (non-template) service. */
export const UNIT_NAME = /^[A-Za-z0-9][A-Za-z0-9:_.-]*$/;

/** Seconds beyond worker.drain_timeout_ms for stopping the workers and closing the ledger. */
const STOP_MARGIN_S = 10;
/** Seconds beyond the readiness wait, so wait-ready fails first with its own message. */
const START_MARGIN_S = 15;

/** Directories the service writes: the data dir, the log and audit files' directories, the model cache (unless systemd makes it). */
export function writablePaths(loaded: LoadedConfig, cacheDir: string | undefined): string[] {
  const cfg = loaded.config;
  const dirs = [loaded.dataDir, cfg.log.file && path.dirname(cfg.log.file), cfg.audit.file && path.dirname(cfg.audit.file), cacheDir];
  return [...new Set(dirs.filter((d): d is string => typeof d === "string" && d !== ""))];
}

export function stopTimeoutS(loaded: LoadedConfig): number {
  return Math.ceil(loaded.config.worker.drain_timeout_ms / 1000) + STOP_MARGIN_S;
}

export function renderUnit(loaded: LoadedConfig, o: UnitOptions): string {
  if (loaded.file === undefined) throw new Error("a service unit needs a config file");
  const config = loaded.file;
  const system = o.scope === "system";
  const ctl = system ? "systemctl" : "systemctl --user";
  const exec = (...args: string[]) => args.map(execArg).join(" ");
  const lines = [
    `# ${o.name}.service: Moltbot as a systemd ${o.scope} service, written by \`moltbot service install\`.`,
    `# Settings live in ${config}; \`${ctl} reload ${o.name}\` re-reads it (SIGHUP).`,
    `# Values copied from it (paths, drain timeout, port): rerun the install with --force after changing them.`,
    "[Unit]",
    `Description=Moltbot inference server (${specifiers(config)})`,
    ...(system ? ["After=network-online.target", "Wants=network-online.target"] : []),
    "",
    "[Service]",
    "# Node has no sd_notify: started = ExecStartPost saw GET /readyz answer 200.",
    "Type=exec",
    ...(system && o.user !== undefined ? [`User=${o.user}`] : []),
    `WorkingDirectory=${plainValue(path.dirname(config))}`,
    `Environment=${quoted(`MOLTBOT_CONFIG=${config}`)}`,
    ...(o.cacheByUnit ? [`CacheDirectory=${o.name}`] : []),
    `Environment=${quoted(`MOLTBOT_CACHE_DIR=${o.cacheDir}`)}`,
    `ExecStart=${exec(o.node, o.bin, "deploy")}`,
    `ExecStartPost=${exec(o.node, o.bin, "service", "wait-ready", "--timeout", String(o.readyTimeoutS))}`,
    `TimeoutStartSec=${o.readyTimeoutS + START_MARGIN_S}`,
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Restart=on-failure",
    "RestartSec=2s",
    `# Stop: SIGTERM to the server alone; it drains (worker.drain_timeout_ms ${loaded.config.worker.drain_timeout_ms}) and stops its workers.`,
    "KillSignal=SIGTERM",
    "KillMode=mixed",
    `TimeoutStopSec=${stopTimeoutS(loaded)}`,
    "# The server may place its model workers in cgroups of their own below its own.",
    "Delegate=yes",
    "NoNewPrivileges=yes",
    ...(system
      ? [
          "# Read-only system but for the data dir, the log directory and the model cache.",
          "ProtectSystem=strict",
          `ReadWritePaths=${writablePaths(loaded, o.cacheByUnit ? undefined : o.cacheDir).map(quoted).join(" ")}`,
          "PrivateTmp=yes",
        ]
      : [
          "# ProtectSystem=, ReadWritePaths= and PrivateTmp= are left out: a per-user manager applies them only",
          "# with PrivateUsers=yes (unprivileged user namespaces, off on many hosts). Use a system unit to get them.",
        ]),
    "",
    "[Install]",
    `WantedBy=${system ? "multi-user.target" : "default.target"}`,
    "",
  ];
  return lines.join("\n");
}

/** systemd expands %-specifiers in most values. */
function specifiers(text: string): string {
  if (/[\u0000-\u001f\u007f]/.test(text)) throw new Error(`${JSON.stringify(text)}: control characters cannot go in a unit file`);
  return text.replace(/%/g, "%%");
}

/** A value systemd takes verbatim to the end of the line (WorkingDirectory=). */
function plainValue(text: string): string {
  return specifiers(text);
}

/** A word of a list setting: double-quoted when it holds blanks or quotes. */
function quoted(text: string): string {
  const t = specifiers(text);
  return /[\s"'\\]/.test(t) ? `"${t.replace(/[\\"]/g, (c) => `\\${c}`)}"` : t;
}

/** A word of an Exec*= command line, where "$" also expands variables. */
function execArg(text: string): string {
  return quoted(text.replace(/\$/g, "$$$$"));
}
