/**
 * The WebGPU adapter and device: one per process, requested once by {@link initGPU}.
 *
 * A lost device or an uncaptured validation error is remembered and reported by the next call
 * to {@link getDevice}, so a broken device fails loudly at the next op instead of hanging.
 *
 * @module
 */

/**
 * The kernels an op runs: `"software"`, register-blocked kernels tuned for CPU rasterizers
 * (llvmpipe, lavapipe, SwiftShader, WARP), or `"gpu"`, workgroup-tiled kernels for hardware
 * adapters that stay within WebGPU's default limits. Both compute the same results.
 *
 * @example
 * ```ts
 * import { initGPU, type KernelFamily, kernelFamily } from "@resnet/webgpu";
 * await initGPU();
 * const family: KernelFamily = kernelFamily();
 * console.log(family); // "software" on llvmpipe, "gpu" on a GPU
 * ```
 */
export type KernelFamily = "gpu" | "software";

/** Options for {@link initGPU}. */
export interface InitGPUOptions {
  /** Adapter preference; default `"high-performance"`. */
  powerPreference?: GPUPowerPreference;
  /**
   * Which kernel family the ops run ({@link KernelFamily}); default `"auto"`: `"software"` on a
   * fallback adapter or one whose name is a software rasterizer's, `"gpu"` otherwise. The
   * environment variable `RESNET_WEBGPU_KERNELS` (`auto`, `gpu` or `software`), when set and
   * readable, takes precedence over this option.
   */
  kernels?: "auto" | KernelFamily;
  /**
   * Which device limits to request: `"adapter"` (default), the adapter's own for the limits the
   * kernels use (larger buffers, more workgroup memory); `"default"`, only WebGPU's default
   * limits, as the most constrained adapters offer (to test that the kernels run there). The
   * environment variable `RESNET_WEBGPU_LIMITS` (`adapter` or `default`), when set and readable,
   * takes precedence.
   */
  limits?: "adapter" | "default";
}

let device: GPUDevice | null = null;
let adapterInfo: GPUAdapterInfo | null = null;
let family: KernelFamily = "software";
let pending: Promise<GPUDevice> | null = null;
let failure: Error | null = null;

const NO_ADAPTER_HELP = "No WebGPU adapter is available (navigator.gpu.requestAdapter() returned " +
  "null, also for the fallback adapter). Install a GPU driver with Vulkan support, or on a machine " +
  "without a GPU install Mesa's software rasterizers (Debian/Ubuntu: `apt-get install " +
  "mesa-vulkan-drivers` for lavapipe, which Deno then uses; llvmpipe through GL comes with " +
  "libgl1-mesa-dri). DENO_WEBGPU_BACKEND=vulkan|gl chooses the backend.";

/**
 * Requests a WebGPU adapter and device with the limits the kernels need and returns the device.
 * Idempotent: later calls return the same device (their options are ignored). Falls back to a
 * software adapter (Mesa llvmpipe/lavapipe) when no hardware adapter exists. Chooses the
 * {@link KernelFamily} the ops run (see {@link kernelFamily}).
 *
 * @throws {Error} when WebGPU is missing or no adapter exists, with how to fix it.
 * @throws {RangeError} when `kernels`, `limits` or their environment variables have another value.
 * @example
 * ```ts
 * import { initGPU, kernelFamily } from "@resnet/webgpu";
 * const device = await initGPU({ kernels: "auto", limits: "adapter" });
 * console.log(device.limits.maxStorageBufferBindingSize, kernelFamily());
 * ```
 */
export function initGPU(options: InitGPUOptions = {}): Promise<GPUDevice> {
  if (device) return Promise.resolve(device);
  if (pending) return pending;
  pending = requestDevice(options).finally(() => pending = null);
  return pending;
}

// Reads an environment variable, or returns undefined. The Deno entry point sets it (see
// _environment.ts); the browser build leaves it empty.
let readEnvironment: ((name: string) => string | undefined) | null = null;

/** Sets how {@link initGPU} reads its environment variables. Internal: not exported by mod.ts. */
export function setEnvironmentReader(read: ((name: string) => string | undefined) | null): void {
  readEnvironment = read;
}

/** An option's value, replaced by the environment variable `name` when that is set. */
function fromEnvironment<T extends string>(
  name: string,
  allowed: readonly T[],
  option: T | undefined,
  fallback: T,
): T {
  const value = readEnvironment?.(name)?.trim();
  if (value) {
    if (!(allowed as readonly string[]).includes(value)) {
      throw new RangeError(`${name} must be one of ${allowed.join(", ")}, got "${value}"`);
    }
    return value as T;
  }
  if (option !== undefined && !allowed.includes(option)) {
    throw new RangeError(
      `initGPU(): ${name === "RESNET_WEBGPU_KERNELS" ? "kernels" : "limits"} must be one of ` +
        `${allowed.join(", ")}, got ${JSON.stringify(option)}`,
    );
  }
  return option ?? fallback;
}

/** Software rasterizers, by the names their adapters report. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|softpipe|swiftshader|\bwarp\b|basic render/i;

/** The family `"auto"` chooses for an adapter: software for a fallback or software adapter. */
export function autoKernelFamily(info: GPUAdapterInfo): KernelFamily {
  const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  const name = [info.vendor, info.architecture, info.device, info.description].join(" ");
  return fallback || SOFTWARE_ADAPTER.test(name) ? "software" : "gpu";
}

// Run before the adapter is requested. The Deno entry point (mod.ts) sets it to prepare the
// process's environment (see _runtime_dir.ts); the browser build leaves it empty, so that nothing
// here names a Deno API.
let prepareAdapterRequest: (() => void) | null = null;

/** Sets what runs before each adapter request. Internal: not exported by mod.ts. */
export function setAdapterPreparation(prepare: (() => void) | null): void {
  prepareAdapterRequest = prepare;
}

async function requestDevice(options: InitGPUOptions): Promise<GPUDevice> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new Error(
      "WebGPU is not available in this runtime (navigator.gpu is undefined). Use Deno 2 or later, " +
        "where navigator.gpu needs no flag.",
    );
  }
  const powerPreference = options.powerPreference ?? "high-performance";
  const kernels = fromEnvironment(
    "RESNET_WEBGPU_KERNELS",
    ["auto", "gpu", "software"] as const,
    options.kernels,
    "auto",
  );
  const limitsWanted = fromEnvironment(
    "RESNET_WEBGPU_LIMITS",
    ["adapter", "default"] as const,
    options.limits,
    "adapter",
  );
  prepareAdapterRequest?.();
  const adapter = await gpu.requestAdapter({ powerPreference }) ??
    await gpu.requestAdapter({ forceFallbackAdapter: true });
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  const limits = adapter.limits;
  const requiredLimits: Record<string, number> = limitsWanted === "default" ? {} : {
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
    maxBufferSize: limits.maxBufferSize,
    maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: limits.maxComputeWorkgroupSizeY,
    maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
  };
  const requiredFeatures: GPUFeatureName[] = [];
  if (adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
  const dev = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  failure = null;
  dev.lost.then((info) => {
    if (device !== dev) return;
    failure = new Error(
      `The GPU device was lost (${info.reason}: ${info.message}). Tensors created before are ` +
        "invalid; call initGPU() again and recreate the model.",
    );
    device = null;
  });
  dev.addEventListener("uncapturederror", (event) => {
    const error = (event as GPUUncapturedErrorEvent).error;
    failure ??= new Error(`WebGPU reported an error: ${error.message}`);
  });
  device = dev;
  adapterInfo = adapter.info;
  family = kernels === "auto" ? autoKernelFamily(adapter.info) : kernels;
  return dev;
}

/**
 * The device of the last {@link initGPU}, or null before it and after that device was lost.
 * Internal: never throws, for checks that a tensor belongs to the device in use.
 */
export function currentDevice(): GPUDevice | null {
  return device;
}

/**
 * The device from {@link initGPU}.
 *
 * @throws {Error} before `initGPU()` has resolved, after the device was lost, or once after WebGPU
 * reported a validation error (the error is reported by the next call, then cleared: the device
 * keeps working for later work).
 * @example
 * ```ts
 * import { getDevice, initGPU } from "@resnet/webgpu";
 * await initGPU();
 * const device = getDevice();
 * ```
 */
export function getDevice(): GPUDevice {
  if (failure) {
    // Reported once: a lost device stays gone (the next call says initGPU() is needed), and a
    // validation error does not poison the work that follows it.
    const error = failure;
    failure = null;
    throw error;
  }
  if (!device) {
    throw new Error("The GPU is not initialized: call `await initGPU()` before creating tensors.");
  }
  return device;
}

/**
 * A one-line description of the adapter in use, such as
 * `"llvmpipe (LLVM 15.0.6, 256 bits) (fallback adapter)"`; `"none"` before {@link initGPU}.
 *
 * @example
 * ```ts
 * import { adapterDescription, initGPU } from "@resnet/webgpu";
 * await initGPU();
 * console.log(adapterDescription());
 * ```
 */
export function adapterDescription(): string {
  if (!adapterInfo) return "none";
  const info = adapterInfo as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const name = info.description || [info.vendor, info.architecture, info.device]
    .filter(Boolean).join(" ") ||
    "unknown adapter";
  return info.isFallbackAdapter ? `${name} (fallback adapter)` : name;
}

/**
 * The {@link KernelFamily} the ops run on the device of the last {@link initGPU}: chosen from the
 * adapter (`"software"` for a fallback or software adapter, else `"gpu"`) unless `initGPU`'s
 * `kernels` option or the `RESNET_WEBGPU_KERNELS` environment variable named one; `"software"`
 * before `initGPU()`.
 *
 * @example
 * ```ts
 * import { adapterDescription, initGPU, kernelFamily } from "@resnet/webgpu";
 * await initGPU();
 * console.log(`adapter: ${adapterDescription()}, kernels: ${kernelFamily()}`);
 * ```
 */
export function kernelFamily(): KernelFamily {
  return family;
}
