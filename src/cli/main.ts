// The moltbot CLI: one file per command under commands/, wired here.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { MoltbotError } from "../errors.js";
import { budgetCommand } from "./commands/budget.js";
import { deployCommand } from "./commands/deploy.js";
import { initCommand } from "./commands/init.js";
import { serviceCommand } from "./commands/service.js";
import { logsCommand } from "./commands/logs.js";

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName("moltbot")
    .usage("$0 <command> [options]\n\nSelf-hosted inference server for GGUF models with an OpenAI-compatible API.")
    .command(deployCommand)
    .command(initCommand)
    .command(budgetCommand)
    .command(serviceCommand)
    .command(logsCommand)
    .demandCommand(1, "name a command (see --help)")
    .recommendCommands()
    .strict()
    .strictCommands()
    .help()
    .alias("h", "help")
    .version()
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      console.error(`moltbot: error: ${msg}\nRun 'moltbot --help' for usage.`);
      process.exit(2);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  const message = err instanceof MoltbotError ? err.message : err instanceof Error ? (process.env.MOLTBOT_DEBUG ? (err.stack ?? err.message) : err.message) : String(err);
  console.error(`moltbot: error: ${message}`);
  process.exit(1);
});
