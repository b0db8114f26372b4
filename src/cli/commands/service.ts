// `moltbot service install|wait-ready`: run the server under systemd. `install` writes a unit
// (src/service/systemd-unit.ts) for a validated config and prints the systemctl commands to
// enable it (it runs none); `wait-ready` is the unit's readiness check (ExecStartPost).
// The definitions only; the implementation (service-run.ts) loads when a command runs.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface InstallArgs {
  user?: boolean;
  config?: string;
  name: string;
  "dry-run"?: boolean;
  force?: boolean;
  "run-as"?: string;
  "ready-timeout": number;
}

export interface WaitReadyArgs {
  config?: string;
  timeout: number;
}

const installCommand: CommandModule<object, InstallArgs> = {
  command: "install",
  describe: "Write a systemd unit that runs `moltbot deploy` for a config (prints the systemctl commands to enable it)",
  builder: (y: Argv) =>
    y
      .option("user", { type: "boolean", default: false, describe: "a user unit in ~/.config/systemd/user instead of a system unit in /etc/systemd/system" })
      .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml the service serves (default: $MOLTBOT_CONFIG, else ./moltbot.yaml)" })
      .option("name", { type: "string", requiresArg: true, default: "moltbot", describe: "unit name (without .service)" })
      .option("dry-run", { type: "boolean", default: false, describe: "print the unit on stdout and write nothing" })
      .option("force", { type: "boolean", default: false, describe: "replace an existing unit that differs" })
      .option("run-as", { type: "string", requiresArg: true, describe: "system units: the account the service runs as (default: $SUDO_USER, else you)" })
      .option("ready-timeout", { type: "number", requiresArg: true, default: 300, describe: "seconds the start may take until GET /readyz answers 200" })
      .example("sudo $0 service install --config /etc/moltbot/moltbot.yaml --run-as moltbot", "a hardened system service")
      .example("$0 service install --user --config ~/moltbot/moltbot.yaml", "a user service (no root)")
      .example("$0 service install --dry-run --config moltbot.yaml", "print the unit only") as Argv<InstallArgs>,
  handler: async (args: ArgumentsCamelCase<InstallArgs>) => (await import("./service-run.js")).serviceInstall(args),
};

const waitReadyCommand: CommandModule<object, WaitReadyArgs> = {
  command: "wait-ready",
  describe: "Wait until the configured server answers GET /readyz with 200 (the unit's ExecStartPost)",
  builder: (y: Argv) =>
    y
      .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml the server reads (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
      .option("timeout", { type: "number", requiresArg: true, default: 300, describe: "seconds to wait before failing" }) as Argv<WaitReadyArgs>,
  handler: async (args: ArgumentsCamelCase<WaitReadyArgs>) => (await import("./service-run.js")).serviceWaitReady(args),
};

export const serviceCommand: CommandModule<object, object> = {
  command: "service",
  describe: "Run moltbot under systemd: install a unit, wait for readiness",
  builder: (y: Argv) => y.command(installCommand).command(waitReadyCommand).demandCommand(1, "name a service command: install or wait-ready"),
  handler: () => undefined,
};
