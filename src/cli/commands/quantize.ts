// `moltbot quantize`: a model version (or a GGUF file) converted to another precision by
// llama.cpp's own quantizer, written as a new version folder. The definition only; the
// implementation (quantize-run.ts) loads when the command runs.
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { findPrecision, precisionNames } from "../../quantize/precisions.js";
import { parseRef } from "./models.js";

export interface QuantizeArgs {
  model?: string;
  input?: string;
  precision?: string;
  "output-version"?: string;
  output?: string;
  threads?: number;
  eval?: boolean;
  force?: boolean;
  "allow-requantize"?: boolean;
  "model-path"?: string;
  config?: string;
  json?: boolean;
}

export const quantizeCommand: CommandModule<object, QuantizeArgs> = {
  command: "quantize",
  describe: "Convert a model version to another precision (fp16, int8, int4, q5_k_m, ...) with llama.cpp's quantizer, as a new version",
  builder: (y: Argv) =>
    y
      .usage("$0 quantize --model NAME[:VERSION] | --input FILE --precision P [--output-version V | --output FILE] [options]")
      .option("model", { type: "string", requiresArg: true, describe: "NAME or NAME:VERSION in the model repository (default version: the newest)" })
      .option("input", { type: "string", requiresArg: true, describe: "a GGUF file to convert instead of a repository version" })
      .option("precision", { type: "string", requiresArg: true, describe: `target precision: ${precisionNames().join(", ")} (int8 = q8_0, int4 = q4_k_m)` })
      .option("output-version", { type: "string", requiresArg: true, describe: "version folder to write beside the source (default: <source version>-<precision>, e.g. v2.0-int8)" })
      .option("output", { type: "string", requiresArg: true, describe: "GGUF file to write instead of a version folder" })
      .option("threads", { type: "number", requiresArg: true, describe: "quantizer threads (default: all cores)" })
      .option("eval", { type: "boolean", describe: "then compare the output with its source on this machine: size, tokens/s, perplexity, KL divergence, top-1 agreement" })
      .option("force", { type: "boolean", describe: "replace an existing output" })
      .option("allow-requantize", { type: "boolean", describe: "quantize a model that is already quantized (its error adds to the first one's)" })
      .option("model-path", { type: "string", requiresArg: true, describe: "model repository (default: model_path from the config)" })
      .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read model_path from (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
      .option("json", { type: "boolean", describe: "print the result (and the evaluation) as one JSON document" })
      .check((args) => {
        if ((args.model === undefined) === (args.input === undefined)) return "name the source: --model NAME[:VERSION] or --input FILE (one of them)";
        if (args.precision === undefined) return "missing --precision";
        if (findPrecision(String(args.precision)) === undefined) return `unknown precision '${args.precision}' (valid: ${precisionNames().join(", ")})`;
        if (args.model !== undefined) {
          const ref = parseRef(String(args.model));
          if ("invalid" in ref) return `--model: ${ref.invalid}`;
        }
        if (args["output-version"] !== undefined && args.output !== undefined) return "give --output-version or --output, not both";
        if (args.input !== undefined && args.output === undefined) return "--input needs --output FILE";
        if (args.threads !== undefined && (!Number.isInteger(args.threads) || args.threads < 1)) return `--threads: expected an integer >= 1, got ${args.threads}`;
        return true;
      })
      .example("$0 quantize --model demo:v2.0 --precision int8", "write demo's v2.0-int8 beside v2.0 (then: moltbot models validate demo:v2.0-int8)")
      .example("$0 quantize --input model-f16.gguf --precision q4_k_m --output model-q4.gguf --eval", "convert a file and measure what it costs") as Argv<QuantizeArgs>,
  handler: async (args: ArgumentsCamelCase<QuantizeArgs>) => (await import("./quantize-run.js")).quantize(args),
};
