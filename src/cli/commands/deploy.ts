// `moltbot deploy`: serve a model repository (or the built-in demo model) in the foreground.
// The definition only: the server and its dependencies load when the command runs (deploy-run.ts),
// so `--help` and the other commands start without them.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";

export interface DeployArgs {
  "model-path"?: string;
  port?: number;
  host?: string;
  config?: string;
  threads?: number;
  engine?: "ffi" | "node-llama-cpp";
  gpu?: "auto" | "cuda" | "vulkan" | "off";
  "log-level"?: "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL";
  "log-format"?: "text" | "json";
  "accept-new-ledger"?: boolean;
}

export const deployCommand: CommandModule<object, DeployArgs> = {
  command: "deploy",
  describe: "Serve models over the OpenAI-compatible HTTP API (foreground; SIGTERM/SIGINT drain and exit, SIGHUP re-reads the config)",
  builder: (y: Argv) =>
    y
      .option("model-path", { type: "string", requiresArg: true, describe: "model repository folder, version folder or GGUF file (default: model_path from the config, else the built-in demo model)" })
      .option("port", { type: "number", requiresArg: true, describe: "TCP port to listen on (default 8080; 0 picks a free one)" })
      .option("host", { type: "string", requiresArg: true, describe: "address to listen on (default 127.0.0.1)" })
      .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
      .option("threads", { type: "number", requiresArg: true, describe: "CPU threads per model worker (default: measured best, see docs/benchmarks.md)" })
      .option("engine", { choices: ["ffi", "node-llama-cpp"] as const, describe: "decode loop implementation (default ffi)" })
      .option("gpu", { choices: ["auto", "cuda", "vulkan", "off"] as const, describe: "compute backend, overriding engine.backend: auto (CUDA, else Vulkan, else CPU), cuda, vulkan (an error when it cannot load), off (the CPU)" })
      .option("log-level", { choices: ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] as const, describe: "log level" })
      .option("log-format", { choices: ["text", "json"] as const, describe: "log line format" })
      .option("accept-new-ledger", { type: "boolean", describe: "start a new, empty budget ledger when the one data_dir recorded was emptied or deleted (else the start is refused)" })
      .example("$0 deploy", "serve the built-in demo model on 127.0.0.1:8080")
      .example("MODEL_VERSION=v2.0 $0 deploy --model-path /models --port 8080", "serve version v2.0 of the repository in /models") as Argv<DeployArgs>,
  handler: async (args: ArgumentsCamelCase<DeployArgs>) => (await import("./deploy-run.js")).deploy(args),
};
