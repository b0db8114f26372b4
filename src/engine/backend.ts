// Which compute backend and device a worker's model runs on (engine.backend). `auto` tries CUDA,
// then Vulkan, then the CPU, and keeps the reason each GPU backend was passed over (library
// missing, load error, no device) for the worker's log line. An explicitly requested GPU that
// cannot be used is an error, never a quiet CPU fallback: an operator who asked for CUDA and
// got the CPU would find out from the latency, days later.
//
// The libllama loaded (shipped CPU build or engine.library_dir) is the same for every backend:
// with GGML_BACKEND_DL a GPU backend is a ggml module registered beside it. Shipped GPU modules
// live in node-llama-cpp's per-backend packages (@node-llama-cpp/linux-x64-cuda, ...); their
// libllama is the same code as the CPU package's, and their libggml-base.so is byte-identical,
// so only the module (libggml-cuda.so) is taken from there. The model is then given the chosen
// devices explicitly (llama_model_params.devices): with a library_dir holding both CUDA and
// Vulkan modules, llama.cpp's default would offload to every GPU of both.
import { existsSync } from "node:fs";
import path from "node:path";
import koffi from "koffi";
import { MoltbotError } from "../errors.js";
import { GGML_DEV_TYPE, shippedBackendModule, type DevicePtr, type LibLlama, type LlamaBackendKind } from "./libllama.js";

export type BackendSetting = "auto" | LlamaBackendKind;

type GpuKind = Exclude<LlamaBackendKind, "cpu">;
/** ggml's registry names of the GPU backends. */
const REG_NAME: Record<GpuKind, string> = { cuda: "CUDA", vulkan: "Vulkan" };
const AUTO_ORDER: GpuKind[] = ["cuda", "vulkan"];

export interface BackendChoice {
  kind: LlamaBackendKind;
  /** The devices the model is offloaded to (llama_model_params.devices); empty on the CPU. */
  devices: DevicePtr[];
  /** Name and description of the first device (the CPU's on the CPU backend). */
  device: string;
  description: string;
  /** GPU backends passed over by `auto`, with why. */
  skipped: { kind: GpuKind; reason: string }[];
}

export interface BackendRequest {
  backend: BackendSetting;
  /** Only this GPU (an index among the backend's GPUs); undefined = every GPU of the backend. */
  mainGpu?: number | undefined;
}

/** The backend's GPUs, or why there are none. Loads its ggml module when not yet registered. */
function gpuDevices(lib: LibLlama, kind: GpuKind): DevicePtr[] | string {
  let reg = lib.ggml_backend_reg_by_name(REG_NAME[kind]);
  if (reg === null) {
    let module: string;
    if (lib.libraryDir !== undefined) {
      module = path.join(lib.libraryDir, `libggml-${kind}.so`);
      if (!existsSync(module)) return `library missing: no libggml-${kind}.so in ${lib.libraryDir}`;
    } else {
      try {
        module = shippedBackendModule(kind);
      } catch (err) {
        return `library missing: ${(err as Error).message}`;
      }
      if (!existsSync(module)) return `library missing: no ${module}`;
    }
    // dlopen's own message names what is missing (libcuda.so.1: the driver, libcudart: the
    // toolkit); ggml_backend_load only logs it. The handle stays open, which ggml reuses.
    try {
      koffi.load(module);
    } catch (err) {
      return `load error: ${(err as Error).message}`;
    }
    reg = lib.ggml_backend_load(module);
    if (reg === null) return `load error: ggml could not initialise ${module}`;
  }
  const devices: DevicePtr[] = [];
  const n = lib.ggml_backend_reg_dev_count(reg);
  for (let i = 0; i < n; i++) {
    const dev = lib.ggml_backend_reg_dev_get(reg, i);
    const type = lib.ggml_backend_dev_type(dev);
    if (type === GGML_DEV_TYPE.gpu || type === GGML_DEV_TYPE.igpu) devices.push(dev);
  }
  return devices.length === 0 ? "no device" : devices;
}

function describe(lib: LibLlama, dev: DevicePtr): { device: string; description: string } {
  return { device: lib.ggml_backend_dev_name(dev), description: lib.ggml_backend_dev_description(dev) };
}

function cpuChoice(lib: LibLlama, skipped: BackendChoice["skipped"]): BackendChoice {
  const cpu = lib.ggml_backend_dev_by_type(GGML_DEV_TYPE.cpu);
  const d = cpu === null ? { device: "CPU", description: "CPU" } : describe(lib, cpu);
  return { kind: "cpu", devices: [], ...d, skipped };
}

/**
 * Pick the backend and devices for a model. Throws backend_unavailable when the GPU backend
 * named (not `auto`) cannot be used, or `mainGpu` is not one of its devices.
 */
export function chooseBackend(lib: LibLlama, req: BackendRequest): BackendChoice {
  if (req.backend === "cpu") return cpuChoice(lib, []);
  const skipped: BackendChoice["skipped"] = [];
  for (const kind of req.backend === "auto" ? AUTO_ORDER : [req.backend]) {
    const found = gpuDevices(lib, kind);
    let reason: string | undefined;
    let devices: DevicePtr[] = [];
    if (typeof found === "string") reason = found;
    else if (req.mainGpu !== undefined && req.mainGpu >= found.length) reason = `no device ${req.mainGpu} (it has ${found.length})`;
    else devices = req.mainGpu === undefined ? found : [found[req.mainGpu]!];
    if (reason === undefined) return { kind, devices, ...describe(lib, devices[0]!), skipped };
    if (req.backend !== "auto") {
      const from = lib.libraryDir === undefined ? "the shipped binaries" : `engine.library_dir ${lib.libraryDir}`;
      throw new MoltbotError("backend_unavailable", `engine.backend is ${kind}, but ${REG_NAME[kind]} cannot be used (${reason}; from ${from}); set engine.backend to auto or cpu to run without it`);
    }
    skipped.push({ kind, reason });
  }
  return cpuChoice(lib, skipped);
}

/** "cuda (skipped: ...)" style summary of what auto passed over, for the worker's log line. */
export function describeSkipped(choice: BackendChoice): string {
  return choice.skipped.map((s) => `${s.kind}: ${s.reason}`).join("; ");
}

/**
 * CPU threads for a model placed on a GPU. With every layer offloaded, the CPU backend only
 * looks up the input tokens' embeddings (llama.cpp keeps tok_embd in host memory) for each
 * step, microseconds of work: one thread, the calling one, does it without a threadpool whose
 * spinning workers would take cores from the server and the other workers. With some layers
 * left on the CPU those layers are CPU-bound as ever and keep every configured thread.
 */
export function threadsForPlacement(threads: number, offloadedLayers: number, totalLayers: number): number {
  return offloadedLayers > 0 && offloadedLayers >= totalLayers ? 1 : threads;
}
