// `moltbot status`: a running server's models, workers, queues, rates and budgets, from its
// GET /admin/status; once, or redrawn in place every --interval seconds like top. The
// definition only; the client loads when the command runs (status-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { CA_FILE_OPTION, CONFIG_OPTION, isHttpUrl, TOKEN_OPTION, URL_OPTION } from "../server-url.js";

export interface StatusArgs {
  url?: string;
  interval?: number;
  json?: boolean;
  config?: string;
  "ca-file"?: string;
  token?: string;
}

export const statusCommand: CommandModule<object, StatusArgs> = {
  command: "status",
  describe: "Show a running server's models, workers, queues, rates and budgets (once, or every --interval seconds)",
  builder: (y: Argv) =>
    y
      .option("url", URL_OPTION)
      .option("interval", { type: "number", requiresArg: true, describe: "redraw every SECONDS until Ctrl-C, riding out server restarts (default: print once)" })
      .option("json", { type: "boolean", default: false, describe: "print one JSON object per refresh, one line each" })
      .option("config", CONFIG_OPTION)
      .option("ca-file", CA_FILE_OPTION)
      .option("token", TOKEN_OPTION)
      // A string (not a thrown Error) reaches main.ts' fail handler as a usage error: exit 2.
      .check((args) => {
        if (args.interval !== undefined && !(Number.isFinite(args.interval) && args.interval > 0)) return "option --interval: expected a number of seconds > 0, like 2 or 0.5";
        if (args.url !== undefined && !isHttpUrl(args.url)) return `option --url: expected an http:// or https:// URL, got '${args.url}'`;
        return true;
      })
      .example("$0 status", "print the local server's status once")
      .example("$0 status --url http://10.0.0.5:8080 --interval 2", "watch a server, refreshed every 2 s (Ctrl-C ends)")
      .example("$0 status --json --interval 10 >> status.jsonl", "one JSON line every 10 s for scripts") as Argv<StatusArgs>,
  handler: async (args: ArgumentsCamelCase<StatusArgs>) => (await import("./status-run.js")).status(args),
};
