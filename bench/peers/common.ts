/**
 * What every peer script of `deno task bench:peers` shares: the workload (the paper's CIFAR
 * ResNet-20 at batch 32), the plan of steps it is handed, seeded random data, a counter of
 * WebGPU dispatches and submits that works for any framework, and the result it prints.
 *
 * A peer script runs in its own process (started by `run.ts`), measures one framework and prints
 * one line `RESULT_PREFIX + JSON` on standard output; progress goes to standard error.
 *
 * @module
 */

/** Images per step, for training and inference. */
export const BATCH = 32;
/** CIFAR-10's classes. */
export const CLASSES = 10;
/** Input images: `[N, C, H, W]` = `[32, 3, 32, 32]`. */
export const IMAGE = { channels: 3, height: 32, width: 32 } as const;
/** SGD hyper-parameters of the training step (no weight decay, no dampening, no Nesterov). */
export const SGD = { lr: 0.1, momentum: 0.9 } as const;
/** Batch norm: epsilon, and PyTorch's momentum for the running statistics (TF's is 1 - it). */
export const BN = { eps: 1e-5, momentum: 0.1 } as const;
/** The conv timed on its own: 3x3, 16 -> 16 channels, 32x32, batch 32, padding 1, no bias. */
export const CONV = { n: 32, channels: 16, size: 32, kernel: 3 } as const;
/** Floating-point operations of one forward of {@link CONV}: 2 * N * Cout * H * W * Cin * 9. */
export const CONV_FLOPS = 2 * CONV.n * CONV.channels * CONV.size * CONV.size * CONV.channels *
  CONV.kernel * CONV.kernel;
/** Prefix of the line that carries a peer's result on standard output. */
export const RESULT_PREFIX = "@@peer-result ";

/** How many steps a peer runs: untimed warm-up first, then the timed ones. */
export interface Plan {
  /** Untimed training steps (compilation, pipeline creation) before the timed ones. */
  warmup: number;
  /** Timed training steps; the loss is read back once, after the last. */
  trainSteps: number;
  /** Timed inference forwards (after `warmup` untimed ones); one wait at the end. */
  inferSteps: number;
  /** Timed conv forwards (after two untimed ones); one wait at the end. */
  convReps: number;
  /** Whether to run one more, untimed training step under the framework's own profiler. */
  profile?: boolean;
}

/** One residual block of ResNet-20: its channels, stride and whether it has a projection. */
export interface BlockSpec {
  /** Name prefix of the block's parameters, e.g. `"s2b0"`. */
  name: string;
  /** Input channels. */
  inChannels: number;
  /** Output channels. */
  outChannels: number;
  /** Stride of the first 3x3 conv (and of the projection). */
  stride: number;
  /** Whether the shortcut is a 1x1 conv + batch norm (else identity). */
  projection: boolean;
}

/**
 * The paper's CIFAR ResNet-20 after its 3x3 stem (16 channels, stride 1, BN, ReLU): three stages of
 * three basic blocks with 16/32/64 channels, stride 2 and a projection in the first block of
 * stages 2 and 3; global average pooling and a linear layer 64 -> 10 follow.
 */
export function resnet20Blocks(): BlockSpec[] {
  const blocks: BlockSpec[] = [];
  let previous = 16;
  [16, 32, 64].forEach((channels, stage) => {
    for (let i = 0; i < 3; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      blocks.push({
        name: `s${stage + 1}b${i}`,
        inChannels: previous,
        outChannels: channels,
        stride,
        projection: stride !== 1 || previous !== channels,
      });
      previous = channels;
    }
  });
  return blocks;
}

/** Trainable parameters of ResNet-20 with conv biases: 273,258 (784 of them conv biases). */
export function resnet20ParameterCount(convBias = true): number {
  const conv = (i: number, o: number, k: number) => o * i * k * k + (convBias ? o : 0);
  let count = conv(3, 16, 3) + 2 * 16;
  for (const b of resnet20Blocks()) {
    count += conv(b.inChannels, b.outChannels, 3) + conv(b.outChannels, b.outChannels, 3) +
      4 * b.outChannels;
    if (b.projection) count += conv(b.inChannels, b.outChannels, 1) + 2 * b.outChannels;
  }
  return count + 64 * CLASSES + CLASSES;
}

/** A seeded generator of uniform numbers in [0, 1) (mulberry32), the same in every peer. */
export function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` standard normal numbers times `scale` (Box-Muller over {@link uniform}). */
export function normals(count: number, seed: number, scale = 1): Float32Array<ArrayBuffer> {
  const next = uniform(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next())) * scale;
    const theta = 2 * Math.PI * next();
    out[i] = r * Math.cos(theta);
    if (i + 1 < count) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

/** The batch every peer trains on: images `[32, 3, 32, 32]` (NCHW) and labels in [0, 10). */
export function randomBatch(): {
  images: Float32Array<ArrayBuffer>;
  labels: Int32Array<ArrayBuffer>;
  oneHot: Float32Array<ArrayBuffer>;
} {
  const images = normals(BATCH * IMAGE.channels * IMAGE.height * IMAGE.width, 1);
  const next = uniform(2);
  const labels = Int32Array.from({ length: BATCH }, () => Math.floor(next() * CLASSES));
  const oneHot = new Float32Array(BATCH * CLASSES);
  labels.forEach((label, i) => oneHot[i * CLASSES + label] = 1);
  return { images, labels, oneHot };
}

/** `[N, C, H, W]` data re-laid as `[N, H, W, C]` (TensorFlow.js's default layout). */
export function nchwToNhwc(data: Float32Array, n: number, c: number, h: number, w: number) {
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          out[((b * h + y) * w + x) * c + ch] = data[((b * c + ch) * h + y) * w + x];
        }
      }
    }
  }
  return out;
}

/** Counts of WebGPU calls since {@link countGpuCalls} was installed. */
export interface GpuCallCounts {
  /** `dispatchWorkgroups` (and indirect) calls: kernels launched. */
  dispatches: number;
  /** `GPUQueue.submit` calls. */
  submits: number;
}

const calls: GpuCallCounts = { dispatches: 0, submits: 0 };
let installed = false;

/**
 * Wraps `GPUComputePassEncoder.prototype.dispatchWorkgroups*` and `GPUQueue.prototype.submit` so
 * that every framework's kernels are counted the same way, whatever its own profiler offers.
 * Returns a function giving the counts so far.
 */
export function countGpuCalls(): () => GpuCallCounts {
  if (!installed && typeof GPUComputePassEncoder !== "undefined") {
    installed = true;
    const pass = GPUComputePassEncoder.prototype;
    const dispatch = pass.dispatchWorkgroups;
    pass.dispatchWorkgroups = function (this: GPUComputePassEncoder, x, y, z) {
      calls.dispatches++;
      return dispatch.call(this, x, y, z);
    };
    const indirect = pass.dispatchWorkgroupsIndirect;
    pass.dispatchWorkgroupsIndirect = function (this: GPUComputePassEncoder, buffer, offset) {
      calls.dispatches++;
      return indirect.call(this, buffer, offset);
    };
    const queue = GPUQueue.prototype;
    const submit = queue.submit;
    queue.submit = function (this: GPUQueue, buffers) {
      calls.submits++;
      return submit.call(this, buffers);
    };
  }
  return () => ({ ...calls });
}

/** What a peer measured; a figure is null when that part failed or did not run. */
export interface PeerResult {
  /** Framework's name. */
  framework: string;
  /** Its version (and its WebGPU backend's, if separate). */
  version: string;
  /** The WebGPU adapter this process got. */
  adapter: string;
  /** Training images per second over the timed steps. */
  trainImagesPerSec: number | null;
  /** Seconds per timed training step. */
  trainSecondsPerStep: number | null;
  /** Seconds of the warm-up steps (the first includes compiling). */
  warmupSeconds: number[];
  /** The loss read back after the timed steps. */
  loss: number | null;
  /** Inference (forward, eval mode) images per second. */
  inferImagesPerSec: number | null;
  /** Forward GFLOP/s of the 3x3 16 -> 16 conv on 32x32 at batch 32. */
  convGflops: number | null;
  /** Trainable parameters (BN running statistics excluded). */
  params: number | null;
  /** Kernels dispatched per training step (counted at `dispatchWorkgroups`). */
  dispatchesPerTrainStep: number | null;
  /** Queue submits per training step. */
  submitsPerTrainStep: number | null;
  /** Kernels dispatched per inference forward. */
  dispatchesPerInferStep: number | null;
  /** Steps run: the plan. */
  plan: Plan;
  /** Remarks on how the model or the measurement differs. */
  notes: string[];
  /** Errors caught, each prefixed with the part that failed. */
  errors: string[];
}

/** A result with every figure empty, to fill in. */
export function emptyResult(framework: string, version: string, plan: Plan): PeerResult {
  return {
    framework,
    version,
    adapter: "unknown",
    trainImagesPerSec: null,
    trainSecondsPerStep: null,
    warmupSeconds: [],
    loss: null,
    inferImagesPerSec: null,
    convGflops: null,
    params: null,
    dispatchesPerTrainStep: null,
    submitsPerTrainStep: null,
    dispatchesPerInferStep: null,
    plan,
    notes: [],
    errors: [],
  };
}

/** The adapter's description, as navigator.gpu reports it to this process. */
export async function describeAdapter(): Promise<string> {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return "none";
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const name = info.description || [info.vendor, info.architecture, info.device]
    .filter(Boolean).join(" ") ||
    "unknown adapter";
  return info.isFallbackAdapter ? `${name} (fallback adapter)` : name;
}

/** The plan handed to a peer script as its first argument (JSON). */
export function planFromArgs(): Plan {
  const fallback: Plan = { warmup: 1, trainSteps: 1, inferSteps: 1, convReps: 1 };
  return Deno.args[0] ? { ...fallback, ...JSON.parse(Deno.args[0]) } : fallback;
}

/** Writes a progress line to standard error, prefixed with the framework. */
export function progress(framework: string, message: string): void {
  console.error(`[${framework}] ${message}`);
}

/**
 * Runs one part of a measurement; an error is recorded in `result.errors` (and printed) instead of
 * ending the peer, so the other parts still report.
 */
export async function part(
  result: PeerResult,
  name: string,
  body: () => Promise<void>,
): Promise<void> {
  try {
    await body();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const line = `${name}: ${message.split("\n").slice(0, 3).join(" / ")}`;
    result.errors.push(line);
    progress(result.framework, `FAILED ${line}`);
  }
}

/** Prints the result line that `run.ts` reads. */
export function emit(result: PeerResult): void {
  console.log(RESULT_PREFIX + JSON.stringify(result));
}

/** Seconds since `start` (from `performance.now()`). */
export function since(start: number): number {
  return (performance.now() - start) / 1000;
}
