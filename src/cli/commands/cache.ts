// `moltbot cache stats|clear`: a client of the server's response-cache admin API (/admin/cache).
// The definitions only; the client loads when a command runs (cache-run.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { CA_FILE_OPTION, CONFIG_OPTION, isHttpUrl, TOKEN_OPTION, URL_OPTION } from "../server-url.js";

export interface CacheArgs {
  url?: string;
  config?: string;
  json?: boolean;
  "ca-file"?: string;
  token?: string;
}
export interface CacheClearArgs extends CacheArgs {
  model?: string;
}

const common = (y: Argv, json: string) =>
  y
    .option("url", URL_OPTION)
    .option("config", CONFIG_OPTION)
    .option("ca-file", CA_FILE_OPTION)
    .option("token", TOKEN_OPTION)
    .option("json", { type: "boolean", default: false, describe: json })
    .check((args) => (args.url !== undefined && !isHttpUrl(String(args.url)) ? `option --url: expected an http:// or https:// URL, got '${String(args.url)}'` : true));

const statsCommand: CommandModule<object, CacheArgs> = {
  command: "stats",
  describe: "The response cache's levels: entries, bytes, hits, misses, evictions",
  builder: (y: Argv) => common(y, "print the server's document (GET /admin/cache)").example("$0 cache stats", "the local server's cache figures") as Argv<CacheArgs>,
  handler: async (args: ArgumentsCamelCase<CacheArgs>) => (await import("./cache-run.js")).stats(args),
};

const clearCommand: CommandModule<object, CacheClearArgs> = {
  command: "clear",
  describe: "Drop every cached response (memory and store), or one pool entry's with --model",
  builder: (y: Argv) =>
    common(y, "print the server's answer")
      .option("model", { type: "string", requiresArg: true, describe: "only this pool entry's responses" })
      .example("$0 cache clear --model chat", "forget the cached answers of pool entry chat") as Argv<CacheClearArgs>,
  handler: async (args: ArgumentsCamelCase<CacheClearArgs>) => (await import("./cache-run.js")).clear(args),
};

export const cacheCommand: CommandModule<object, object> = {
  command: "cache",
  describe: "The response cache of a running server: stats, clear",
  builder: (y: Argv) => y.command(statsCommand).command(clearCommand).demandCommand(1, "name a cache command: stats or clear"),
  handler: () => {
    // Only reached through a subcommand, whose handler runs instead.
  },
};
