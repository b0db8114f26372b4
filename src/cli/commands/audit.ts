// `moltbot audit tail|search|verify|erase`: read, check and erase in the hash-chained audit log
// (audit.file) with its key store (<data_dir>/audit-keys.sqlite). Definitions only; the
// implementation loads when a command runs (audit-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface AuditCommonArgs {
  config?: string;
  "data-dir"?: string;
  file?: string;
}
export interface AuditQueryArgs extends AuditCommonArgs {
  user?: string;
  since?: string;
  until?: string;
  action?: string;
  json?: boolean;
  lines?: number;
}
export interface AuditEraseArgs extends AuditCommonArgs {
  user: string;
}

const common = (y: Argv) =>
  y
    .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
    .option("data-dir", { type: "string", requiresArg: true, describe: "state directory holding audit-keys.sqlite (default: data_dir from the config)" })
    .option("file", { type: "string", requiresArg: true, describe: "audit log to read instead of audit.file" });

const query = (y: Argv) =>
  common(y)
    .option("user", { type: "string", requiresArg: true, describe: "only this user's records (found through their pseudonym; none once erased)" })
    .option("since", { type: "string", requiresArg: true, describe: 'from this time: ISO 8601 ("2026-11-30T14:00:00Z") or a duration ago ("2h", "7d")' })
    .option("until", { type: "string", requiresArg: true, describe: "up to this time (same forms as --since)" })
    .option("action", { type: "string", requiresArg: true, describe: "only this action: request, model.activate, model.rollback, model.validate, budget.reset, token.create, token.revoke, config.reload, audit.erase (a prefix like model. works)" })
    .option("json", { type: "boolean", default: false, describe: "print the records as JSON lines (users resolved where their key is kept)" });

const tailCommand: CommandModule<object, AuditQueryArgs> = {
  command: "tail",
  describe: "The last records of the audit log",
  builder: (y: Argv) =>
    query(y)
      .option("lines", { alias: "n", type: "number", default: 20, describe: "how many records" })
      .example("$0 audit tail -n 50 --action model.", "the last 50 model admin actions") as Argv<AuditQueryArgs>,
  handler: async (args: ArgumentsCamelCase<AuditQueryArgs>) => (await import("./audit-run.js")).auditQuery(args, "tail"),
};

const searchCommand: CommandModule<object, AuditQueryArgs> = {
  command: "search",
  describe: "Every record matching the filters, oldest first",
  builder: (y: Argv) => query(y).example("$0 audit search --user alice --since 7d --json", "alice's records of the last week") as Argv<AuditQueryArgs>,
  handler: async (args: ArgumentsCamelCase<AuditQueryArgs>) => (await import("./audit-run.js")).auditQuery(args, "search"),
};

const verifyCommand: CommandModule<object, AuditCommonArgs> = {
  command: "verify",
  describe: "Check the hash chain from the checkpoint (or the first record) to the last; names the first broken, missing or reordered record and exits 1",
  builder: (y: Argv) => common(y) as Argv<AuditCommonArgs>,
  handler: async (args: ArgumentsCamelCase<AuditCommonArgs>) => (await import("./audit-run.js")).auditVerify(args),
};

const eraseCommand: CommandModule<object, AuditEraseArgs> = {
  command: "erase",
  describe: "Forget a user's pseudonym key (GDPR erasure): their records stay and still verify, but no longer lead to them",
  builder: (y: Argv) =>
    common(y)
      .option("user", { type: "string", requiresArg: true, demandOption: true, describe: "the user (principal subject) to erase" })
      .example("$0 audit erase --user alice", "alice's records can no longer be found or linked to her") as Argv<AuditEraseArgs>,
  handler: async (args: ArgumentsCamelCase<AuditEraseArgs>) => (await import("./audit-run.js")).auditErase(args),
};

export const auditCommand: CommandModule<object, object> = {
  command: "audit",
  describe: "The audit log: tail, search, verify, erase",
  builder: (y: Argv) => y.command(tailCommand).command(searchCommand).command(verifyCommand).command(eraseCommand).demandCommand(1, "name an audit command: tail, search, verify or erase"),
  handler: () => {
    // Only reached through a subcommand, whose handler runs instead.
  },
};
