// Reads a GGUF file's magic and metadata without llama.cpp, so the main process can recognise
// models whatever their file name (weights.bin) and report architecture/context length
// without loading the engine. Tensor data is never read; tensor infos only on request
// (readGgufLayout, for the integrity check in integrity.ts).

import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { MoltbotError } from "../errors.js";
import { GGUF_MAGIC, ValueType } from "./format.js";

export type GgufMetadataValue = number | bigint | boolean | string | GgufMetadataValue[];

export interface GgufMetadata {
  version: number;
  tensorCount: number;
  /** Keys in file order. 64-bit integers are numbers when they fit exactly, else bigints. */
  metadata: Map<string, GgufMetadataValue>;
}

/** True when the file starts with the 4-byte magic "GGUF"; false for short, missing or other files. */
export async function isGgufFile(path: string): Promise<boolean> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, "r");
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return bytesRead === 4 && buf.readUInt32LE(0) === GGUF_MAGIC;
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}

// A hostile or corrupt header must not make us allocate gigabytes.
const MAX_STRING_BYTES = 64 << 20;
const MAX_ARRAY_ITEMS = 16 << 20;
const MAX_KV = 1 << 20;

/** One tensor info of the header: where its data lies relative to the data section. */
export interface GgufTensorInfo {
  name: string;
  /** ne[0..n_dims), innermost first. */
  dims: number[];
  /** ggml_type id. */
  type: number;
  /** Offset of the tensor's data from the start of the (aligned) data section. */
  offset: number;
}

export interface GgufLayout extends GgufMetadata {
  tensors: GgufTensorInfo[];
  /** Byte offset where the tensor infos end (the data section starts at the next alignment boundary). */
  infoEnd: number;
}

/** Reads the header and all metadata key/values of a GGUF v2/v3 file. */
export async function readGgufMetadata(path: string): Promise<GgufMetadata> {
  const fh = await open(path, "r");
  try {
    return await readHeader(new BufferedReader(fh, path));
  } finally {
    await fh.close();
  }
}

// A tensor has at most GGML_MAX_DIMS dimensions.
const MAX_DIMS = 4;

/** Reads the header, the metadata and every tensor info (not the tensor data). */
export async function readGgufLayout(path: string): Promise<GgufLayout> {
  const fh = await open(path, "r");
  try {
    const r = new BufferedReader(fh, path);
    const header = await readHeader(r);
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < header.tensorCount; i++) {
      const name = await r.string();
      const nDims = await r.u32();
      if (nDims > MAX_DIMS) throw bad(path, `tensor ${name} has ${nDims} dimensions (at most ${MAX_DIMS})`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(await r.count(Number.MAX_SAFE_INTEGER));
      const type = await r.u32();
      const offset = await r.count(Number.MAX_SAFE_INTEGER);
      tensors.push({ name, dims, type, offset });
    }
    return { ...header, tensors, infoEnd: r.position };
  } finally {
    await fh.close();
  }
}

async function readHeader(r: BufferedReader): Promise<GgufMetadata> {
  if ((await r.u32()) !== GGUF_MAGIC) throw bad(r.path, "not a GGUF file (bad magic)");
  const version = await r.u32();
  if (version !== 2 && version !== 3) throw bad(r.path, `unsupported GGUF version ${version}`);
  const tensorCount = await r.count(Number.MAX_SAFE_INTEGER);
  const kvCount = await r.count(MAX_KV);
  const metadata = new Map<string, GgufMetadataValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = await r.string();
    const type = await r.u32();
    metadata.set(key, await readValue(r, type));
  }
  return { version, tensorCount, metadata };
}

async function readValue(r: BufferedReader, type: number): Promise<GgufMetadataValue> {
  if (type === ValueType.array) {
    const itemType = await r.u32();
    if (itemType === ValueType.array) throw bad(r.path, "nested GGUF arrays are not supported");
    const n = await r.count(MAX_ARRAY_ITEMS);
    const out: GgufMetadataValue[] = new Array(n);
    const width = FIXED_WIDTH[itemType];
    if (itemType === ValueType.string) {
      // A vocabulary: tens of thousands of short strings, decoded without an await while buffered.
      for (let i = 0; i < n; i++) out[i] = r.bufferedString() ?? (await r.string());
      return out;
    }
    if (width === undefined) {
      for (let i = 0; i < n; i++) out[i] = await readValue(r, itemType);
      return out;
    }
    // Fixed-width items (a vocabulary's scores and token types: tens of thousands) are decoded
    // from one read per chunk: one await per item made reading a 32k vocabulary ~2x slower.
    const decode = FIXED_DECODE[itemType]!;
    for (let i = 0; i < n; ) {
      const k = Math.min(n - i, 65536);
      const buf = await r.bytes(k * width);
      for (let j = 0; j < k; j++) out[i + j] = decode(buf, j * width);
      i += k;
    }
    return out;
  }
  switch (type) {
    case ValueType.uint8: return (await r.bytes(1)).readUInt8(0);
    case ValueType.int8: return (await r.bytes(1)).readInt8(0);
    case ValueType.uint16: return (await r.bytes(2)).readUInt16LE(0);
    case ValueType.int16: return (await r.bytes(2)).readInt16LE(0);
    case ValueType.uint32: return r.u32();
    case ValueType.int32: return (await r.bytes(4)).readInt32LE(0);
    case ValueType.float32: return (await r.bytes(4)).readFloatLE(0);
    case ValueType.float64: return (await r.bytes(8)).readDoubleLE(0);
    case ValueType.bool: return (await r.bytes(1)).readUInt8(0) !== 0;
    case ValueType.string: return r.string();
    case ValueType.uint64: return narrow((await r.bytes(8)).readBigUInt64LE(0));
    case ValueType.int64: return narrow((await r.bytes(8)).readBigInt64LE(0));
    default: throw bad(r.path, `unknown GGUF value type ${type}`);
  }
}

const FIXED_WIDTH: Partial<Record<number, number>> = {
  [ValueType.uint8]: 1, [ValueType.int8]: 1, [ValueType.uint16]: 2, [ValueType.int16]: 2, [ValueType.uint32]: 4,
  [ValueType.int32]: 4, [ValueType.float32]: 4, [ValueType.float64]: 8, [ValueType.bool]: 1,
  [ValueType.uint64]: 8, [ValueType.int64]: 8,
};
const FIXED_DECODE: Partial<Record<number, (b: Buffer, at: number) => GgufMetadataValue>> = {
  [ValueType.uint8]: (b, at) => b.readUInt8(at),
  [ValueType.int8]: (b, at) => b.readInt8(at),
  [ValueType.uint16]: (b, at) => b.readUInt16LE(at),
  [ValueType.int16]: (b, at) => b.readInt16LE(at),
  [ValueType.uint32]: (b, at) => b.readUInt32LE(at),
  [ValueType.int32]: (b, at) => b.readInt32LE(at),
  [ValueType.float32]: (b, at) => b.readFloatLE(at),
  [ValueType.float64]: (b, at) => b.readDoubleLE(at),
  [ValueType.bool]: (b, at) => b.readUInt8(at) !== 0,
  [ValueType.uint64]: (b, at) => narrow(b.readBigUInt64LE(at)),
  [ValueType.int64]: (b, at) => narrow(b.readBigInt64LE(at)),
};

function narrow(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
}

function bad(path: string, why: string): MoltbotError {
  return new MoltbotError("repository_invalid", `${path}: ${why}`);
}

/** Sequential reads through a 1 MiB window: metadata is many tiny fields. */
class BufferedReader {
  private buf = Buffer.alloc(1 << 20);
  private start = 0; // window [start, end) of buf holds valid bytes
  private end = 0;
  private filePos = 0;

  constructor(private readonly fh: FileHandle, readonly path: string) {}

  /** File offset of the next byte to be read. */
  get position(): number {
    return this.filePos - (this.end - this.start);
  }

  async bytes(n: number): Promise<Buffer> {
    if (this.end - this.start < n) await this.fill(n);
    const out = this.buf.subarray(this.start, this.start + n);
    this.start += n;
    return out;
  }

  async u32(): Promise<number> {
    return (await this.bytes(4)).readUInt32LE(0);
  }

  async count(max: number): Promise<number> {
    const v = (await this.bytes(8)).readBigUInt64LE(0);
    if (v > BigInt(max)) throw bad(this.path, `implausible count ${v} in GGUF header`);
    return Number(v);
  }

  async string(): Promise<string> {
    const n = await this.count(MAX_STRING_BYTES);
    return (await this.bytes(n)).toString("utf8");
  }

  /** The next string when its length and bytes are already in the window, else undefined (nothing consumed). */
  bufferedString(): string | undefined {
    if (this.end - this.start < 8) return undefined;
    const n = this.buf.readBigUInt64LE(this.start);
    if (n > BigInt(this.end - this.start - 8)) return undefined;
    const from = this.start + 8;
    this.start = from + Number(n);
    return this.buf.toString("utf8", from, this.start);
  }

  private async fill(n: number): Promise<void> {
    const have = this.end - this.start;
    if (n > this.buf.length) {
      const bigger = Buffer.alloc(n);
      this.buf.copy(bigger, 0, this.start, this.end);
      this.buf = bigger;
    } else {
      this.buf.copy(this.buf, 0, this.start, this.end);
    }
    this.start = 0;
    this.end = have;
    while (this.end < n) {
      const { bytesRead } = await this.fh.read(this.buf, this.end, this.buf.length - this.end, this.filePos);
      if (bytesRead === 0) throw bad(this.path, "truncated GGUF header");
      this.end += bytesRead;
      this.filePos += bytesRead;
    }
  }
}
