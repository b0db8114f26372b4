// `moltbot token create|list|revoke|issue|reset-store`: API keys for machines (hashed in
// <data_dir>/tokens.sqlite; a revoke takes effect at once on a running server) and JWTs signed
// with the configured HS key for operators without an identity provider. The definitions only;
// the store and the config load when a command runs (token-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface TokenCommonArgs {
  config?: string;
  "data-dir"?: string;
  json?: boolean;
}
export interface TokenCreateArgs extends TokenCommonArgs {
  name: string;
  scopes: string;
  models?: string;
  expires?: string;
  "cost-limit"?: number;
}
export interface TokenRevokeArgs extends TokenCommonArgs {
  name: string;
}
export interface TokenIssueArgs extends TokenCommonArgs {
  sub: string;
  scopes: string;
  ttl: string;
  models?: string;
  "cost-limit"?: number;
}

const common = (y: Argv) =>
  y
    .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
    .option("data-dir", { type: "string", requiresArg: true, describe: "state directory holding tokens.sqlite (default: data_dir from the config)" })
    .option("json", { type: "boolean", default: false, describe: "print JSON" });

const scopesOption = { type: "string", requiresArg: true, demandOption: true, describe: "scopes, comma or space separated: inference, admin, metrics" } as const;
const modelsOption = { type: "string", requiresArg: true, describe: "pool entries the token may use, comma separated (default: all)" } as const;
const costOption = { type: "number", requiresArg: true, describe: "monthly cost cap of this subject, in the pricing currency" } as const;

const createCommand: CommandModule<object, TokenCreateArgs> = {
  command: "create",
  describe: "Create an API key; it is printed once, only its hash is kept",
  builder: (y: Argv) =>
    common(y)
      .option("name", { type: "string", requiresArg: true, demandOption: true, describe: "key name (the subject is key:NAME)" })
      .option("scopes", scopesOption)
      .option("models", modelsOption)
      .option("expires", { type: "string", requiresArg: true, describe: "lifetime, like 30d or 12h (default: never)" })
      .option("cost-limit", costOption)
      .example("$0 token create --name ci --scopes inference --expires 30d", "a key for CI that can only run inference") as Argv<TokenCreateArgs>,
  handler: async (args: ArgumentsCamelCase<TokenCreateArgs>) => (await import("./token-run.js")).create(args),
};

const listCommand: CommandModule<object, TokenCommonArgs> = {
  command: "list",
  describe: "API keys: name, scopes, models, created, expires, revoked (never the keys)",
  builder: (y: Argv) => common(y) as Argv<TokenCommonArgs>,
  handler: async (args: ArgumentsCamelCase<TokenCommonArgs>) => (await import("./token-run.js")).list(args),
};

const revokeCommand: CommandModule<object, TokenRevokeArgs> = {
  command: "revoke <name>",
  describe: "Revoke the API key NAME (or id); a running server refuses it from its next request",
  builder: (y: Argv) => common(y).positional("name", { type: "string", demandOption: true, describe: "key name or id" }) as Argv<TokenRevokeArgs>,
  handler: async (args: ArgumentsCamelCase<TokenRevokeArgs>) => (await import("./token-run.js")).revoke(args),
};

const resetStoreCommand: CommandModule<object, TokenCommonArgs> = {
  command: "reset-store",
  describe: "Accept the API key store as it is now when it no longer matches tokens.marker.json (deleted or emptied: a new, empty one; an older copy: kept, revoke again what was revoked since)",
  builder: (y: Argv) => common(y) as Argv<TokenCommonArgs>,
  handler: async (args: ArgumentsCamelCase<TokenCommonArgs>) => (await import("./token-run.js")).resetStore(args),
};

const issueCommand: CommandModule<object, TokenIssueArgs> = {
  command: "issue",
  describe: "Sign a JWT with the configured HS key (security.jwt.secret or secret_file)",
  builder: (y: Argv) =>
    common(y)
      .option("sub", { type: "string", requiresArg: true, demandOption: true, describe: "subject (who the token acts for)" })
      .option("scopes", scopesOption)
      .option("ttl", { type: "string", requiresArg: true, default: "1h", describe: "lifetime, like 1h or 7d" })
      .option("models", modelsOption)
      .option("cost-limit", costOption)
      .example("$0 token issue --sub alice --scopes inference --ttl 1h", "a one-hour token for alice") as Argv<TokenIssueArgs>,
  handler: async (args: ArgumentsCamelCase<TokenIssueArgs>) => (await import("./token-run.js")).issue(args),
};

export const tokenCommand: CommandModule<object, object> = {
  command: "token",
  describe: "API keys and signed tokens: create, list, revoke, issue, reset-store",
  builder: (y: Argv) =>
    y.command(createCommand).command(listCommand).command(revokeCommand).command(issueCommand).command(resetStoreCommand).demandCommand(1, "name a token command: create, list, revoke, issue or reset-store"),
  handler: () => {
    // Only reached through a subcommand, whose handler runs instead.
  },
};
