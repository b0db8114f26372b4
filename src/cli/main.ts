// The moltbot CLI: one file per command under commands/, wired here. A command file holds only
// its yargs definition (name, options, help) and imports its implementation when it runs, so
// `--help` or `status` never load the server, the ledger or the config schema (docs/benchmarks.md).
import yargs, { type CommandModule } from "yargs";
import { hideBin } from "yargs/helpers";
import { MoltbotError } from "../errors.js";
import { usageError } from "./usage-error.js";
import { withoutGlobalVersion } from "./command-version.js";
import { auditCommand } from "./commands/audit.js";
import { budgetCommand } from "./commands/budget.js";
import { cacheCommand } from "./commands/cache.js";
import { deployCommand } from "./commands/deploy.js";
import { initCommand } from "./commands/init.js";
import { serviceCommand } from "./commands/service.js";
import { logsCommand } from "./commands/logs.js";
import { modelsCommand } from "./commands/models.js";
import { quantizeCommand } from "./commands/quantize.js";
import { statusCommand } from "./commands/status.js";
import { tokenCommand } from "./commands/token.js";

// `any`: each command has its own argument type.
const COMMANDS: ReadonlyArray<CommandModule<any, any>> = [
  deployCommand,
  initCommand,
  statusCommand,
  budgetCommand,
  cacheCommand,
  serviceCommand,
  logsCommand,
  modelsCommand,
  quantizeCommand,
  tokenCommand,
  auditCommand,
];

export async function main(argv: string[]): Promise<void> {
  const cli = yargs(argv)
    .scriptName("moltbot")
    .usage("$0 <command> [options]\n\nSelf-hosted inference server for GGUF models with an OpenAI-compatible API.");
  for (const command of COMMANDS) cli.command(withoutGlobalVersion(command));
  await cli
    .demandCommand(1, "name a command")
    .recommendCommands()
    .strict()
    .strictCommands()
    // usage-error.ts reads yargs' English messages, whatever the operator's LANG.
    .locale("en")
    .help()
    .alias("h", "help")
    .version()
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((msg, err) => {
      // A handler's error goes to the catch below (exit 1); usage errors are yargs' own (YError,
      // or no error) or a builder's .check() verdict (a string).
      if (err instanceof Error && err.name !== "YError") throw err;
      const usages = COMMANDS.map((c) => [c.command].flat()[0] ?? "");
      console.error(`moltbot: error: ${usageError(msg, argv, usages)}`);
      process.exit(2);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  const message = err instanceof MoltbotError ? err.message : err instanceof Error ? (process.env.MOLTBOT_DEBUG ? (err.stack ?? err.message) : err.message) : String(err);
  console.error(`moltbot: error: ${message}`);
  process.exit(1);
});
