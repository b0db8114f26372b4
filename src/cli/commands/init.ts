// `moltbot init DIR`: a ready-to-serve folder: a commented moltbot.yaml showing every key,
// and a model repository holding the demo model as version v1.0. The definition only; the
// work is in init-run.ts, loaded when the command runs.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface InitArgs {
  dir: string;
  force?: boolean;
}

export const initCommand: CommandModule<object, InitArgs> = {
  command: "init <dir>",
  describe: "Create DIR/moltbot.yaml (every key, commented) and DIR/models/v1.0/ holding the demo model",
  builder: (y: Argv) =>
    y
      .positional("dir", { type: "string", demandOption: true, describe: "folder to create or fill" })
      .option("force", { type: "boolean", default: false, describe: "overwrite an existing moltbot.yaml and models/v1.0" })
      .example("$0 init /srv/moltbot && cd /srv/moltbot && $0 deploy --config moltbot.yaml", "set up and serve") as Argv<InitArgs>,
  handler: async (args: ArgumentsCamelCase<InitArgs>) => (await import("./init-run.js")).init(args),
};
