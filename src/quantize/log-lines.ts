// Reads llama.cpp's quantizer log (llama-quant.cpp's LLAMA_LOG_* lines, which arrive in pieces:
// a tensor's line is printed in two or three calls) into events: one per tensor written, one per
// tensor that could not take the asked type (llama.cpp falls back to another and says so in a
// warning), and its errors. The only channel llama_model_quantize reports progress on.

import { GGML_LOG_LEVEL } from "../engine/libllama.js";

export type QuantizeEvent =
  | { type: "tensor"; index: number; count: number; name: string; from: string; to: string; mib: number }
  | { type: "fallback"; name: string; wanted: string; used: string; reason: string }
  | { type: "error"; message: string }
  | { type: "exit"; code: number };

// "[   3/  12]                  blk.0.attn_q.weight - [   64,    64,     1,     1], type =    f32, converting to q8_0 .. size =     0.02 MiB ->     0.00 MiB"
// "[   1/  12]                   output_norm.weight - [   64,     1,     1,     1], type =    f32, size =    0.000 MiB"
const TENSOR = /^\[\s*(\d+)\/\s*(\d+)\]\s+(\S+)\s+-\s+\[[^\]]*\],\s+type\s*=\s*(\S+),\s*(?:converting to (\S+) \.\.\s*)?size\s*=\s*([\d.]+) MiB(?:\s*->\s*([\d.]+) MiB)?/;
// "warning: blk.0.ffn_down.weight - ncols     96 not divisible by 256 (required for type    q4_K) -> falling back to    q5_0"
const FALLBACK = /warning:\s+(\S+)\s+-\s+(ncols\s+\d+ not divisible by\s+\d+) \(required for type\s+(\S+)\).*->\s*falling back to\s+(\S+)/;

export class LogLineParser {
  private text = "";
  private level: number = GGML_LOG_LEVEL.none;

  constructor(private readonly emit: (event: QuantizeEvent) => void) {}

  /** One piece of log text at its level (CONT pieces already carry their line's level). */
  push(level: number, piece: string): void {
    // An error cuts into a tensor's unfinished line ("... converting to f16 .. "): it is a line of its own.
    if (level >= GGML_LOG_LEVEL.error && this.level < GGML_LOG_LEVEL.error && this.text !== "") {
      this.line(this.text, this.level);
      this.text = "";
    }
    if (level > this.level) this.level = level;
    this.text += piece;
    let nl: number;
    while ((nl = this.text.indexOf("\n")) >= 0) {
      const line = this.text.slice(0, nl);
      this.text = this.text.slice(nl + 1);
      this.line(line, this.level);
      this.level = GGML_LOG_LEVEL.none;
    }
  }

  flush(): void {
    if (this.text.trim() !== "") this.line(this.text, this.level);
    this.text = "";
  }

  private line(line: string, level: number): void {
    const t = TENSOR.exec(line);
    if (t !== null) {
      const from = t[4]!.toUpperCase();
      this.emit({
        type: "tensor",
        index: Number(t[1]),
        count: Number(t[2]),
        name: t[3]!,
        from,
        to: (t[5] ?? t[4]!).toUpperCase(),
        mib: Number(t[7] ?? t[6]),
      });
      return;
    }
    const f = FALLBACK.exec(line);
    if (f !== null) {
      this.emit({ type: "fallback", name: f[1]!, reason: f[2]!.replace(/\s+/g, " "), wanted: f[3]!.toUpperCase(), used: f[4]!.toUpperCase() });
      return;
    }
    if (level >= GGML_LOG_LEVEL.error && line.trim() !== "") this.emit({ type: "error", message: line.trim() });
  }
}
