// The Quantizer (PRODUCT.md 3.1): converts a GGUF to another precision with llama.cpp's own
// quantizer (llama_model_quantize), run in a child process (quantize-main) so the caller's
// process, a server's included, never blocks or maps libllama. The output is written to a
// temporary file beside the target and renamed into place only when llama.cpp succeeded and the
// file reads back whole, so a failure, a full disk or an abort leaves nothing behind.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, rename, rm, stat, statfs } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MoltbotError } from "../errors.js";
import { checkGgufIntegrity, KNOWN_GGML_TYPES } from "../gguf/integrity.js";
import { isGgufFile, readGgufLayout } from "../gguf/reader.js";
import type { QuantizeEvent } from "./log-lines.js";
import { FLOAT_TYPES, findPrecision, precisionNames, type Precision } from "./precisions.js";

export interface QuantizerOptions {
  /** The GGUF to convert (F32/F16/BF16; a quantized one only with allowRequantize). */
  modelPath: string;
}

export interface QuantizeProgress {
  /** 1-based index of the tensor just written, of `count`. */
  index: number;
  count: number;
  name: string;
  /** ggml type names, e.g. "F32" -> "Q8_0" (equal when the tensor is copied as it is). */
  from: string;
  to: string;
}

export interface ConvertOptions {
  /** `int8`, `fp16`, `int4` or a llama.cpp file type (`q8_0`, `q4_k_m`, ...): see precisionNames(). */
  precision: string;
  outputPath: string;
  /** Quantizer threads; default: all cores. */
  threads?: number;
  /** Replace an existing output file. */
  force?: boolean;
  /** Quantize a model that is already quantized (each step loses accuracy). */
  allowRequantize?: boolean;
  onProgress?: (p: QuantizeProgress) => void;
  /** Aborting kills the quantizer and removes the partial output. */
  signal?: AbortSignal;
}

/** A tensor llama.cpp could not give the asked type (its row length does not fit the type's blocks). */
export interface TensorFallback {
  name: string;
  wanted: string;
  used: string;
  reason: string;
}

export interface ConvertResult {
  inputPath: string;
  outputPath: string;
  /** The precision's llama.cpp name (`q8_0`) and file type (`Q8_0`). */
  precision: string;
  fileType: string;
  inputBytes: number;
  outputBytes: number;
  /** 1 - outputBytes / inputBytes. */
  reduction: number;
  /** Wall time of the conversion (the child process included). */
  seconds: number;
  tensorCount: number;
  /** Tensors of the output by ggml type, read back from the file: {"Q8_0": 14, "F32": 5}. */
  tensorTypes: Record<string, number>;
  /** Tensors that kept another type than the one asked (llama.cpp's fallbacks). */
  fallbacks: TensorFallback[];
  /** SHA-256 of the output file (hex). */
  sha256: string;
}

function fail(message: string, cause?: unknown): never {
  throw new MoltbotError("quantization_failed", message, cause === undefined ? undefined : { cause });
}

/** The type names of a file's multi-dimensional tensors that are quantized (not floats). */
async function quantizedTypes(file: string): Promise<string[]> {
  const layout = await readGgufLayout(file);
  const types = new Set<string>();
  for (const t of layout.tensors) {
    if (t.dims.filter((d) => d > 1).length < 2) continue;
    const name = KNOWN_GGML_TYPES.get(t.type)?.name ?? `type ${t.type}`;
    if (!FLOAT_TYPES.has(name)) types.add(name);
  }
  return [...types];
}

/** RLIMIT_FSIZE in bytes (a child inherits it), from /proc; undefined when unlimited or unknown. */
async function fileSizeLimit(): Promise<number | undefined> {
  const text = await readFile("/proc/self/limits", "utf8").catch(() => "");
  const m = /^Max file size\s+(\d+)/m.exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The child entry beside this module: .js under dist/, .ts under tsx (then tsx is loaded too). */
function childCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith(".ts");
  const entry = path.join(path.dirname(here), ts ? "quantize-main.ts" : "quantize-main.js");
  return [...(ts ? ["--import", import.meta.resolve("tsx")] : []), entry];
}

export class Quantizer {
  readonly modelPath: string;

  constructor(opts: QuantizerOptions) {
    this.modelPath = path.resolve(opts.modelPath);
  }

  /** Checks everything that can be checked before the child starts; the resolved precision. */
  async check(opts: ConvertOptions): Promise<Precision> {
    const precision = findPrecision(opts.precision);
    if (precision === undefined) fail(`unknown precision '${opts.precision}' (valid: ${precisionNames().join(", ")})`);
    const input = this.modelPath;
    const st = await stat(input).catch(() => undefined);
    if (st === undefined) fail(`${input}: input model does not exist`);
    if (!st.isFile()) fail(`${input}: input model is not a file`);
    if (!(await isGgufFile(input))) fail(`${input}: not a GGUF file (wrong magic bytes)`);
    await checkGgufIntegrity(input).catch((err: unknown) => fail(`${input}: ${(err as Error).message.replace(`${input}: `, "")}`, err));
    const output = path.resolve(opts.outputPath);
    if (output === input) fail(`${output}: the output would overwrite the input`);
    if (!opts.force && (await stat(output).catch(() => undefined)) !== undefined) fail(`${output}: output exists (pass --force to replace it)`);
    if (!(await stat(path.dirname(output)).catch(() => undefined))?.isDirectory()) fail(`${path.dirname(output)}: output folder does not exist`);
    if (!opts.allowRequantize) {
      const quantized = await quantizedTypes(input);
      if (quantized.length > 0) {
        fail(`${input} is already quantized (${quantized.join(", ")}): quantizing it again compounds the rounding error; quantize the F32/F16 original, or pass --allow-requantize`);
      }
    }
    return precision;
  }

  async convert(opts: ConvertOptions): Promise<ConvertResult> {
    const t0 = performance.now();
    const precision = await this.check(opts);
    const output = path.resolve(opts.outputPath);
    // Hidden, beside the target: the same file system (rename is atomic) and never taken for a model.
    const tmp = path.join(path.dirname(output), `.${path.basename(output)}.partial-${process.pid}-${Date.now()}`);
    try {
      const fallbacks = await this.runChild(precision, tmp, opts);
      const integrity = await checkGgufIntegrity(tmp).catch((err: unknown) => fail(`the quantized file does not read back whole: ${(err as Error).message}`, err));
      const layout = await readGgufLayout(tmp);
      const tensorTypes: Record<string, number> = {};
      for (const t of layout.tensors) {
        const name = KNOWN_GGML_TYPES.get(t.type)?.name ?? `type ${t.type}`;
        tensorTypes[name] = (tensorTypes[name] ?? 0) + 1;
      }
      const sha256 = await sha256File(tmp);
      opts.signal?.throwIfAborted();
      await rename(tmp, output);
      const inputBytes = (await stat(this.modelPath)).size;
      return {
        inputPath: this.modelPath,
        outputPath: output,
        precision: precision.name,
        fileType: precision.fileType,
        inputBytes,
        outputBytes: integrity.sizeBytes,
        reduction: 1 - integrity.sizeBytes / inputBytes,
        seconds: (performance.now() - t0) / 1000,
        tensorCount: integrity.tensorCount,
        tensorTypes,
        fallbacks,
        sha256,
      };
    } catch (err) {
      await rm(tmp, { force: true });
      if (opts.signal?.aborted) fail("quantization aborted; no output written", err);
      throw err;
    }
  }

  private async runChild(precision: Precision, tmp: string, opts: ConvertOptions): Promise<TensorFallback[]> {
    opts.signal?.throwIfAborted();
    const threads = opts.threads ?? availableParallelism();
    const args = [...childCommand(), "--input", this.modelPath, "--output", tmp, "--ftype", String(precision.ftype), "--threads", String(threads)];
    if (opts.allowRequantize) args.push("--allow-requantize");
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const onAbort = () => child.kill("SIGKILL");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const fallbacks: TensorFallback[] = [];
    const errors: string[] = [];
    let stderr = "";
    let pending = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      pending += d;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let ev: QuantizeEvent;
        try {
          ev = JSON.parse(line) as QuantizeEvent;
        } catch {
          continue; // not ours (native code printing to stdout)
        }
        if (ev.type === "tensor") opts.onProgress?.({ index: ev.index, count: ev.count, name: ev.name, from: ev.from, to: ev.to });
        else if (ev.type === "fallback") fallbacks.push({ name: ev.name, wanted: ev.wanted, used: ev.used, reason: ev.reason });
        else if (ev.type === "error") errors.push(ev.message);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-4000)));
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (c, s) => resolve({ code: c, signal: s }));
    }).finally(() => opts.signal?.removeEventListener("abort", onAbort));
    opts.signal?.throwIfAborted();
    if (code === 0) return fallbacks;
    const written = (await stat(tmp).catch(() => undefined))?.size ?? 0;
    const limit = await fileSizeLimit();
    if (signal === "SIGXFSZ" || (limit !== undefined && written >= limit)) {
      fail(`the output ${opts.outputPath} grew past this process's file size limit (ulimit -f: ${limit ?? "?"} bytes); no output written`);
    }
    const free = await statfs(path.dirname(tmp)).then((s) => s.bavail * s.bsize).catch(() => undefined);
    const why = errors.map((e) => e.replace(/^llama_model_quantize: failed to quantize: /, "")).join("; ");
    if (free !== undefined && free < 1 << 20 && (why === "" || /iostream|write|space/i.test(why))) {
      fail(`no space left on the device of ${path.dirname(path.resolve(opts.outputPath))} (${free} bytes free) while writing the quantized model; no output written`);
    }
    const tail = stderr.trim().split("\n").slice(-3).join(" | ");
    fail(`llama.cpp could not quantize ${this.modelPath} to ${precision.name}: ${why || tail || `quantizer exited with ${signal ?? code}`}`);
  }
}
