// A small GGUF v3 writer: enough to emit llama-architecture models (metadata of every scalar
// type, string/number arrays, F32/F16/Q8_0 tensors). Tensor data is streamed chunk by chunk so
// a 100M-parameter model never needs a second copy in memory, and the file appears atomically
// (tmp file + fsync + rename) so a crash never leaves a half-written model where a loader or
// the repository scanner could pick it up.

import { open, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { MoltbotError } from "../errors.js";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  TensorTypes,
  ValueType,
  alignUp,
  tensorByteSize,
} from "./format.js";
import type { ScalarTypeName, TensorTypeName } from "./format.js";

export type { TensorTypeName } from "./format.js";

type NumberTypeName = "uint8" | "int8" | "uint16" | "int16" | "uint32" | "int32" | "float32" | "float64";

export type GgufValue =
  | { type: NumberTypeName; value: number }
  | { type: "uint64" | "int64"; value: number | bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; itemType: ScalarTypeName; value: ArrayLike<number | bigint | boolean | string> };

/** Typed constructors, so call sites read `gv.u32(4096)` instead of object literals. */
export const gv = {
  u32: (value: number): GgufValue => ({ type: "uint32", value }),
  i32: (value: number): GgufValue => ({ type: "int32", value }),
  u64: (value: number | bigint): GgufValue => ({ type: "uint64", value }),
  f32: (value: number): GgufValue => ({ type: "float32", value }),
  bool: (value: boolean): GgufValue => ({ type: "bool", value }),
  str: (value: string): GgufValue => ({ type: "string", value }),
  strs: (value: readonly string[]): GgufValue => ({ type: "array", itemType: "string", value }),
  f32s: (value: ArrayLike<number>): GgufValue => ({ type: "array", itemType: "float32", value }),
  i32s: (value: ArrayLike<number>): GgufValue => ({ type: "array", itemType: "int32", value }),
  u32s: (value: ArrayLike<number>): GgufValue => ({ type: "array", itemType: "uint32", value }),
};

/** Values in ggml order: ne[0] (the row length) varies fastest. */
export type TensorChunks = () => Iterable<Float32Array> | AsyncIterable<Float32Array>;

export interface GgufTensor {
  name: string;
  /** GGUF dims, innermost first: dims[0] = ne[0] = row length. */
  dims: readonly number[];
  type: TensorTypeName;
  /** All values at once, or a generator of consecutive chunks (each a multiple of 32 values for q8_0). */
  data: Float32Array | TensorChunks;
}

export interface GgufContent {
  metadata: Iterable<readonly [string, GgufValue]>;
  tensors: readonly GgufTensor[];
}

export interface WriteGgufResult {
  bytes: number;
  parameters: number;
}

/**
 * Writes `content` as a GGUF v3 file at `path`, atomically. `general.alignment` is honoured
 * when present in the metadata (it must be a uint32 multiple of 8), else 32 is used.
 */
export async function writeGguf(path: string, content: GgufContent): Promise<WriteGgufResult> {
  const metadata = [...content.metadata];
  const alignmentEntry = metadata.find(([k]) => k === "general.alignment");
  const alignment = alignmentEntry ? Number(alignmentEntry[1].value) : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw new MoltbotError("invalid_request", `general.alignment must be a positive multiple of 8, got ${alignment}`);
  }

  // Header + tensor infos are small (the vocabulary dominates): build them in memory.
  const header = new ByteBuilder();
  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.u64(content.tensors.length);
  header.u64(metadata.length);
  for (const [key, value] of metadata) {
    header.string(key);
    writeValue(header, value);
  }

  let offset = 0;
  let parameters = 0;
  const sizes: number[] = [];
  for (const t of content.tensors) {
    const elements = validateTensor(t);
    parameters += elements;
    const size = tensorByteSize(t.type, elements);
    sizes.push(size);
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of t.dims) header.u64(d);
    header.u32(TensorTypes[t.type].id);
    header.u64(offset);
    offset = alignUp(offset + size, alignment);
  }

  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, "w");
  let ok = false;
  try {
    const sink = new FileSink(fh);
    const headerBytes = header.finish();
    await sink.write(headerBytes);
    await sink.pad(alignUp(headerBytes.length, alignment) - headerBytes.length);
    for (let i = 0; i < content.tensors.length; i++) {
      const t = content.tensors[i]!;
      const size = sizes[i]!;
      const written = await writeTensorData(sink, t);
      if (written !== size) {
        throw new MoltbotError("internal_error", `tensor ${t.name}: wrote ${written} bytes, expected ${size}`);
      }
      await sink.pad(alignUp(size, alignment) - size);
    }
    await sink.flush();
    await fh.sync();
    ok = true;
    const bytes = sink.total;
    await fh.close();
    await rename(tmp, path);
    return { bytes, parameters };
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }
}

function validateTensor(t: GgufTensor): number {
  if (t.dims.length === 0 || t.dims.length > 4 || t.dims.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new MoltbotError("invalid_request", `tensor ${t.name}: bad dims [${t.dims.join(", ")}]`);
  }
  const blockElems = TensorTypes[t.type].blockElems;
  if (t.dims[0]! % blockElems !== 0) {
    throw new MoltbotError("invalid_request", `tensor ${t.name}: row length ${t.dims[0]} is not a multiple of ${blockElems} (${t.type})`);
  }
  const elements = t.dims.reduce((a, b) => a * b, 1);
  if (t.data instanceof Float32Array && t.data.length !== elements) {
    throw new MoltbotError("invalid_request", `tensor ${t.name}: ${t.data.length} values for ${elements} elements`);
  }
  return elements;
}

async function writeTensorData(sink: FileSink, t: GgufTensor): Promise<number> {
  const chunks: Iterable<Float32Array> | AsyncIterable<Float32Array> = t.data instanceof Float32Array ? [t.data] : t.data();
  const start = sink.total;
  for await (const chunk of chunks) {
    // Encode in slices so an all-at-once tensor does not need a second full-size buffer.
    const slice = 1 << 20;
    for (let i = 0; i < chunk.length; i += slice) {
      await sink.write(encodeTensorChunk(t.type, chunk.subarray(i, Math.min(chunk.length, i + slice)), t.name));
    }
  }
  return sink.total - start;
}

/** Encodes f32 values as `type`. Exported for the Q8_0/F16 unit tests and the demo builder. */
export function encodeTensorChunk(type: TensorTypeName, values: Float32Array, name = "tensor"): Uint8Array {
  switch (type) {
    case "f32":
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case "f16": {
      const out = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
      return new Uint8Array(out.buffer);
    }
    case "q8_0": {
      if (values.length % 32 !== 0) {
        throw new MoltbotError("invalid_request", `tensor ${name}: q8_0 chunks must hold a multiple of 32 values`);
      }
      const blocks = values.length / 32;
      const out = new Uint8Array(blocks * 34);
      const view = new DataView(out.buffer);
      for (let b = 0; b < blocks; b++) {
        const base = b * 32;
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[base + j]!));
        // Same rounding as ggml's quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d).
        const d = amax / 127;
        const id = d !== 0 ? 1 / d : 0;
        view.setUint16(b * 34, f32ToF16(d), true);
        for (let j = 0; j < 32; j++) {
          const v = values[base + j]! * id;
          view.setInt8(b * 34 + 2 + j, v < 0 ? -Math.round(-v) : Math.round(v));
        }
      }
      return out;
    }
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half from a float, round-to-nearest-even (Node 20 has no Math.f16round). */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry correctly bumps the exponent
  return sign | h;
}

function writeValue(b: ByteBuilder, v: GgufValue): void {
  b.u32(ValueType[v.type]);
  if (v.type === "array") {
    b.u32(ValueType[v.itemType]);
    b.u64(v.value.length);
    for (let i = 0; i < v.value.length; i++) writeScalar(b, v.itemType, v.value[i]!);
  } else {
    writeScalar(b, v.type, v.value);
  }
}

function writeScalar(b: ByteBuilder, type: ScalarTypeName, value: number | bigint | boolean | string): void {
  const num = (): number => {
    if (typeof value !== "number") throw new MoltbotError("invalid_request", `GGUF ${type} value must be a number, got ${typeof value}`);
    return value;
  };
  switch (type) {
    case "uint8": return b.fixed(1, (v, o) => v.setUint8(o, num()));
    case "int8": return b.fixed(1, (v, o) => v.setInt8(o, num()));
    case "uint16": return b.fixed(2, (v, o) => v.setUint16(o, num(), true));
    case "int16": return b.fixed(2, (v, o) => v.setInt16(o, num(), true));
    case "uint32": return b.fixed(4, (v, o) => v.setUint32(o, num(), true));
    case "int32": return b.fixed(4, (v, o) => v.setInt32(o, num(), true));
    case "float32": return b.fixed(4, (v, o) => v.setFloat32(o, num(), true));
    case "float64": return b.fixed(8, (v, o) => v.setFloat64(o, num(), true));
    case "uint64": return b.fixed(8, (v, o) => v.setBigUint64(o, BigInt(value as number | bigint), true));
    case "int64": return b.fixed(8, (v, o) => v.setBigInt64(o, BigInt(value as number | bigint), true));
    case "bool":
      if (typeof value !== "boolean") throw new MoltbotError("invalid_request", `GGUF bool value must be a boolean`);
      return b.fixed(1, (v, o) => v.setUint8(o, value ? 1 : 0));
    case "string":
      if (typeof value !== "string") throw new MoltbotError("invalid_request", `GGUF string value must be a string`);
      return b.string(value);
  }
}

/** Growable little-endian byte buffer for the header. */
class ByteBuilder {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private len = 0;

  fixed(size: number, put: (view: DataView, offset: number) => void): void {
    this.reserve(size);
    put(this.view, this.len);
    this.len += size;
  }
  u32(n: number): void {
    this.fixed(4, (v, o) => v.setUint32(o, n, true));
  }
  u64(n: number): void {
    this.fixed(8, (v, o) => v.setBigUint64(o, BigInt(n), true));
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
}

/** Coalesces small writes into 4 MiB buffers; large ones go straight through. */
class FileSink {
  private readonly buf = Buffer.allocUnsafe(4 << 20);
  private used = 0;
  total = 0;

  constructor(private readonly fh: FileHandle) {}

  async write(bytes: Uint8Array): Promise<void> {
    this.total += bytes.length;
    if (this.used + bytes.length > this.buf.length) await this.flush();
    if (bytes.length >= this.buf.length) {
      await this.writeAll(bytes);
      return;
    }
    this.buf.set(bytes, this.used);
    this.used += bytes.length;
  }

  async pad(n: number): Promise<void> {
    if (n > 0) await this.write(new Uint8Array(n));
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    await this.writeAll(this.buf.subarray(0, this.used));
    this.used = 0;
  }

  private async writeAll(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, done, bytes.length - done);
      done += bytesWritten;
    }
  }
}
