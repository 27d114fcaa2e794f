/**
 * Batch normalization over the channels of `[N, C, H, W]` tensors, as PyTorch's `BatchNorm2d`,
 * with the residual addition and the ReLU that follow it in a ResNet block as options of the same
 * op.
 *
 * @module
 */
import statsSource from "../../kernels/batch_norm_stats.wgsl" with { type: "text" };
import evalStatsSource from "../../kernels/batch_norm_eval_stats.wgsl" with { type: "text" };
import forwardSource from "../../kernels/batch_norm_forward.wgsl" with { type: "text" };
import reduceSource from "../../kernels/batch_norm_backward_reduce.wgsl" with { type: "text" };
import inputGradSource from "../../kernels/batch_norm_backward_input.wgsl" with { type: "text" };
import statsChunksSource from "../../kernels/batch_norm_stats_chunks.wgsl" with { type: "text" };
import reduceChunksSource from "../../kernels/batch_norm_backward_reduce_chunks.wgsl" with {
  type: "text",
};
import statsForwardSource from "../../kernels/batch_norm_stats_forward.wgsl" with { type: "text" };
import backwardSource from "../../kernels/batch_norm_backward.wgsl" with { type: "text" };
import { getDevice, kernelFamily } from "../gpu/device.ts";
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import {
  Arena,
  formatShape,
  gradDestination,
  markModified,
  markZeroChannelSums,
  moveIntoArena,
  record,
  shouldRecord,
  Tensor,
} from "../tensor.ts";
import { checkFinite, checkTensorNd, describe, optionalTensor } from "./_check.ts";

const STATS = kernel("batch_norm_stats", statsSource, [
  "batch",
  "channels",
  "hw",
  "lanes",
  "rows",
  "count",
  "momentum",
  "eps",
]);
const STATS_RUNNING = { ...STATS, entryPoint: "main_running" };
const STATS_RUNNING_COUNTER = { ...STATS, entryPoint: "main_running_counter" };
const EVAL_STATS = kernel("batch_norm_eval_stats", evalStatsSource, ["channels", "eps"]);
const FORWARD = kernel("batch_norm_forward", forwardSource, [
  "channels",
  "hw",
  "chunks",
  "count",
  "partials",
  "n",
  "momentum",
  "eps",
]);
const FORWARD_PARTIALS = { ...FORWARD, entryPoint: "main_partials" };
const FORWARD_PARTIALS_RUNNING = { ...FORWARD, entryPoint: "main_partials_running" };
const BACKWARD_REDUCE = kernel("batch_norm_backward_reduce", reduceSource, [
  "batch",
  "channels",
  "hw",
  "lanes",
  "rows",
  "n",
]);
const BACKWARD_INPUT = kernel("batch_norm_backward_input", inputGradSource, [
  "channels",
  "hw",
  "chunks",
  "count",
  "partials",
  "n",
]);
const BACKWARD_INPUT_RESIDUAL = { ...BACKWARD_INPUT, entryPoint: "main_residual" };
const BACKWARD_INPUT_PARTIALS = { ...BACKWARD_INPUT, entryPoint: "main_partials" };
const BACKWARD_INPUT_PARTIALS_RESIDUAL = {
  ...BACKWARD_INPUT,
  entryPoint: "main_partials_residual",
};

// The software family's training: one workgroup per channel reduces it, then writes its output
// (batch_norm_stats_forward) or its gradients (batch_norm_backward), one dispatch each way.
const STATS_FORWARD = kernel("batch_norm_stats_forward", statsForwardSource, [
  "batch",
  "channels",
  "hw",
  "lanes",
  "rows",
  "count",
  "momentum",
  "eps",
  "mean_at",
  "var_at",
  "counter_at",
]);
const STATS_FORWARD_RUNNING = { ...STATS_FORWARD, entryPoint: "main_running" };
const STATS_FORWARD_RUNNING_COUNTER = { ...STATS_FORWARD, entryPoint: "main_running_counter" };
const BACKWARD = kernel("batch_norm_backward", backwardSource, [
  "batch",
  "channels",
  "hw",
  "lanes",
  "rows",
  "n",
]);
const BACKWARD_RESIDUAL = { ...BACKWARD, entryPoint: "main_residual" };

/** Workgroup size of the software family's per-channel reductions. */
const REDUCE_WG = 64;

// The gpu family's reductions: one pass over channels x chunks, whose per-chunk sums the next
// elementwise pass (batch_norm_forward's and batch_norm_backward_input's main_partials* entry
// points) adds per channel.
const STATS_CHUNKS = kernel("batch_norm_stats_chunks", statsChunksSource, [
  "batch",
  "channels",
  "hw",
  "units",
  "per_chunk",
  "chunks",
]);
const STATS_CHUNKS_COUNTER = { ...STATS_CHUNKS, entryPoint: "main_counter" };
const REDUCE_CHUNKS = kernel("batch_norm_backward_reduce_chunks", reduceChunksSource, [
  "batch",
  "channels",
  "units",
  "per_chunk",
  "chunks",
]);
/** Workgroup size of the gpu family's chunk passes. */
const CHUNK_WG = 256;
/**
 * The gpu family's chunk passes aim at this many workgroups in all (4 per SM of a 132-SM GPU),
 * but give each invocation at least {@link MIN_UNITS_PER_INVOCATION} vec4s (or values): at
 * ResNet-20 b128 shapes that is 528 (16 channels of 32x32), 544 (32 of 16x16) and 512 (64 of 8x8)
 * workgroups.
 */
const TARGET_WORKGROUPS = 528;
const MIN_UNITS_PER_INVOCATION = 1;

/**
 * Options of {@link batchNorm2d}: the parameters and buffers of PyTorch's `BatchNorm2d`, and what
 * follows the normalization in a ResNet block (a residual addition, a ReLU).
 *
 * @example
 * ```ts
 * import { batchNorm2d, type BatchNorm2dOptions, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const options: BatchNorm2dOptions = {
 *   runningMean: Tensor.zeros([16]),
 *   runningVar: Tensor.ones([16]),
 *   training: false,
 *   relu: true,
 * };
 * console.log(batchNorm2d(Tensor.randn([2, 16, 4, 4], { seed: 0 }), options).shape);
 * ```
 */
export interface BatchNorm2dOptions {
  /** Per-channel scale `[C]` (the affine weight, gamma); omitted or null: 1. */
  weight?: Tensor | null;
  /** Per-channel shift `[C]` (the affine bias, beta); omitted or null: 0. */
  bias?: Tensor | null;
  /**
   * Running mean `[C]`: read in eval mode; in training mode updated in place on the GPU to
   * `(1 - momentum) * runningMean + momentum * batchMean`. Give both running tensors or neither.
   */
  runningMean?: Tensor | null;
  /**
   * Running variance `[C]`: read in eval mode; in training mode updated in place to
   * `(1 - momentum) * runningVar + momentum * unbiasedBatchVar` (the batch variance times
   * n / (n - 1), n = N * H * W).
   */
  runningVar?: Tensor | null;
  /** One-element counter incremented in place by each training call; needs the running stats. */
  numBatchesTracked?: Tensor | null;
  /** Batch statistics (true) or the running statistics (false, eval mode). */
  training: boolean;
  /** Weight of the batch statistic in the running update; default 0.1. */
  momentum?: number;
  /** Added to the variance before the square root; default 1e-5. */
  eps?: number;
  /** Added after the normalization: a residual connection `[N, C, H, W]`; default none. */
  residual?: Tensor | null;
  /** Whether a ReLU comes last (after the residual); default false. */
  relu?: boolean;
}

/**
 * Batch normalization of `input` `[N, C, H, W]` per channel, like PyTorch's
 * `F.batch_norm`/`nn.BatchNorm2d`: `y = (x - mean) / sqrt(var + eps) * weight + bias`, then
 * `+ residual` and a ReLU when asked (`relu(bn(x) + residual)`, a ResNet block's ending, in the
 * same pass over memory). In training mode the mean and the biased variance are the batch's, over
 * `N`, `H`, `W`, and the running statistics and `numBatchesTracked` (when given) are updated in
 * place; in eval mode the running statistics are used and must be given. Differentiable in the
 * input, the weight, the bias and the residual.
 *
 * @returns a tensor `[N, C, H, W]`.
 * @throws {RangeError} when `input` is not `[N, C, H, W]`, a per-channel tensor is not `[C]`, the
 * residual is not the input's shape, eval mode lacks running statistics, only one running tensor
 * is given, or training has one value per channel (`N * H * W = 1`).
 * @throws {TypeError} when an argument has the wrong type.
 * @example
 * ```ts
 * import { batchNorm2d, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([4, 3, 8, 8], { seed: 0 });
 * const runningMean = Tensor.zeros([3]);
 * const runningVar = Tensor.ones([3]);
 * const y = batchNorm2d(x, {
 *   weight: Tensor.ones([3], { requiresGrad: true }),
 *   bias: Tensor.zeros([3], { requiresGrad: true }),
 *   runningMean,
 *   runningVar,
 *   training: true,
 *   residual: Tensor.randn([4, 3, 8, 8], { seed: 1 }),
 *   relu: true,
 * });
 * console.log(y.shape, await runningMean.toArray()); // [4, 3, 8, 8], 0.1 * the batch means
 * ```
 */
export function batchNorm2d(input: Tensor, options: BatchNorm2dOptions): Tensor {
  const op = "batchNorm2d()";
  checkTensorNd(op, "input", input, 4, "[N, C, H, W]");
  const bn = checkBatchNorm(op, options, "options", input.shape);
  const { weight, bias, residual } = bn;
  // The software family's training normalizes in the pass that reduces, when the running
  // statistics (if any) can be bound as one range (see runningRange).
  const running = bn.training && kernelFamily() === "software" ? runningRange(bn) : undefined;
  const fused = running !== undefined;
  const { stats, out } = fused
    ? encodeTrainingForward(input, bn, running)
    : encodeForward(input, bn);

  if (!shouldRecord(input, weight, bias, residual)) {
    stats.dispose();
    return out;
  }
  const inputs = [input];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  if (residual) inputs.push(residual);
  return record(out, {
    name: "batchNorm2d",
    inputs,
    internals: [stats],
    backward: (gy) => batchNorm2dBackward(gy, input, out, stats, bn, fused),
  });
}

/**
 * Encodes the batch norm of `input` in the passes of either family: the statistics (the batch's,
 * or a snapshot of the running ones in eval), then batch_norm_forward. Returns the output and
 * `stats`: [2, C] = (mean, invstd), followed in the gpu family's training by the forward's
 * per-chunk sums.
 */
function encodeForward(input: Tensor, bn: CheckedBatchNorm): { stats: Tensor; out: Tensor } {
  const [N, C, H, W] = input.shape;
  const { weight, bias, residual } = bn;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  // (mean, invstd) per channel, [2, C]: the batch's in training, a snapshot of the running ones in
  // eval. In the gpu family's training, the head of the per-chunk sums (`partials` per channel)
  // that follow it, which the forward pass adds and writes the head from.
  let stats: Tensor;
  let partials = 0;
  if (bn.training) {
    ({ stats, partials } = encodeBatchStatistics(input, bn));
  } else {
    stats = Tensor.empty([2, C]);
    dispatch(EVAL_STATS, {
      buffers: [bn.runningMean!.binding, bn.runningVar!.binding, stats.binding],
      params: { channels: C, eps: bn.eps },
      workgroups: grid1d(C, 64),
    });
  }

  const out = Tensor.empty(input.shape);
  const chunks = Math.ceil(hw / 4);
  const count = N * C * chunks;
  const running = partials > 0 && bn.runningMean && bn.runningVar;
  // Absent tensors are replaced by aliases of the input, which the kernel never reads (not of
  // stats, which the main_partials* entry points write).
  const buffers = [
    input.binding,
    stats.binding,
    (weight ?? input).binding,
    (bias ?? input).binding,
    (residual ?? input).binding,
    out.binding,
  ];
  if (running) buffers.push(bn.runningMean!.binding, bn.runningVar!.binding);
  dispatch(partials === 0 ? FORWARD : running ? FORWARD_PARTIALS_RUNNING : FORWARD_PARTIALS, {
    buffers,
    params: {
      channels: C,
      hw,
      chunks,
      count,
      partials,
      n: bn.n,
      momentum: bn.momentum,
      eps: bn.eps,
    },
    workgroups: grid1d(count, 256),
    constants: {
      HAS_WEIGHT: weight ? 1 : 0,
      HAS_BIAS: bias ? 1 : 0,
      HAS_RESIDUAL: residual ? 1 : 0,
      RELU: bn.relu ? 1 : 0,
      VEC4: vec4 ? 1 : 0,
    },
  });

  return { stats, out };
}

/**
 * Encodes the software family's training-mode batch norm of `input` in one pass,
 * batch_norm_stats_forward, with the running statistics and counter as one binding (`running`;
 * null without running statistics). Returns the output and `stats`: [3, C] = (mean, invstd,
 * invstd * weight), what batch_norm_backward reads.
 */
function encodeTrainingForward(
  input: Tensor,
  bn: CheckedBatchNorm,
  running: RunningRange | null,
): { stats: Tensor; out: Tensor } {
  const [N, C, H, W] = input.shape;
  const { weight, bias, residual } = bn;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  if (running) markRunningModified(bn);
  const stats = Tensor.empty([3, C]);
  const out = Tensor.empty(input.shape);
  const kernel = !running
    ? STATS_FORWARD
    : running.counterAt >= 0
    ? STATS_FORWARD_RUNNING_COUNTER
    : STATS_FORWARD_RUNNING;
  const lanes = reductionLanes(N, vec4 ? hw / 4 : hw, REDUCE_WG);
  dispatch(kernel, {
    // Absent tensors are replaced by aliases of the input, which the kernel never reads.
    buffers: [
      input.binding,
      stats.binding,
      (weight ?? input).binding,
      (bias ?? input).binding,
      (residual ?? input).binding,
      out.binding,
      running?.binding ?? null,
    ],
    params: {
      batch: N,
      channels: C,
      hw,
      lanes,
      rows: REDUCE_WG / lanes,
      count: N * hw,
      momentum: bn.momentum,
      eps: bn.eps,
      mean_at: running?.meanAt ?? 0,
      var_at: running?.varAt ?? 0,
      counter_at: Math.max(0, running?.counterAt ?? 0),
    },
    workgroups: grid1d(C, 1),
    constants: {
      HAS_WEIGHT: weight ? 1 : 0,
      HAS_BIAS: bias ? 1 : 0,
      HAS_RESIDUAL: residual ? 1 : 0,
      RELU: bn.relu ? 1 : 0,
      VEC4: vec4 ? 1 : 0,
    },
  });
  return { stats, out };
}

/**
 * The running statistics and counter of a training batch norm as one storage binding, and where
 * each lies in it (in f32 elements; `counterAt` -1 without a counter).
 */
interface RunningRange {
  binding: GPUBufferBinding;
  meanAt: number;
  varAt: number;
  counterAt: number;
}

/**
 * The range of one buffer that holds `bn`'s running statistics and counter (null: there are
 * none), or undefined when they lie in different buffers (separate tensors): binding them one by
 * one would take batch_norm_stats_forward past WebGPU's default 8 storage buffers per stage with
 * a residual, so batchNorm2d then takes two passes. nn.BatchNorm2d keeps them in one buffer (see
 * {@link runningStatistics}).
 */
function runningRange(bn: CheckedBatchNorm): RunningRange | null | undefined {
  const { runningMean, runningVar, counter } = bn;
  if (!runningMean || !runningVar) return null;
  const tensors = counter ? [runningMean, runningVar, counter] : [runningMean, runningVar];
  const buffer = runningMean.buffer;
  if (tensors.some((t) => t.buffer !== buffer)) return undefined;
  // Every tensor's values start at a valid binding offset, the first one's too.
  const start = Math.min(...tensors.map((t) => t.byteOffset));
  const end = Math.max(...tensors.map((t) => t.byteOffset + t.size * 4));
  if (end - start > getDevice().limits.maxStorageBufferBindingSize) return undefined;
  const at = (t: Tensor) => (t.byteOffset - start) / 4;
  return {
    binding: { buffer, offset: start, size: end - start },
    meanAt: at(runningMean),
    varAt: at(runningVar),
    counterAt: counter ? at(counter) : -1,
  };
}

/**
 * Running statistics of `channels` channels for a batch norm, as slices of one buffer, so that
 * the software family's training-mode {@link batchNorm2d} updates them in the pass that
 * normalizes: `runningMean` [C] (zeros), `runningVar` [C] (ones) and `numBatchesTracked` []
 * (zero), each at an offset aligned for a storage binding, so that every op can bind each of
 * them. Internal: not exported by mod.ts.
 */
export function runningStatistics(
  channels: number,
): { runningMean: Tensor; runningVar: Tensor; numBatchesTracked: Tensor } {
  const align = Math.max(256, getDevice().limits.minStorageBufferOffsetAlignment);
  const room = Math.ceil((channels * 4) / align) * align;
  const arena = new Arena(2 * room + align);
  const runningMean = Tensor.zeros([channels]);
  const runningVar = Tensor.ones([channels]);
  const numBatchesTracked = Tensor.zeros([]);
  moveIntoArena(runningMean, arena, 0);
  moveIntoArena(runningVar, arena, room);
  moveIntoArena(numBatchesTracked, arena, 2 * room);
  // The tensors hold the arena now; the creator's reference goes.
  arena.release();
  return { runningMean, runningVar, numBatchesTracked };
}

// The forward saves: the input, the weight and the residual (op inputs), its output y (read for
// the ReLU's mask), and `stats` as an internal: [2, C] = (mean, invstd) (batch statistics in
// training, a snapshot of the running ones in eval), followed in the gpu family's training by
// the forward's per-chunk sums; `fused` (the software family's batch_norm_stats_forward): [3, C]
// = (mean, invstd, invstd * weight).
function batchNorm2dBackward(
  gy: Tensor,
  x: Tensor,
  y: Tensor,
  stats: Tensor,
  bn: CheckedBatchNorm,
  fused: boolean,
): (Tensor | null)[] {
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const { weight, bias, residual } = bn;
  const wantWeight = !!weight?.requiresGrad;
  const wantBias = !!bias?.requiresGrad;
  const wantResidual = !!residual?.requiresGrad;
  // The per-channel sums are the bias and weight gradients: written where backward wants them.
  const sumDy = wantBias ? gradDestination(bias!) : Tensor.empty([C]);
  const sumDyXhat = wantWeight ? gradDestination(weight!) : Tensor.empty([C]);
  // Without a ReLU the mask is never read: dy fills its binding.
  const mask = bn.relu ? y : gy;
  if (fused && (x.requiresGrad || wantResidual)) {
    return encodeBackward({ gy, mask, x, stats, weight, sumDy, sumDyXhat }, bn, {
      wantWeight,
      wantBias,
      wantResidual,
    });
  }
  const reduceBuffers = { gy, mask, x, stats, weight, sumDy, sumDyXhat };
  // The gpu family's input pass adds the reduction's per-chunk sums (`partials` per channel) and
  // writes the weight and bias gradients, so it runs even when neither dx nor dres is wanted.
  const gpu = kernelFamily() === "gpu";
  const { coef, partials } = gpu
    ? encodeBackwardReduceChunked(reduceBuffers, bn)
    : encodeBackwardReduce(reduceBuffers, bn);
  let gx: Tensor | null = null;
  let gr: Tensor | null = null;
  if (x.requiresGrad || wantResidual || gpu) {
    gx = Tensor.empty(x.shape);
    if (wantResidual) gr = Tensor.empty(x.shape);
    const buffers: (GPUBufferBinding | null)[] = [
      gy.binding,
      mask.binding,
      x.binding,
      coef.binding,
      gx.binding,
    ];
    if (gpu) {
      // Without a residual, main_partials leaves out binding 6 (dres).
      buffers.push(gr?.binding ?? null, sumDy.binding, sumDyXhat.binding);
    } else if (gr) {
      buffers.push(gr.binding);
    }
    const kernel = gpu
      ? (wantResidual ? BACKWARD_INPUT_PARTIALS_RESIDUAL : BACKWARD_INPUT_PARTIALS)
      : (wantResidual ? BACKWARD_INPUT_RESIDUAL : BACKWARD_INPUT);
    const chunks = Math.ceil(hw / 4);
    const count = N * C * chunks;
    dispatch(kernel, {
      buffers,
      params: { channels: C, hw, chunks, count, partials, n: bn.n },
      workgroups: grid1d(count, 256),
      constants: gpu
        ? { RELU: bn.relu ? 1 : 0, TRAINING: bn.training ? 1 : 0, VEC4: vec4 ? 1 : 0 }
        : { RELU: bn.relu ? 1 : 0, VEC4: vec4 ? 1 : 0 },
    });
    if (!x.requiresGrad) {
      gx.dispose();
      gx = null;
    } else if (bn.training) {
      // dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)) sums to 0 over each channel.
      markZeroChannelSums(gx);
    }
  }
  coef.dispose();
  const grads: (Tensor | null)[] = [gx];
  if (weight) grads.push(wantWeight ? sumDyXhat : null);
  if (bias) grads.push(wantBias ? sumDy : null);
  if (residual) grads.push(gr);
  if (!wantWeight) sumDyXhat.dispose();
  if (!wantBias) sumDy.dispose();
  return grads;
}

/**
 * Encodes batch_norm_backward (the software family's training after batch_norm_stats_forward):
 * one workgroup per channel writes the weight and bias gradients, dx and the residual's gradient.
 * Returns the gradients of batchNorm2d's inputs.
 */
function encodeBackward(
  t: ReduceBuffers,
  bn: CheckedBatchNorm,
  want: { wantWeight: boolean; wantBias: boolean; wantResidual: boolean },
): (Tensor | null)[] {
  const { gy, mask, x, stats, weight, sumDy, sumDyXhat } = t;
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const lanes = reductionLanes(N, vec4 ? hw / 4 : hw, REDUCE_WG);
  const gx = Tensor.empty(x.shape);
  const gr = want.wantResidual ? Tensor.empty(x.shape) : null;
  const buffers = [
    gy.binding,
    mask.binding,
    x.binding,
    stats.binding,
    sumDy.binding,
    sumDyXhat.binding,
    gx.binding,
  ];
  if (gr) buffers.push(gr.binding);
  dispatch(gr ? BACKWARD_RESIDUAL : BACKWARD, {
    buffers,
    params: { batch: N, channels: C, hw, lanes, rows: REDUCE_WG / lanes, n: bn.n },
    workgroups: grid1d(C, 1),
    constants: { RELU: bn.relu ? 1 : 0, VEC4: vec4 ? 1 : 0 },
  });
  let dx: Tensor | null = gx;
  if (!x.requiresGrad) {
    gx.dispose();
    dx = null;
  } else {
    // dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)) sums to 0 over each channel.
    markZeroChannelSums(gx);
  }
  const grads: (Tensor | null)[] = [dx];
  if (weight) grads.push(want.wantWeight ? sumDyXhat : null);
  if (bn.bias) grads.push(want.wantBias ? sumDy : null);
  if (bn.residual) grads.push(gr);
  if (!want.wantWeight) sumDyXhat.dispose();
  if (!want.wantBias) sumDy.dispose();
  return grads;
}

/** The tensors of the backward's per-channel reduction. */
interface ReduceBuffers {
  gy: Tensor;
  /** The forward's output (read for the ReLU's mask), or gy without a ReLU. */
  mask: Tensor;
  x: Tensor;
  stats: Tensor;
  weight: Tensor | null;
  sumDy: Tensor;
  sumDyXhat: Tensor;
}

/**
 * What batch_norm_backward_input reads per channel: `coef`, and the per-chunk sums per channel
 * in it (0: `coef` is [4, C] = (mean, scale, a, k), read by the main* entry points).
 */
interface ReduceResult {
  coef: Tensor;
  partials: number;
}

/**
 * Encodes batch_norm_backward_reduce (the software family): one workgroup per channel writes the
 * weight and bias gradients and the input pass's coefficients.
 */
function encodeBackwardReduce(t: ReduceBuffers, bn: CheckedBatchNorm): ReduceResult {
  const { gy, mask, x, stats, weight, sumDy, sumDyXhat } = t;
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const lanes = reductionLanes(N, vec4 ? hw / 4 : hw, REDUCE_WG);
  const coef = Tensor.empty([4, C]);
  dispatch(BACKWARD_REDUCE, {
    buffers: [
      gy.binding,
      mask.binding,
      x.binding,
      stats.binding,
      (weight ?? stats).binding,
      sumDy.binding,
      sumDyXhat.binding,
      coef.binding,
    ],
    params: { batch: N, channels: C, hw, lanes, rows: REDUCE_WG / lanes, n: bn.n },
    workgroups: grid1d(C, 1),
    constants: {
      RELU: bn.relu ? 1 : 0,
      HAS_WEIGHT: weight ? 1 : 0,
      TRAINING: bn.training ? 1 : 0,
      VEC4: vec4 ? 1 : 0,
    },
  });
  return { coef, partials: 0 };
}

/**
 * Encodes the gpu family's backward reduction, batch_norm_backward_reduce_chunks over channels x
 * chunks: the per-chunk sums and a [3, C] head (mean, scale, invstd) in front of them, which
 * batch_norm_backward_input's main_partials* entry points add and read (they write the weight and
 * bias gradients).
 */
function encodeBackwardReduceChunked(t: ReduceBuffers, bn: CheckedBatchNorm): ReduceResult {
  const { gy, mask, x, stats, weight } = t;
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const units = vec4 ? hw / 4 : hw;
  const { perChunk, chunks } = channelChunks(N * units, C);
  const coef = Tensor.empty([C * (3 + 2 * chunks)]);
  dispatch(REDUCE_CHUNKS, {
    buffers: [
      gy.binding,
      mask.binding,
      x.binding,
      stats.binding,
      (weight ?? stats).binding,
      coef.binding,
    ],
    params: { batch: N, channels: C, units, per_chunk: perChunk, chunks },
    workgroups: [chunks, C, 1],
    constants: { RELU: bn.relu ? 1 : 0, HAS_WEIGHT: weight ? 1 : 0, VEC4: vec4 ? 1 : 0 },
  });
  return { coef, partials: chunks };
}

/**
 * How the gpu family's chunk passes split each channel's `total` units over `channels`
 * channels: about {@link TARGET_WORKGROUPS} workgroups in all, at least
 * {@link MIN_UNITS_PER_INVOCATION} units per invocation, at least one chunk.
 */
function channelChunks(total: number, channels: number) {
  const most = Math.ceil(total / (CHUNK_WG * MIN_UNITS_PER_INVOCATION));
  const wanted = Math.max(1, Math.min(most, Math.ceil(TARGET_WORKGROUPS / Math.max(1, channels))));
  const perChunk = Math.max(1, Math.ceil(total / wanted));
  return { perChunk, chunks: Math.max(1, Math.ceil(total / perChunk)) };
}

/** {@link BatchNorm2dOptions} checked, with defaults filled in. Internal. */
export interface CheckedBatchNorm {
  weight: Tensor | null;
  bias: Tensor | null;
  runningMean: Tensor | null;
  runningVar: Tensor | null;
  counter: Tensor | null;
  training: boolean;
  momentum: number;
  eps: number;
  residual: Tensor | null;
  relu: boolean;
  /** Values per channel, N * H * W. */
  n: number;
}

/**
 * The validator of {@link BatchNorm2dOptions}, for `batchNorm2d` and the ops that end in a batch
 * norm: `options` (named `where` in the messages of `op`) for a normalized tensor of `shape`
 * `[N, C, H, W]`, whose channel dimension is called `dim` (`"C"`, or `"O"` after a convolution).
 * Internal.
 */
export function checkBatchNorm(
  op: string,
  options: BatchNorm2dOptions,
  where: string,
  shape: readonly number[],
  dim = "C",
): CheckedBatchNorm {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `${op}: ${where} must be an object such as { training: true }, got ${describe(options)}`,
    );
  }
  if (typeof options.training !== "boolean") {
    throw new TypeError(
      `${op}: ${where}.training must be true or false, got ${describe(options.training)}`,
    );
  }
  const [N, C, H, W] = shape;
  const perChannel = (name: "weight" | "bias" | "runningMean" | "runningVar") => {
    const t = optionalTensor(op, `${where}.${name}`, options[name]);
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) {
      throw new RangeError(
        `${op}: ${where}.${name} must be [${dim}] = [${C}], got ${formatShape(t.shape)}`,
      );
    }
    return t;
  };
  const weight = perChannel("weight");
  const bias = perChannel("bias");
  const runningMean = perChannel("runningMean");
  const runningVar = perChannel("runningVar");
  if (!runningMean !== !runningVar) {
    throw new RangeError(
      `${op}: ${where} needs both runningMean and runningVar or neither, got only ` +
        (runningMean ? "runningMean" : "runningVar"),
    );
  }
  const counter = optionalTensor(op, `${where}.numBatchesTracked`, options.numBatchesTracked);
  if (counter && counter.size !== 1) {
    throw new RangeError(
      `${op}: ${where}.numBatchesTracked must hold one element (shape []), got ` +
        formatShape(counter.shape),
    );
  }
  if (counter && !runningMean) {
    throw new RangeError(
      `${op}: ${where}.numBatchesTracked needs runningMean and runningVar (as PyTorch tracks ` +
        "no batches without running statistics)",
    );
  }
  // The kernels write all three in place: their values must not overlap (views of one tensor);
  // slices of one buffer side by side are fine (nn.BatchNorm2d's, see runningStatistics).
  const written = [runningMean, runningVar, counter].filter((t) => t !== null);
  const overlap = written.some((a, i) =>
    written.some((b, j) =>
      j > i && a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.size * 4 &&
      b.byteOffset < a.byteOffset + a.size * 4
    )
  );
  if (overlap) {
    throw new RangeError(
      `${op}: ${where}.runningMean, runningVar and numBatchesTracked must be distinct tensors, ` +
        "not views of one buffer",
    );
  }
  const momentum = checkFinite(op, `${where}.momentum`, options.momentum ?? 0.1);
  const eps = checkFinite(op, `${where}.eps`, options.eps ?? 1e-5);
  if (!(eps >= 0)) throw new RangeError(`${op}: ${where}.eps must be >= 0, got ${eps}`);
  const n = N * H * W;
  if (options.training) {
    if (n <= 1) {
      throw new RangeError(
        `${op}: expected more than 1 value per channel when training, got ` +
          `${formatShape(shape)} (N * H * W = ${n})`,
      );
    }
  } else if (!runningMean) {
    throw new RangeError(
      `${op}: eval mode (${where}.training: false) normalizes with runningMean and runningVar, ` +
        "which were not given",
    );
  }
  const residual = optionalTensor(op, `${where}.residual`, options.residual);
  if (residual && residual.shape.join() !== shape.join()) {
    throw new RangeError(
      `${op}: ${where}.residual must have the output's shape ${formatShape(shape)}, got ` +
        formatShape(residual.shape),
    );
  }
  const relu = options.relu ?? false;
  if (typeof relu !== "boolean") {
    throw new TypeError(`${op}: ${where}.relu must be true or false, got ${describe(relu)}`);
  }
  return {
    weight,
    bias,
    runningMean,
    runningVar,
    counter,
    training: options.training,
    momentum,
    eps,
    residual,
    relu,
    n,
  };
}

/**
 * Encodes the batch statistics of `input` [N, C, H, W] and the in-place update of the running
 * statistics and counter that are given. The software family's batch_norm_stats writes all of
 * them: `stats` is [2, C] = (mean, invstd), `partials` 0. The gpu family's
 * batch_norm_stats_chunks writes `partials` sums per channel after a [2, C] head, and the
 * counter: batch_norm_forward's main_partials* entry points add the sums, fill the head and
 * update the running statistics.
 */
function encodeBatchStatistics(
  input: Tensor,
  bn: CheckedBatchNorm,
): { stats: Tensor; partials: number } {
  markRunningModified(bn);
  if (kernelFamily() === "gpu") return encodeBatchStatisticsChunked(input, bn);
  const [N, C, H, W] = input.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const stats = Tensor.empty([2, C]);
  const kernel = !bn.runningMean ? STATS : bn.counter ? STATS_RUNNING_COUNTER : STATS_RUNNING;
  const buffers = [input.binding, stats.binding];
  if (bn.runningMean && bn.runningVar) {
    buffers.push(bn.runningMean.binding, bn.runningVar.binding);
  }
  if (bn.runningMean && bn.counter) buffers.push(bn.counter.binding);
  const lanes = reductionLanes(N, vec4 ? hw / 4 : hw, REDUCE_WG);
  dispatch(kernel, {
    buffers,
    params: {
      batch: N,
      channels: C,
      hw,
      lanes,
      rows: REDUCE_WG / lanes,
      count: N * hw,
      momentum: bn.momentum,
      eps: bn.eps,
    },
    workgroups: grid1d(C, 1),
    constants: { VEC4: vec4 ? 1 : 0 },
  });
  return { stats, partials: 0 };
}

/** Marks the running statistics and counter, which training updates in place, as modified. */
function markRunningModified(bn: CheckedBatchNorm): void {
  if (bn.runningMean && bn.runningVar) {
    markModified(bn.runningMean);
    markModified(bn.runningVar);
    if (bn.counter) markModified(bn.counter);
  }
}

/**
 * The gpu family's {@link encodeBatchStatistics}: batch_norm_stats_chunks over channels x chunks
 * (with the counter), into a buffer of [2, C] (the head batch_norm_forward writes) then the sums.
 */
function encodeBatchStatisticsChunked(
  input: Tensor,
  bn: CheckedBatchNorm,
): { stats: Tensor; partials: number } {
  const [N, C, H, W] = input.shape;
  const hw = H * W;
  const vec4 = hw % 4 === 0;
  const units = vec4 ? hw / 4 : hw;
  const { perChunk, chunks } = channelChunks(N * units, C);
  const stats = Tensor.empty([2 * C * (1 + chunks)]);
  const counter = bn.runningMean && bn.counter;
  dispatch(counter ? STATS_CHUNKS_COUNTER : STATS_CHUNKS, {
    buffers: counter
      ? [input.binding, stats.binding, counter.binding]
      : [input.binding, stats.binding],
    params: { batch: N, channels: C, hw, units, per_chunk: perChunk, chunks },
    workgroups: [chunks, C, 1],
    constants: { VEC4: vec4 ? 1 : 0 },
  });
  return { stats, partials: chunks };
}

/**
 * Invocations per image plane of a per-channel reduction over `batch` planes of `perImage` values
 * (or vec4s) in workgroups of `workgroup`: the fewest (a power of two) that, with one image per
 * `workgroup / lanes` rows, still keep every invocation busy. Each invocation then walks long runs
 * of its planes, which on llvmpipe is 1.7-3.3x faster than one lane per value of a plane
 * (BENCHMARKS.md).
 */
function reductionLanes(batch: number, perImage: number, workgroup: number): number {
  let lanes = 1;
  while (lanes * batch < workgroup && lanes < perImage) lanes *= 2;
  return lanes;
}
