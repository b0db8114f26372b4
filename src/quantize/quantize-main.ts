// Child-process entry of the quantizer: llama.cpp's own llama_model_quantize, through the shipped
// libllama. It runs for seconds to minutes in one synchronous native call, so it never runs in
// a process that serves or waits on anything (Quantizer spawns this). Usage:
//   quantize-main --input FILE --output FILE --ftype N [--threads N] [--allow-requantize]
// Protocol: JSON lines on stdout (QuantizeEvent), written synchronously from llama.cpp's log
// callback while the native call runs (the event loop is blocked meanwhile, so process.send or
// process.stdout would deliver nothing until the end). Exit 0 only when llama.cpp returned 0.

import { writeSync } from "node:fs";
import { parseArgs } from "node:util";
import { GGML_LOG_LEVEL, loadLibLlama, setLlamaLogging } from "../engine/libllama.js";
import { LogLineParser, type QuantizeEvent } from "./log-lines.js";

function emit(event: QuantizeEvent): void {
  const line = JSON.stringify(event) + "\n";
  // fd 1 is a blocking pipe the parent spawned; a short write is retried.
  let buf = Buffer.from(line);
  while (buf.length > 0) buf = buf.subarray(writeSync(1, buf));
}

function main(): number {
  const { values } = parseArgs({
    options: {
      input: { type: "string" },
      output: { type: "string" },
      ftype: { type: "string" },
      threads: { type: "string" },
      "allow-requantize": { type: "boolean", default: false },
    },
  });
  if (values.input === undefined || values.output === undefined || values.ftype === undefined) {
    throw new Error("--input, --output and --ftype are required");
  }
  const parser = new LogLineParser(emit);
  setLlamaLogging({ minLevel: GGML_LOG_LEVEL.info, sink: (level, text) => parser.push(level, text) });
  const lib = loadLibLlama();
  const params = lib.llama_model_quantize_default_params();
  params.ftype = Number(values.ftype);
  params.nthread = values.threads === undefined ? 0 : Number(values.threads);
  params.allow_requantize = values["allow-requantize"];
  const rc = lib.llama_model_quantize(values.input, values.output, params);
  parser.flush();
  emit({ type: "exit", code: rc });
  return rc === 0 ? 0 : 1;
}

try {
  // llama.cpp's threads must not keep the child alive.
  process.exit(main());
} catch (err) {
  process.stderr.write(`quantize-main: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
