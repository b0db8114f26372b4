// yargs' `.version()` flag is global: inside any command `--version` still prints the package
// version and exits 0, so `moltbot models activate demo --version v2.0` would do nothing. Each
// command drops the flag in its own context, so `--version` prints the version only at the top
// level (`moltbot --version`), a command that declares its own `--version` option receives it,
// and in any other command it is an unknown option (strict mode). yargs has no per-command
// switch for this; `version(false)` in a command's context is its documented way to free the name.
import type { Argv, CommandModule } from "yargs";

// `any`: each command has its own argument type.
export function withoutGlobalVersion(command: CommandModule<any, any>): CommandModule<any, any> {
  const builder = command.builder;
  return {
    ...command,
    builder: (y: Argv) => {
      const own = y.version(false);
      // A builder may return a promise; yargs awaits either.
      if (typeof builder === "function") return builder(own) as Argv<any>;
      return builder ? own.options(builder) : own;
    },
  };
}
