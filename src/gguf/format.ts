// Constants of the GGUF v3 container shared by the reader and the writer.
// Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_metadata_value_type, numbered as in the spec. */
export const ValueType = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type ScalarTypeName = Exclude<keyof typeof ValueType, "array">;

/** The ggml tensor types this project writes, with their ggml_type ids and block layout. */
export const TensorTypes = {
  f32: { id: 0, blockElems: 1, blockBytes: 4 },
  f16: { id: 1, blockElems: 1, blockBytes: 2 },
  // Q8_0: blocks of 32 values = one f16 scale + 32 int8 quants.
  q8_0: { id: 8, blockElems: 32, blockBytes: 34 },
} as const;

export type TensorTypeName = keyof typeof TensorTypes;

export function tensorByteSize(type: TensorTypeName, elements: number): number {
  const t = TensorTypes[type];
  return (elements / t.blockElems) * t.blockBytes;
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
