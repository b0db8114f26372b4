// `moltbot models list|validate|activate|rollback`: a client of the server's model-version admin
// API (/admin/models). The definitions only; the client loads when a command runs (models-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { CA_FILE_OPTION, CONFIG_OPTION, isHttpUrl, TOKEN_OPTION, URL_OPTION } from "../server-url.js";

export interface ModelsArgs {
  url?: string;
  config?: string;
  json?: boolean;
  "ca-file"?: string;
  token?: string;
}
export interface ValidateArgs extends ModelsArgs {
  ref?: string;
}
export interface ActivateArgs extends ModelsArgs {
  name?: string;
  /** The positional VERSION; yargs would merge a positional named `version` into --version. */
  target?: string;
  version?: string;
}
export interface RollbackArgs extends ModelsArgs {
  name?: string;
}

// Positionals are optional to yargs and required by .check(), which names what is missing; yargs'
// own message for a missing positional of a subcommand cannot say which one.
const common = (y: Argv, json: string) =>
  y
    .option("url", URL_OPTION)
    .option("config", CONFIG_OPTION)
    .option("ca-file", CA_FILE_OPTION)
    .option("token", TOKEN_OPTION)
    .option("json", { type: "boolean", default: false, describe: json });

function checkUrl(args: { url?: string }): string | true {
  return args.url !== undefined && !isHttpUrl(args.url) ? `option --url: expected an http:// or https:// URL, got '${args.url}'` : true;
}

const listCommand: CommandModule<object, ModelsArgs> = {
  command: "list",
  describe: "Each model's versions: state, size, quantization, last validation; the active one marked *",
  builder: (y: Argv) =>
    common(y, "print the server's document (GET /admin/models) as it sent it")
      // A string (not a thrown Error) reaches main.ts' fail handler as a usage error: exit 2.
      .check(checkUrl)
      .example("$0 models list", "the local server's models and their versions") as Argv<ModelsArgs>,
  handler: async (args: ArgumentsCamelCase<ModelsArgs>) => (await import("./models-run.js")).list(args),
};

/** NAME or NAME:VERSION, or why not. */
export function parseRef(ref: string): { name: string; version?: string } | { invalid: string } {
  const colon = ref.indexOf(":");
  const name = colon === -1 ? ref : ref.slice(0, colon);
  const version = colon === -1 ? undefined : ref.slice(colon + 1);
  if (name === "" || version === "" || version?.includes(":")) return { invalid: `expected NAME or NAME:VERSION, got '${ref}'` };
  return version === undefined ? { name } : { name, version };
}

const validateCommand: CommandModule<object, ValidateArgs> = {
  command: "validate [ref]",
  describe: "Load NAME's VERSION (default: the active one) beside the serving one and run its checks; exit 0 only when all pass",
  builder: (y: Argv) =>
    common(y, "print the server's validation report")
      .usage("$0 models validate NAME[:VERSION] [options]")
      .positional("ref", { type: "string", describe: "NAME or NAME:VERSION" })
      .check((args) => {
        if (args.ref === undefined) return "missing NAME[:VERSION]";
        const ref = parseRef(String(args.ref));
        if ("invalid" in ref) return ref.invalid;
        return checkUrl(args);
      })
      .example("$0 models validate demo:v2.0", "check v2.0 of demo before activating it") as Argv<ValidateArgs>,
  handler: async (args: ArgumentsCamelCase<ValidateArgs>) => (await import("./models-run.js")).validate(args),
};

const activateCommand: CommandModule<object, ActivateArgs> = {
  command: "activate [name] [target]",
  describe: "Validate NAME's VERSION, then serve it instead of the active one (the old one keeps serving on failure)",
  builder: (y: Argv) =>
    common(y, "print the server's answer")
      .usage("$0 models activate NAME VERSION [options]\n$0 models activate NAME --version VERSION [options]")
      .positional("name", { type: "string", describe: "model name" })
      .positional("target", { type: "string", describe: "version to activate (or --version)" })
      .option("version", { type: "string", requiresArg: true, describe: "version to activate" })
      .check((args) => {
        if (args.name === undefined) return "missing NAME";
        if (args.target !== undefined && args.version !== undefined && String(args.target) !== String(args.version)) {
          return `two versions given: '${args.target}' and --version '${args.version}'`;
        }
        if (args.target === undefined && args.version === undefined) return "missing VERSION (as an argument or --version)";
        return checkUrl(args);
      })
      .example("$0 models activate demo v2.0", "switch demo to v2.0") as Argv<ActivateArgs>,
  handler: async (args: ArgumentsCamelCase<ActivateArgs>) => (await import("./models-run.js")).activate(args),
};

const rollbackCommand: CommandModule<object, RollbackArgs> = {
  command: "rollback [name]",
  describe: "Serve NAME's previous version again",
  builder: (y: Argv) =>
    common(y, "print the server's answer")
      .usage("$0 models rollback NAME [options]")
      .positional("name", { type: "string", describe: "model name" })
      .check((args) => (args.name === undefined ? "missing NAME" : checkUrl(args)))
      .example("$0 models rollback demo", "return demo to the version it served before") as Argv<RollbackArgs>,
  handler: async (args: ArgumentsCamelCase<RollbackArgs>) => (await import("./models-run.js")).rollback(args),
};

export const modelsCommand: CommandModule<object, object> = {
  command: "models",
  describe: "Model versions on a running server: list, validate, activate, rollback",
  builder: (y: Argv) =>
    y
      .command(listCommand)
      .command(validateCommand)
      .command(activateCommand)
      .command(rollbackCommand)
      .demandCommand(1, "name a models command: list, validate, activate or rollback"),
  handler: () => {
    // Only reached through a subcommand, whose handler runs instead.
  },
};
