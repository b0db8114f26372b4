// `moltbot quantize --eval`: what a quantized file costs and gains against its source on this
// machine, measured in a child process (eval-main) through Moltbot's own engine, and drawn as
// one table. The main process loads no llama.cpp.

import { spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MoltbotError } from "../errors.js";

export interface ModelSpeed {
  bytes: number;
  promptTokensPerSecond: number;
  /** Generation, one stream. */
  tokensPerSecond1: number;
  /** Generation, 8 streams together (all of them). */
  tokensPerSecond8: number;
}

export interface EvalReport {
  threads: number;
  source: ModelSpeed;
  output: ModelSpeed;
  accuracy: {
    /** Positions scored. */
    tokens: number;
    perplexitySource: number;
    perplexityOutput: number;
    /** Mean of KL(P_source || P_output) over the positions, in nats. */
    meanKl: number;
    maxKl: number;
    /** Share of positions where both models rank the same token first. */
    top1Agreement: number;
  };
  seconds: number;
}

export interface EvaluateOptions {
  sourcePath: string;
  outputPath: string;
  threads?: number;
  /** Held-out tokens to score (windows of 512); default 4096. */
  tokens?: number;
  log?: ((msg: string) => void) | undefined;
}

function childCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith(".ts");
  const entry = path.join(path.dirname(here), ts ? "eval-main.ts" : "eval-main.js");
  return [...(ts ? ["--import", import.meta.resolve("tsx")] : []), entry];
}

export async function evaluateQuantization(opts: EvaluateOptions): Promise<EvalReport> {
  const threads = opts.threads ?? availableParallelism();
  const args = [...childCommand(), "--source", opts.sourcePath, "--output", opts.outputPath, "--threads", String(threads), "--tokens", String(opts.tokens ?? 4096)];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-4000);
    for (const line of d.split("\n")) if (line.startsWith("[quantize-eval] ")) opts.log?.(line.slice(16));
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  const line = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || line === "") {
    const tail = stderr.trim().split("\n").filter((l) => !l.startsWith("[quantize-eval]")).slice(-3).join(" | ");
    throw new MoltbotError("engine_error", `the evaluation failed (exit ${code}): ${tail}`);
  }
  return JSON.parse(line) as EvalReport;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const f1 = (n: number) => n.toFixed(1);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

/** The report as a table: one row per figure, source, output, and output against source. */
export function renderEvaluation(r: EvalReport): string[] {
  const s = r.source;
  const o = r.output;
  const a = r.accuracy;
  const rows: [string, string, string, string][] = [
    ["", "source", "quantized", "change"],
    ["size", mib(s.bytes), mib(o.bytes), `${((1 - o.bytes / s.bytes) * 100).toFixed(1)}% smaller`],
    ["prompt tokens/s", f1(s.promptTokensPerSecond), f1(o.promptTokensPerSecond), ratio(o.promptTokensPerSecond, s.promptTokensPerSecond)],
    ["tokens/s, 1 stream", f1(s.tokensPerSecond1), f1(o.tokensPerSecond1), ratio(o.tokensPerSecond1, s.tokensPerSecond1)],
    ["tokens/s, 8 streams", f1(s.tokensPerSecond8), f1(o.tokensPerSecond8), ratio(o.tokensPerSecond8, s.tokensPerSecond8)],
    ["perplexity", a.perplexitySource.toFixed(3), a.perplexityOutput.toFixed(3), `${(((a.perplexityOutput / a.perplexitySource) - 1) * 100).toFixed(2)}%`],
    ["mean KL (nats)", "", a.meanKl.toExponential(2), `max ${a.maxKl.toExponential(2)}`],
    ["top-1 agreement", "", `${(a.top1Agreement * 100).toFixed(2)}%`, ""],
  ];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => row[i]!.length)));
  const out = rows.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd());
  out.push(`(${r.threads} threads; accuracy over ${a.tokens} held-out Brown Corpus tokens; ${r.seconds.toFixed(0)} s)`);
  return out;
}
