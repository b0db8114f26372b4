// koffi bindings to the libllama that node-llama-cpp ships (no compiler, nothing downloaded).
// Only what the FFI engine needs is declared. The structs passed by value must match the
// bundled include/llama.h byte for byte: test/libllama-layout.test.ts compiles
// test/native/layout.c against that header and compares every offset with koffi's.
// The library is the shipped CPU build or an operator's own (`engine.library_dir`, checked by
// checkLibraryBuild below); GPU backends are ggml modules registered on top of it (backend.ts).
// Calls are synchronous on purpose: the decode loop runs in a dedicated worker process, and
// koffi's async calls (a libuv worker per call) cost more than a decode step of a small model.

import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import path from "node:path";
import koffi from "koffi";
import type { LibraryHandle, TypeObject } from "koffi";
import { MoltbotError } from "../errors.js";

/** Which of node-llama-cpp's prebuilt binary packages to load. */
export type LlamaBackendKind = "cpu" | "cuda" | "vulkan";

// ---- struct layouts (mirror llama.h of the bundled release) -------------------------------

export const LlamaModelParams = koffi.struct("llama_model_params", {
  devices: "void *",
  tensor_buft_overrides: "void *",
  n_gpu_layers: "int32_t",
  split_mode: "int32_t",
  load_mode: "int32_t",
  lazy_mode: "int32_t",
  main_gpu: "int32_t",
  tensor_split: "void *",
  progress_callback: "void *",
  progress_callback_user_data: "void *",
  kv_overrides: "void *",
  vocab_only: "bool",
  check_tensors: "bool",
  use_extra_bufts: "bool",
  no_host: "bool",
  no_alloc: "bool",
  load_mtp: "bool",
});

export const LlamaContextParams = koffi.struct("llama_context_params", {
  n_ctx: "uint32_t",
  n_batch: "uint32_t",
  n_ubatch: "uint32_t",
  n_seq_max: "uint32_t",
  n_rs_seq: "uint32_t",
  n_outputs_max: "uint32_t",
  n_outputs_max_per_seq: "uint32_t",
  n_threads: "int32_t",
  n_threads_batch: "int32_t",
  ctx_type: "int32_t",
  rope_scaling_type: "int32_t",
  pooling_type: "int32_t",
  attention_type: "int32_t",
  flash_attn_type: "int32_t",
  rope_freq_base: "float",
  rope_freq_scale: "float",
  yarn_ext_factor: "float",
  yarn_attn_factor: "float",
  yarn_beta_fast: "float",
  yarn_beta_slow: "float",
  yarn_orig_ctx: "uint32_t",
  defrag_thold: "float",
  cb_eval: "void *",
  cb_eval_user_data: "void *",
  type_k: "int32_t",
  type_v: "int32_t",
  abort_callback: "void *",
  abort_callback_data: "void *",
  embeddings: "bool",
  offload_kqv: "bool",
  no_perf: "bool",
  op_offload: "bool",
  swa_full: "bool",
  kv_unified: "bool",
  samplers: "void *",
  n_samplers: "size_t",
  ctx_other: "void *",
});

export const LlamaBatch = koffi.struct("llama_batch", {
  n_tokens: "int32_t",
  token: "void *",
  embd: "void *",
  pos: "void *",
  n_seq_id: "void *",
  seq_id: "void *",
  logits: "void *",
});

export const LlamaSamplerChainParams = koffi.struct("llama_sampler_chain_params", {
  no_perf: "bool",
});

export const LlamaLogitBias = koffi.struct("llama_logit_bias", {
  token: "int32_t",
  bias: "float",
});

export const LlamaTokenData = koffi.struct("llama_token_data", {
  id: "int32_t",
  logit: "float",
  p: "float",
});

export const LlamaTokenDataArray = koffi.struct("llama_token_data_array", {
  data: "void *",
  size: "size_t",
  selected: "int64_t",
  sorted: "bool",
});

export const LlamaChatMessage = koffi.struct("llama_chat_message", {
  role: "const char *",
  content: "const char *",
});

/** llama.h's llama_model_quantize_params (passed by pointer to llama_model_quantize). */
export const LlamaModelQuantizeParams = koffi.struct("llama_model_quantize_params", {
  nthread: "int32_t",
  ftype: "int32_t",
  output_tensor_type: "int32_t",
  token_embedding_type: "int32_t",
  allow_requantize: "bool",
  quantize_output_tensor: "bool",
  only_copy: "bool",
  pure: "bool",
  keep_split: "bool",
  dry_run: "bool",
  imatrix: "void *",
  kv_overrides: "void *",
  tt_overrides: "void *",
  prune_layers: "void *",
  max_buf_size: "size_t",
});

/** ggml.h's GGML_MAX_N_THREADS: the length of ggml_threadpool_params.cpumask. */
export const GGML_MAX_N_THREADS = 512;

/** ggml.h's ggml_threadpool_params (passed by pointer to ggml_threadpool_new). */
export const GgmlThreadpoolParams = koffi.struct("ggml_threadpool_params", {
  cpumask: koffi.array("bool", GGML_MAX_N_THREADS),
  n_threads: "int32_t",
  prio: "int32_t",
  poll: "uint32_t",
  strict_cpu: "bool",
  paused: "bool",
});

/** The structs the layout test checks, by their C name. */
export const LLAMA_STRUCTS = {
  llama_model_params: LlamaModelParams,
  llama_context_params: LlamaContextParams,
  llama_batch: LlamaBatch,
  llama_sampler_chain_params: LlamaSamplerChainParams,
  llama_chat_message: LlamaChatMessage,
  llama_logit_bias: LlamaLogitBias,
  llama_token_data: LlamaTokenData,
  llama_token_data_array: LlamaTokenDataArray,
  ggml_threadpool_params: GgmlThreadpoolParams,
  llama_model_quantize_params: LlamaModelQuantizeParams,
} as const;

export const LLAMA_POOLING_MEAN = 1;
export const LLAMA_FLASH_ATTN_AUTO = -1;
export const GGML_LOG_LEVEL = { none: 0, debug: 1, info: 2, warn: 3, error: 4, cont: 5 } as const;

// The CPU backend is a module ggml loads at run time (the variant that suits this CPU), so its
// threadpool functions are reached through ggml_backend_reg_get_proc_address, not by symbol.
const ThreadpoolNewFn = koffi.proto("void *moltbot_ggml_threadpool_new(ggml_threadpool_params *params)");
const ThreadpoolFreeFn = koffi.proto("void moltbot_ggml_threadpool_free(void *threadpool)");

const LogCallback = koffi.proto("void moltbot_llama_log_cb(int level, const char *text, void *user_data)");

// ---- handles ------------------------------------------------------------------------------

/** An opaque native pointer (koffi external). Branded so handles are not mixed up. */
export type Ptr<Brand extends string> = unknown & { readonly __ptr: Brand };
export type ModelPtr = Ptr<"llama_model">;
export type ContextPtr = Ptr<"llama_context">;
export type VocabPtr = Ptr<"llama_vocab">;
export type MemoryPtr = Ptr<"llama_memory">;
export type SamplerPtr = Ptr<"llama_sampler">;
export type FloatPtr = Ptr<"float">;
export type ThreadpoolPtr = Ptr<"ggml_threadpool">;
export type BackendRegPtr = Ptr<"ggml_backend_reg">;
export type DevicePtr = Ptr<"ggml_backend_device">;

/** ggml-backend.h's enum ggml_backend_dev_type. */
export const GGML_DEV_TYPE = { cpu: 0, gpu: 1, igpu: 2, accel: 3, meta: 4 } as const;

/** The JS shape of ggml_threadpool_params. */
export interface GgmlThreadpoolParamsValue {
  cpumask: boolean[];
  n_threads: number;
  prio: number;
  poll: number;
  strict_cpu: boolean;
  paused: boolean;
}

/** The JS shape of llama_batch when passed by value. Pointers come from koffi.alloc. */
export interface LlamaBatchValue {
  n_tokens: number;
  token: unknown;
  embd: unknown;
  pos: unknown;
  n_seq_id: unknown;
  seq_id: unknown;
  logits: unknown;
}

export type LlamaContextParamsValue = Record<string, number | boolean | unknown>;

/** The JS shape of llama_model_quantize_params (the pointers stay null: no imatrix or overrides). */
export interface LlamaModelQuantizeParamsValue {
  nthread: number;
  ftype: number;
  output_tensor_type: number;
  token_embedding_type: number;
  allow_requantize: boolean;
  quantize_output_tensor: boolean;
  only_copy: boolean;
  pure: boolean;
  keep_split: boolean;
  dry_run: boolean;
  imatrix: unknown;
  kv_overrides: unknown;
  tt_overrides: unknown;
  prune_layers: unknown;
  max_buf_size: number | bigint;
}

/** The functions of libllama (and two of libggml) that Moltbot calls. */
export interface LibLlama {
  readonly binsDir: string;
  readonly libraryPath: string;
  /** The operator's build folder (engine.library_dir), or undefined for the shipped binaries. */
  readonly libraryDir: string | undefined;
  ggml_version(): string;
  /** Registers the ggml backend module at `path`; null when it does not load or initialise. */
  ggml_backend_load(path: string): BackendRegPtr | null;
  ggml_backend_reg_by_name(name: string): BackendRegPtr | null;
  ggml_backend_reg_dev_count(reg: BackendRegPtr): number;
  ggml_backend_reg_dev_get(reg: BackendRegPtr, i: number): DevicePtr;
  ggml_backend_dev_by_type(type: number): DevicePtr | null;
  ggml_backend_dev_type(dev: DevicePtr): number;
  ggml_backend_dev_name(dev: DevicePtr): string;
  ggml_backend_dev_description(dev: DevicePtr): string;
  /** `free` and `total` are written (bytes). */
  ggml_backend_dev_memory(dev: DevicePtr, free: BigUint64Array, total: BigUint64Array): void;
  llama_backend_init(): void;
  ggml_backend_load_all_from_path(dir: string): void;
  llama_log_set(cb: unknown, userData: unknown): void;
  llama_model_default_params(): Record<string, unknown>;
  llama_context_default_params(): LlamaContextParamsValue;
  llama_model_load_from_file(path: string, params: Record<string, unknown>): ModelPtr | null;
  llama_model_free(model: ModelPtr): void;
  llama_init_from_model(model: ModelPtr, params: LlamaContextParamsValue): ContextPtr | null;
  llama_free(ctx: ContextPtr): void;
  llama_n_ctx(ctx: ContextPtr): number;
  llama_n_ctx_seq(ctx: ContextPtr): number;
  llama_n_batch(ctx: ContextPtr): number;
  llama_n_seq_max(ctx: ContextPtr): number;
  llama_get_memory(ctx: ContextPtr): MemoryPtr | null;
  llama_model_get_vocab(model: ModelPtr): VocabPtr;
  llama_model_n_ctx_train(model: ModelPtr): number;
  llama_model_n_embd(model: ModelPtr): number;
  llama_model_n_layer(model: ModelPtr): number;
  llama_model_n_head(model: ModelPtr): number;
  llama_model_n_head_kv(model: ModelPtr): number;
  llama_model_n_params(model: ModelPtr): number | bigint;
  llama_model_meta_val_str(model: ModelPtr, key: string, buf: Buffer, size: number): number;
  llama_model_chat_template(model: ModelPtr, name: string | null): string | null;
  llama_model_has_encoder(model: ModelPtr): boolean;
  llama_vocab_n_tokens(vocab: VocabPtr): number;
  llama_vocab_bos(vocab: VocabPtr): number;
  llama_vocab_eos(vocab: VocabPtr): number;
  llama_vocab_is_eog(vocab: VocabPtr, token: number): boolean;
  llama_vocab_get_add_bos(vocab: VocabPtr): boolean;
  llama_tokenize(vocab: VocabPtr, text: Buffer, textLen: number, tokens: Int32Array, nTokensMax: number, addSpecial: boolean, parseSpecial: boolean): number;
  llama_token_to_piece(vocab: VocabPtr, token: number, buf: Buffer, length: number, lstrip: number, special: boolean): number;
  llama_detokenize(vocab: VocabPtr, tokens: Int32Array, nTokens: number, text: Buffer, textLenMax: number, removeSpecial: boolean, unparseSpecial: boolean): number;
  llama_chat_apply_template(tmpl: string, chat: { role: string; content: string }[], nMsg: number, addAss: boolean, buf: Buffer, length: number): number;
  llama_decode(ctx: ContextPtr, batch: LlamaBatchValue): number;
  llama_set_n_threads(ctx: ContextPtr, nThreads: number, nThreadsBatch: number): void;
  llama_attach_threadpool(ctx: ContextPtr, threadpool: ThreadpoolPtr, threadpoolBatch: ThreadpoolPtr | null): void;
  llama_detach_threadpool(ctx: ContextPtr): void;
  ggml_threadpool_params_default(nThreads: number): GgmlThreadpoolParamsValue;
  /** From the loaded CPU backend; null when no CPU backend exports it. */
  ggml_threadpool_new: ((params: GgmlThreadpoolParamsValue) => ThreadpoolPtr | null) | null;
  ggml_threadpool_free: ((threadpool: ThreadpoolPtr) => void) | null;
  llama_get_logits_ith(ctx: ContextPtr, i: number): FloatPtr | null;
  llama_get_embeddings_ith(ctx: ContextPtr, i: number): FloatPtr | null;
  llama_get_embeddings_seq(ctx: ContextPtr, seqId: number): FloatPtr | null;
  llama_memory_clear(mem: MemoryPtr, data: boolean): void;
  llama_memory_seq_rm(mem: MemoryPtr, seqId: number, p0: number, p1: number): boolean;
  llama_memory_seq_cp(mem: MemoryPtr, seqSrc: number, seqDst: number, p0: number, p1: number): void;
  llama_state_seq_get_size(ctx: ContextPtr, seqId: number): number;
  llama_state_seq_get_data(ctx: ContextPtr, dst: Uint8Array, size: number, seqId: number): number;
  llama_state_seq_set_data(ctx: ContextPtr, src: Uint8Array, size: number, destSeqId: number): number;
  llama_sampler_chain_default_params(): { no_perf: boolean };
  llama_sampler_chain_init(params: { no_perf: boolean }): SamplerPtr;
  llama_sampler_chain_add(chain: SamplerPtr, smpl: SamplerPtr): void;
  llama_sampler_init_greedy(): SamplerPtr;
  llama_sampler_init_dist(seed: number): SamplerPtr;
  llama_sampler_init_top_p(p: number, minKeep: number): SamplerPtr;
  llama_sampler_init_temp(t: number): SamplerPtr;
  llama_sampler_init_logit_bias(nVocab: number, nLogitBias: number, biases: { token: number; bias: number }[]): SamplerPtr;
  /** NULL when the GBNF does not parse (the detail goes to stderr: see captureNativeStderr). */
  llama_sampler_init_grammar(vocab: VocabPtr, grammar: string, root: string): SamplerPtr | null;
  llama_sampler_sample(smpl: SamplerPtr, ctx: ContextPtr, idx: number): number;
  /** `candidates`: a llama_token_data_array in native memory (NativeCandidates). */
  llama_sampler_apply(smpl: SamplerPtr, candidates: unknown): void;
  llama_sampler_accept(smpl: SamplerPtr, token: number): void;
  llama_sampler_reset(smpl: SamplerPtr): void;
  llama_sampler_free(smpl: SamplerPtr): void;
  llama_model_quantize_default_params(): LlamaModelQuantizeParamsValue;
  /** 0 on success; on failure llama.cpp logs the reason (at ERROR) and returns non-zero. */
  llama_model_quantize(input: string, output: string, params: LlamaModelQuantizeParamsValue): number;
}

// ---- locating the shipped binaries --------------------------------------------------------

const PACKAGE_SUFFIX: Record<LlamaBackendKind, string> = { cpu: "", cuda: "-cuda", vulkan: "-vulkan" };

/**
 * The folder holding libllama and its ggml libraries inside node-llama-cpp's prebuilt package
 * (`@node-llama-cpp/<platform>-<arch>[-cuda|-vulkan]/bins/<folder>/`). The version suffix of
 * the file name (libllama.v0.5.0.so) is found by listing, never hard-coded.
 */
export function locateLlamaBinaries(kind: LlamaBackendKind = "cpu"): { binsDir: string; libraryPath: string } {
  const pkg = `@node-llama-cpp/${process.platform}-${process.arch}${PACKAGE_SUFFIX[kind]}`;
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    // The package exports only ".", so resolve its entry and walk up to the package root.
    entry = require.resolve(pkg);
  } catch (cause) {
    throw new MoltbotError("engine_error", `llama.cpp binaries for backend "${kind}" are not installed (package ${pkg} not found)`, { cause });
  }
  let root = path.dirname(entry);
  while (!existsSync(path.join(root, "package.json")) && path.dirname(root) !== root) root = path.dirname(root);
  const bins = path.join(root, "bins");
  const folders = existsSync(bins) ? readdirSync(bins, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name) : [];
  for (const folder of folders) {
    const dir = path.join(bins, folder);
    const lib = readdirSync(dir).find((f) => LIBLLAMA_FILE.test(f));
    if (lib !== undefined) return { binsDir: dir, libraryPath: path.join(dir, lib) };
  }
  throw new MoltbotError("engine_error", `no libllama shared library found under ${bins}`);
}

// libllama.so (a plain build), libllama.v0.5.0.so, libllama.cuda.v0.5.0.so (node-llama-cpp's).
const LIBLLAMA_FILE = /^libllama(\.[a-z]+)?(\.v[\d.]+)?\.(so|dylib)$/;
const LIBGGML_FILE = /^libggml(\.[a-z]+)?(\.v[\d.]+)?\.(so|dylib)$/;

/** The ggml module of a GPU backend (libggml-cuda.so) in node-llama-cpp's package for it. */
export function shippedBackendModule(kind: Exclude<LlamaBackendKind, "cpu">): string {
  const { binsDir } = locateLlamaBinaries(kind);
  return path.join(binsDir, `libggml-${kind}.${process.platform === "darwin" ? "dylib" : "so"}`);
}

// ---- loading ------------------------------------------------------------------------------

let loaded: LibLlama | undefined;

/** Log lines at or above this level reach the sink; llama.cpp is chatty at INFO. */
export interface LlamaLogOptions {
  minLevel: number;
  sink: (level: number, text: string) => void;
}

let logCallbackHandle: bigint | undefined;
let logOptions: LlamaLogOptions = { minLevel: GGML_LOG_LEVEL.error, sink: (_l, text) => process.stderr.write(text) };
let lastLogLevel: number = GGML_LOG_LEVEL.none;
/** Warnings and errors logged while captureNativeErrors runs. */
let logCapture: string[] | null = null;

/** Route llama.cpp/ggml logs. Default: errors only, to stderr. */
export function setLlamaLogging(options: LlamaLogOptions): void {
  logOptions = options;
}

/**
 * Load libllama once per process: the shipped CPU build, or the operator's build in
 * `libraryDir` (checked by checkLibraryBuild first). ggml's compute backends in the same folder
 * are loaded (the CPU variant best suited to this CPU is picked by ggml) and the log router is
 * installed. Later calls return the same bindings; one process holds one libllama, so asking
 * for another folder afterwards is an error.
 */
export function loadLibLlama(libraryDir?: string): LibLlama {
  const dir = libraryDir === undefined ? undefined : path.resolve(libraryDir);
  if (loaded !== undefined) {
    if (loaded.libraryDir !== dir) throw new MoltbotError("engine_error", `libllama is already loaded from ${loaded.binsDir}; one process cannot load ${dir ?? "the shipped binaries"} too`);
    return loaded;
  }
  const invalid = (why: string, cause?: unknown): MoltbotError =>
    new MoltbotError("library_invalid", `engine.library_dir ${dir}: ${why}`, cause === undefined ? undefined : { cause });
  let binsDir: string;
  let libraryPath: string;
  if (dir === undefined) ({ binsDir, libraryPath } = locateLlamaBinaries("cpu"));
  else {
    const files = existsSync(dir) ? readdirSync(dir) : null;
    if (files === null) throw invalid("no such folder");
    const name = files.find((f) => LIBLLAMA_FILE.test(f));
    if (name === undefined) throw invalid(`no libllama.so in it (found: ${files.filter((f) => f.startsWith("lib")).join(", ") || "no libraries"}); build llama.cpp with -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON`);
    binsDir = dir;
    libraryPath = path.join(dir, name);
  }
  const ggmlName = readdirSync(binsDir).find((f) => LIBGGML_FILE.test(f));
  if (ggmlName === undefined) {
    if (dir !== undefined) throw invalid("no libggml.so beside libllama");
    throw new MoltbotError("engine_error", `no libggml shared library found in ${binsDir}`);
  }
  let lib: LibraryHandle;
  let ggml: LibraryHandle;
  try {
    // libggml-base first, by path: an operator's build names it in DT_NEEDED with a build-tree
    // RUNPATH that is gone once the libraries are copied elsewhere; a library already loaded
    // under that soname is reused by the dynamic linker instead of searched for.
    const base = path.join(binsDir, "libggml-base.so");
    if (dir !== undefined && existsSync(base)) koffi.load(base);
    ggml = koffi.load(path.join(binsDir, ggmlName));
    lib = koffi.load(libraryPath);
  } catch (cause) {
    if (dir !== undefined) throw invalid(`cannot load ${libraryPath}: ${(cause as Error).message}`, cause);
    throw new MoltbotError("engine_error", `cannot load ${libraryPath}: ${(cause as Error).message}`, { cause });
  }
  // Checked before anything else is bound: another version is the likeliest mistake, and the
  // version says so more plainly than the missing symbol it would otherwise trip on.
  let ggmlVersion: () => string;
  try {
    ggmlVersion = ggml.func("const char *ggml_version(void)") as () => string;
  } catch (cause) {
    if (dir !== undefined) throw invalid(`its ${ggmlName} has no ggml_version(): not a ggml build of this generation`, cause);
    throw cause;
  }
  if (dir !== undefined && ggmlVersion() !== BUNDLED_GGML_VERSION) {
    throw invalid(`it is ggml ${ggmlVersion()}, but this Moltbot binds the llama.cpp that node-llama-cpp bundles (ggml ${BUNDLED_GGML_VERSION}): build that source (scripts/build-llama-lib.sh)`);
  }

  // A symbol missing from an operator's build is collected, so the error names all of them.
  const missing: string[] = [];
  const bind = (handle: LibraryHandle) => (decl: string) => {
    try {
      return handle.func(decl);
    } catch (cause) {
      if (dir === undefined) throw cause;
      missing.push(/(\w+)\s*\(/.exec(decl)?.[1] ?? decl);
      return null;
    }
  };
  const f = bind(lib);
  const g = bind(ggml);
  const b: Record<string, unknown> = {
    binsDir,
    libraryPath,
    libraryDir: dir,
    ggml_version: ggmlVersion,
    ggml_backend_load: g("void *ggml_backend_load(const char *path)"),
    ggml_backend_reg_by_name: g("void *ggml_backend_reg_by_name(const char *name)"),
    ggml_backend_reg_dev_count: g("size_t ggml_backend_reg_dev_count(void *reg)"),
    ggml_backend_reg_dev_get: g("void *ggml_backend_reg_dev_get(void *reg, size_t index)"),
    ggml_backend_dev_by_type: g("void *ggml_backend_dev_by_type(int type)"),
    ggml_backend_dev_type: g("int ggml_backend_dev_type(void *dev)"),
    ggml_backend_dev_name: g("const char *ggml_backend_dev_name(void *dev)"),
    ggml_backend_dev_description: g("const char *ggml_backend_dev_description(void *dev)"),
    ggml_backend_dev_memory: g("void ggml_backend_dev_memory(void *dev, uint64_t *free, uint64_t *total)"),
    ggml_backend_load_all_from_path: g("void ggml_backend_load_all_from_path(const char *dir)"),
    llama_backend_init: f("void llama_backend_init(void)"),
    llama_log_set: f("void llama_log_set(moltbot_llama_log_cb *cb, void *user_data)"),
    llama_model_default_params: f("llama_model_params llama_model_default_params(void)"),
    llama_context_default_params: f("llama_context_params llama_context_default_params(void)"),
    llama_model_load_from_file: f("void *llama_model_load_from_file(const char *path, llama_model_params params)"),
    llama_model_free: f("void llama_model_free(void *model)"),
    llama_init_from_model: f("void *llama_init_from_model(void *model, llama_context_params params)"),
    llama_free: f("void llama_free(void *ctx)"),
    llama_n_ctx: f("uint32_t llama_n_ctx(void *ctx)"),
    llama_n_ctx_seq: f("uint32_t llama_n_ctx_seq(void *ctx)"),
    llama_n_batch: f("uint32_t llama_n_batch(void *ctx)"),
    llama_n_seq_max: f("uint32_t llama_n_seq_max(void *ctx)"),
    llama_get_memory: f("void *llama_get_memory(void *ctx)"),
    llama_model_get_vocab: f("void *llama_model_get_vocab(void *model)"),
    llama_model_n_ctx_train: f("int32_t llama_model_n_ctx_train(void *model)"),
    llama_model_n_embd: f("int32_t llama_model_n_embd(void *model)"),
    llama_model_n_layer: f("int32_t llama_model_n_layer(void *model)"),
    llama_model_n_head: f("int32_t llama_model_n_head(void *model)"),
    llama_model_n_head_kv: f("int32_t llama_model_n_head_kv(void *model)"),
    llama_model_n_params: f("uint64_t llama_model_n_params(void *model)"),
    llama_model_meta_val_str: f("int32_t llama_model_meta_val_str(void *model, const char *key, uint8_t *buf, size_t buf_size)"),
    llama_model_chat_template: f("const char *llama_model_chat_template(void *model, const char *name)"),
    llama_model_has_encoder: f("bool llama_model_has_encoder(void *model)"),
    llama_vocab_n_tokens: f("int32_t llama_vocab_n_tokens(void *vocab)"),
    llama_vocab_bos: f("int32_t llama_vocab_bos(void *vocab)"),
    llama_vocab_eos: f("int32_t llama_vocab_eos(void *vocab)"),
    llama_vocab_is_eog: f("bool llama_vocab_is_eog(void *vocab, int32_t token)"),
    llama_vocab_get_add_bos: f("bool llama_vocab_get_add_bos(void *vocab)"),
    llama_tokenize: f("int32_t llama_tokenize(void *vocab, const uint8_t *text, int32_t text_len, int32_t *tokens, int32_t n_tokens_max, bool add_special, bool parse_special)"),
    llama_token_to_piece: f("int32_t llama_token_to_piece(void *vocab, int32_t token, uint8_t *buf, int32_t length, int32_t lstrip, bool special)"),
    llama_detokenize: f("int32_t llama_detokenize(void *vocab, const int32_t *tokens, int32_t n_tokens, uint8_t *text, int32_t text_len_max, bool remove_special, bool unparse_special)"),
    llama_chat_apply_template: f("int32_t llama_chat_apply_template(const char *tmpl, const llama_chat_message *chat, size_t n_msg, bool add_ass, uint8_t *buf, int32_t length)"),
    llama_decode: f("int32_t llama_decode(void *ctx, llama_batch batch)"),
    llama_set_n_threads: f("void llama_set_n_threads(void *ctx, int32_t n_threads, int32_t n_threads_batch)"),
    llama_attach_threadpool: f("void llama_attach_threadpool(void *ctx, void *threadpool, void *threadpool_batch)"),
    llama_detach_threadpool: f("void llama_detach_threadpool(void *ctx)"),
    ggml_threadpool_params_default: g("ggml_threadpool_params ggml_threadpool_params_default(int n_threads)"),
    llama_get_logits_ith: f("void *llama_get_logits_ith(void *ctx, int32_t i)"),
    llama_get_embeddings_ith: f("void *llama_get_embeddings_ith(void *ctx, int32_t i)"),
    llama_get_embeddings_seq: f("void *llama_get_embeddings_seq(void *ctx, int32_t seq_id)"),
    llama_memory_clear: f("void llama_memory_clear(void *mem, bool data)"),
    llama_memory_seq_rm: f("bool llama_memory_seq_rm(void *mem, int32_t seq_id, int32_t p0, int32_t p1)"),
    llama_memory_seq_cp: f("void llama_memory_seq_cp(void *mem, int32_t seq_id_src, int32_t seq_id_dst, int32_t p0, int32_t p1)"),
    llama_state_seq_get_size: f("size_t llama_state_seq_get_size(void *ctx, int32_t seq_id)"),
    llama_state_seq_get_data: f("size_t llama_state_seq_get_data(void *ctx, uint8_t *dst, size_t size, int32_t seq_id)"),
    llama_state_seq_set_data: f("size_t llama_state_seq_set_data(void *ctx, const uint8_t *src, size_t size, int32_t dest_seq_id)"),
    llama_sampler_chain_default_params: f("llama_sampler_chain_params llama_sampler_chain_default_params(void)"),
    llama_sampler_chain_init: f("void *llama_sampler_chain_init(llama_sampler_chain_params params)"),
    llama_sampler_chain_add: f("void llama_sampler_chain_add(void *chain, void *smpl)"),
    llama_sampler_init_greedy: f("void *llama_sampler_init_greedy(void)"),
    llama_sampler_init_dist: f("void *llama_sampler_init_dist(uint32_t seed)"),
    llama_sampler_init_top_p: f("void *llama_sampler_init_top_p(float p, size_t min_keep)"),
    llama_sampler_init_temp: f("void *llama_sampler_init_temp(float t)"),
    llama_sampler_init_logit_bias: f("void *llama_sampler_init_logit_bias(int32_t n_vocab, int32_t n_logit_bias, const llama_logit_bias *logit_bias)"),
    llama_sampler_init_grammar: f("void *llama_sampler_init_grammar(void *vocab, const char *grammar_str, const char *grammar_root)"),
    llama_sampler_sample: f("int32_t llama_sampler_sample(void *smpl, void *ctx, int32_t idx)"),
    llama_sampler_apply: f("void llama_sampler_apply(void *smpl, void *cur_p)"),
    llama_sampler_accept: f("void llama_sampler_accept(void *smpl, int32_t token)"),
    llama_sampler_reset: f("void llama_sampler_reset(void *smpl)"),
    llama_sampler_free: f("void llama_sampler_free(void *smpl)"),
    llama_model_quantize_default_params: f("llama_model_quantize_params llama_model_quantize_default_params(void)"),
    llama_model_quantize: f("uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out, const llama_model_quantize_params *params)"),
  };
  if (missing.length > 0) throw invalid(`its libllama/libggml lack ${missing.length} function(s) Moltbot calls (${missing.join(", ")}): another llama.cpp version`);
  const bindings = b as unknown as LibLlama;
  if (dir !== undefined) checkLibraryBuild(lib, dir);

  // The log router is a registered JS callback. ggml logs from the calling thread in practice
  // (load, context creation, decode errors), which is the JS thread here; a log from a compute
  // thread during a synchronous llama_decode would wait for the event loop (koffi queues it).
  if (logCallbackHandle === undefined) {
    logCallbackHandle = koffi.register((level: number, text: string) => {
      // CONT continues the previous line at the previous line's level.
      const effective = level === GGML_LOG_LEVEL.cont ? lastLogLevel : level;
      if (level !== GGML_LOG_LEVEL.cont) lastLogLevel = level;
      if (logCapture !== null) {
        if (effective >= GGML_LOG_LEVEL.warn) logCapture.push(text);
      } else if (effective >= logOptions.minLevel && effective !== GGML_LOG_LEVEL.none) logOptions.sink(effective, text);
    }, koffi.pointer(LogCallback));
  }
  bindings.llama_log_set(logCallbackHandle, null);
  bindings.ggml_backend_load_all_from_path(binsDir);
  bindings.llama_backend_init();
  const regGetProc = ggml.func("void *ggml_backend_reg_get_proc_address(void *reg, const char *name)");
  for (const k of ["ggml_backend_load", "ggml_backend_reg_by_name", "ggml_backend_dev_by_type", "ggml_backend_reg_dev_get"] as const) {
    const fn = b[k] as (...args: unknown[]) => unknown;
    b[k] = (...args: unknown[]) => nullable(fn(...args));
  }
  const cpuReg = nullable(ggml.func("void *ggml_backend_reg_by_name(const char *name)")("CPU"));
  const proc = (name: string): unknown => (cpuReg === null ? null : nullable(regGetProc(cpuReg, name)));
  const tpNew = proc("ggml_threadpool_new");
  const tpFree = proc("ggml_threadpool_free");
  b.ggml_threadpool_new = tpNew === null || tpFree === null ? null : koffi.decode(tpNew, ThreadpoolNewFn);
  b.ggml_threadpool_free = tpNew === null || tpFree === null ? null : koffi.decode(tpFree, ThreadpoolFreeFn);
  loaded = bindings;
  return bindings;
}

// ---- checking an operator's build ---------------------------------------------------------

/**
 * ggml's version in the llama.cpp source node-llama-cpp bundles (ggml_version() of the shipped
 * libggml-base; test/library-dir.test.ts keeps it true). The commit cannot be compared: a build
 * from the bundled git bundle reports that bundle's squashed commit, the shipped one upstream's.
 */
export const BUNDLED_GGML_VERSION = "0.25.1";

/**
 * What the bundled llama.cpp's *_default_params() return, read through our struct layouts
 * (test/library-dir.test.ts checks these against the shipped library). The same version can
 * still be built from a patched tree: a field added, moved or resized shifts these values into
 * other fields, which this comparison sees. We cannot compile against the operator's headers
 * at start, so this is the run-time stand-in for the layout test's sizeof/offsetof.
 */
export const BUNDLED_DEFAULTS = {
  llama_model_params: {
    devices: null, tensor_buft_overrides: null, n_gpu_layers: -1, split_mode: 1, load_mode: -1, lazy_mode: 1, main_gpu: 0,
    tensor_split: null, progress_callback: null, progress_callback_user_data: null, kv_overrides: null,
    vocab_only: false, check_tensors: false, use_extra_bufts: true, no_host: false, no_alloc: false, load_mtp: false,
  },
  llama_context_params: {
    n_ctx: 512, n_batch: 2048, n_ubatch: 512, n_seq_max: 1, n_rs_seq: 0, n_outputs_max: 0, n_outputs_max_per_seq: 1,
    n_threads: 4, n_threads_batch: 4, ctx_type: 0, rope_scaling_type: -1, pooling_type: -1, attention_type: -1,
    flash_attn_type: -1, rope_freq_base: 0, rope_freq_scale: 0, yarn_ext_factor: -1, yarn_attn_factor: -1,
    yarn_beta_fast: -1, yarn_beta_slow: -1, yarn_orig_ctx: 0, defrag_thold: -1, cb_eval: null, cb_eval_user_data: null,
    type_k: 1, type_v: 1, abort_callback: null, abort_callback_data: null, embeddings: false, offload_kqv: true,
    no_perf: true, op_offload: true, swa_full: true, kv_unified: false, samplers: null, n_samplers: 0, ctx_other: null,
  },
  llama_sampler_chain_params: { no_perf: false },
} satisfies Record<DefaultsName, Record<string, unknown>>;

/** Room past our struct for a library whose struct is bigger: it writes its own size. */
const PROBE_PAD = 512;
const PROBES = {
  llama_model_params: koffi.struct("moltbot_probe_model_params", { value: LlamaModelParams, pad: koffi.array("uint8_t", PROBE_PAD) }),
  llama_context_params: koffi.struct("moltbot_probe_context_params", { value: LlamaContextParams, pad: koffi.array("uint8_t", PROBE_PAD) }),
  llama_sampler_chain_params: koffi.struct("moltbot_probe_sampler_chain_params", { value: LlamaSamplerChainParams, pad: koffi.array("uint8_t", PROBE_PAD) }),
};
type DefaultsName = keyof typeof PROBES;

/**
 * The *_default_params() of `lib`, each read through our layout. Returned through a struct
 * padded by PROBE_PAD bytes, so a library whose struct grew writes into the padding rather
 * than past koffi's return buffer.
 */
export function readLibraryDefaults(lib: LibraryHandle): Record<DefaultsName, Record<string, unknown>> {
  const out = {} as Record<DefaultsName, Record<string, unknown>>;
  for (const [name, probe] of Object.entries(PROBES) as [DefaultsName, TypeObject][]) {
    const fn = lib.func(`${name.replace(/_params$/, "")}_default_params`, probe, []) as () => { value: Record<string, unknown> };
    out[name] = fn().value;
  }
  return out;
}

function checkLibraryBuild(lib: LibraryHandle, dir: string): void {
  const actual = readLibraryDefaults(lib);
  const diffs: string[] = [];
  for (const [name, expected] of Object.entries(BUNDLED_DEFAULTS)) {
    const got = actual[name as DefaultsName];
    for (const [field, want] of Object.entries(expected)) {
      const have = want === null ? nullable(got[field]) : got[field];
      const same = typeof want === "number" && typeof have === "number" ? Object.is(Math.fround(want), Math.fround(have)) : have === want;
      if (!same) diffs.push(`${name}.${field} = ${String(have)} (bundled: ${String(want)})`);
    }
  }
  if (diffs.length > 0) {
    throw new MoltbotError(
      "library_invalid",
      `engine.library_dir ${dir}: its struct layouts differ from the llama.h Moltbot binds (default values land in other fields: ${diffs.slice(0, 6).join("; ")}${diffs.length > 6 ? `; ${diffs.length - 6} more` : ""}): build the llama.cpp source that node-llama-cpp bundles, unpatched`,
    );
  }
}

// ---- native stderr ----------------------------------------------------------------------

interface Libc {
  dup(fd: number): number;
  dup2(from: number, to: number): number;
  close(fd: number): number;
  fflush(stream: null): number;
}
let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const c = koffi.load(process.platform === "darwin" ? "libSystem.B.dylib" : "libc.so.6");
    libc = { dup: c.func("int dup(int)"), dup2: c.func("int dup2(int, int)"), close: c.func("int close(int)"), fflush: c.func("int fflush(void *)") };
  } catch {
    libc = null;
  }
  return libc;
}

/**
 * Run `fn` and return what llama.cpp said meanwhile (its warnings and errors, which then reach
 * no log: the caller reports them), and what native code wrote to fd 2 (pointed at a
 * temporary file for the call). llama.cpp's
 * grammar parser reports *why* a GBNF does not parse only with fprintf(stderr) (its log gets
 * "failed to parse grammar" and nothing more), and a client deserves the reason. Synchronous:
 * nothing else writes to fd 2 meanwhile (the worker logs over IPC). Without libc (not Linux or
 * macOS) only the log lines are returned.
 */
export function captureNativeErrors<T>(fn: () => T): { result: T; text: string } {
  logCapture = [];
  try {
    const { result, text } = captureFd2(fn);
    return { result, text: text + logCapture.join("") };
  } finally {
    logCapture = null;
  }
}

function captureFd2<T>(fn: () => T): { result: T; text: string } {
  const c = loadLibc();
  if (c === null) return { result: fn(), text: "" };
  const file = path.join(tmpdir(), `moltbot-stderr-${process.pid}-${Date.now()}`);
  const fd = openSync(file, "w+");
  const saved = c.dup(2);
  let result: T;
  try {
    c.fflush(null);
    c.dup2(fd, 2);
    try {
      result = fn();
    } finally {
      c.fflush(null);
      c.dup2(saved, 2);
      c.close(saved);
    }
    return { result, text: readFileSync(file, "utf8") };
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

// ---- native scratch memory ----------------------------------------------------------------

/**
 * A llama_batch whose arrays live in native memory that JS writes through typed-array views,
 * so filling a step costs plain array stores (no per-element FFI calls). Each token carries
 * exactly one sequence id.
 */
export class NativeBatch {
  readonly capacity: number;
  readonly token: Int32Array;
  readonly pos: Int32Array;
  readonly seq: Int32Array;
  readonly logits: Int8Array;
  readonly value: LlamaBatchValue;
  private readonly allocations: unknown[];
  private freed = false;

  constructor(capacity: number) {
    this.capacity = capacity;
    const tokenPtr = koffi.alloc("int32_t", capacity);
    const posPtr = koffi.alloc("int32_t", capacity);
    const nSeqPtr = koffi.alloc("int32_t", capacity);
    const seqPtr = koffi.alloc("int32_t", capacity);
    const seqPtrsPtr = koffi.alloc("void *", capacity);
    const logitsPtr = koffi.alloc("int8_t", capacity);
    this.allocations = [tokenPtr, posPtr, nSeqPtr, seqPtr, seqPtrsPtr, logitsPtr];
    this.token = new Int32Array(koffi.view(tokenPtr, capacity * 4));
    this.pos = new Int32Array(koffi.view(posPtr, capacity * 4));
    this.seq = new Int32Array(koffi.view(seqPtr, capacity * 4));
    this.logits = new Int8Array(koffi.view(logitsPtr, capacity));
    new Int32Array(koffi.view(nSeqPtr, capacity * 4)).fill(1);
    // seq_id is int32_t**: entry i points at seq[i].
    const seqBase = koffi.address(seqPtr);
    const ptrs = new BigUint64Array(koffi.view(seqPtrsPtr, capacity * 8));
    for (let i = 0; i < capacity; i++) ptrs[i] = seqBase + BigInt(i * 4);
    this.value = { n_tokens: 0, token: tokenPtr, embd: null, pos: posPtr, n_seq_id: nSeqPtr, seq_id: seqPtrsPtr, logits: logitsPtr };
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const p of this.allocations) koffi.free(p);
  }
}

/**
 * A llama_token_data_array and its entries in native memory, written through typed-array
 * views (the entries' int32 id and float logit share one buffer), so a sampler can be applied
 * to a chosen set of candidates without per-element FFI calls.
 */
export class NativeCandidates {
  readonly capacity: number;
  private readonly ids: Int32Array;
  private readonly logits: Float32Array;
  private readonly size: BigUint64Array;
  private readonly header: unknown;
  private readonly data: unknown;
  private readonly stride: number;
  private freed = false;

  constructor(capacity: number) {
    this.capacity = capacity;
    const entry = koffi.sizeof(LlamaTokenData);
    this.stride = entry / 4;
    this.data = koffi.alloc(LlamaTokenData, capacity);
    this.header = koffi.alloc(LlamaTokenDataArray, 1);
    const bytes = koffi.view(this.data, capacity * entry);
    this.ids = new Int32Array(bytes);
    this.logits = new Float32Array(bytes);
    const head = koffi.view(this.header, koffi.sizeof(LlamaTokenDataArray));
    new BigUint64Array(head, koffi.offsetof(LlamaTokenDataArray, "data"), 1)[0] = koffi.address(this.data);
    this.size = new BigUint64Array(head, koffi.offsetof(LlamaTokenDataArray, "size"), 1);
    new BigInt64Array(head, koffi.offsetof(LlamaTokenDataArray, "selected"), 1)[0] = -1n;
    new Uint8Array(head, koffi.offsetof(LlamaTokenDataArray, "sorted"), 1)[0] = 0;
  }

  token(i: number): number {
    return this.ids[i * this.stride]!;
  }

  /** Entry i := (token, logit). Call `pointer(n)` after writing entries 0..n-1. */
  set(i: number, token: number, logit: number): void {
    this.ids[i * this.stride] = token;
    this.logits[i * this.stride + 1] = logit;
  }

  logit(i: number): number {
    return this.logits[i * this.stride + 1]!;
  }

  /** The array holding the first `n` entries, for llama_sampler_apply. */
  pointer(n: number): unknown {
    this.size[0] = BigInt(n);
    return this.header;
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    koffi.free(this.data);
    koffi.free(this.header);
  }
}

/** koffi returns NULL as null (or 0n for some pointer shapes): normalise to null. */
function nullable(p: unknown): unknown {
  return p === null || p === undefined || p === 0n || p === 0 ? null : p;
}

/** A zero-copy Float32Array over `count` floats at a native pointer (valid until the next decode). */
export function floatView(ptr: FloatPtr, count: number): Float32Array {
  return new Float32Array(koffi.view(ptr, count * 4));
}
