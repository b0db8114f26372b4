// Child-process entry of the demo model builder (it loads llama.cpp, which the server's main
// process never does). Usage:
//   build-demo-main --out FILE [--vocab N] [--type f32|f16|q8_0] [--eval-files N|all] [--threads N]
// Prints exactly one JSON line of DemoBuildStats on stdout; progress goes to stderr.

import { parseArgs } from "node:util";
import { buildDemoModel } from "./build-demo-model.js";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: "string" },
      vocab: { type: "string" },
      type: { type: "string" },
      "eval-files": { type: "string" },
      threads: { type: "string" },
    },
  });
  if (values.out === undefined) throw new Error("--out FILE is required");
  const type = values.type;
  if (type !== undefined && type !== "f32" && type !== "f16" && type !== "q8_0") throw new Error("--type must be f32, f16 or q8_0");
  const evalArg = values["eval-files"];
  const stats = await buildDemoModel({
    outPath: values.out,
    ...(values.vocab !== undefined ? { vocabSize: Number(values.vocab) } : {}),
    ...(type !== undefined ? { tensorType: type } : {}),
    evalFiles: evalArg === undefined ? 0 : evalArg === "all" ? Infinity : Number(evalArg),
    threads: values.threads === undefined ? 1 : Number(values.threads),
    log: (msg) => process.stderr.write(`[demo-build] ${msg}\n`),
  });
  process.stdout.write(JSON.stringify(stats) + "\n");
}

main().then(
  () => process.exit(0), // llama.cpp's threads must not keep the child alive
  (err: unknown) => {
    process.stderr.write(`build-demo-main: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
