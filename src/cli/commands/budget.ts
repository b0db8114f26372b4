// `moltbot budget status|reset`: read and reset the monthly spend of each pool entry, straight
// from the ledger file under the data directory. The definitions only; the ledger and the
// config load when a command runs (budget-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface CommonArgs {
  config?: string;
  "data-dir"?: string;
}
export interface BudgetStatusArgs extends CommonArgs {
  json?: boolean;
}
export interface BudgetResetArgs extends CommonArgs {
  name?: string;
  all?: boolean;
}

const common = (y: Argv) =>
  y
    .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
    .option("data-dir", { type: "string", requiresArg: true, describe: "state directory holding ledger.sqlite (default: data_dir from the config)" });

const statusCommand: CommandModule<object, BudgetStatusArgs> = {
  command: "status",
  describe: "Spend, reservations, limit and remaining per pool entry for the current month (UTC)",
  builder: (y: Argv) =>
    common(y)
      .option("json", { type: "boolean", default: false, describe: "print a JSON array instead of a table" })
      .example("$0 budget status --config /etc/moltbot/moltbot.yaml", "this month's spend per pool entry") as Argv<BudgetStatusArgs>,
  handler: async (args: ArgumentsCamelCase<BudgetStatusArgs>) => (await import("./budget-run.js")).budgetStatus(args),
};

const resetCommand: CommandModule<object, BudgetResetArgs> = {
  command: "reset [name]",
  describe: "Start the current month of pool entry NAME (or --all) over: spent and reservations to 0 (recorded with your user name)",
  builder: (y: Argv) =>
    common(y)
      .positional("name", { type: "string", describe: "pool entry (model_pool[].name)" })
      .option("all", { type: "boolean", describe: "every entry; also accepts a new, empty ledger when the recorded one was emptied or deleted" })
      .check((a) => (a.all === true) !== (a.name !== undefined) || "name one pool entry, or --all")
      .example("$0 budget reset text-generation", "let text-generation spend its whole cost_limit again this month")
      .example("$0 budget reset --all", "start every entry's month over (and accept a new ledger after the old one was lost)") as Argv<BudgetResetArgs>,
  handler: async (args: ArgumentsCamelCase<BudgetResetArgs>) => (await import("./budget-run.js")).budgetReset(args),
};

export const budgetCommand: CommandModule<object, object> = {
  command: "budget",
  describe: "Monthly spend per pool entry: status, reset",
  builder: (y: Argv) => y.command(statusCommand).command(resetCommand).demandCommand(1, "name a budget command: status or reset"),
  handler: () => {
    // Only reached through a subcommand, whose handler runs instead.
  },
};

