/**
 * Batch normalization over the channels of `[N, C, H, W]` tensors, as PyTorch's `BatchNorm2d`.
 *
 * @module
 */
import evalStatsSource from "../../kernels/batch_norm_eval_stats.wgsl" with { type: "text" };
import forwardSource from "../../kernels/batch_norm_forward.wgsl" with { type: "text" };
import reduceSource from "../../kernels/batch_norm_backward_reduce.wgsl" with { type: "text" };
import inputGradSource from "../../kernels/batch_norm_backward_input.wgsl" with { type: "text" };
import { dispatch, grid1d } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { encodeBatchStatistics, reductionLanes } from "./_batch_norm_stats.ts";

const EVAL_STATS = {
  name: "batch_norm_eval_stats",
  source: evalStatsSource,
  params: ["channels", "eps"] as const,
};
const FORWARD = {
  name: "batch_norm_forward",
  source: forwardSource,
  params: ["channels", "hw", "chunks", "count"] as const,
};
const BACKWARD_REDUCE = {
  name: "batch_norm_backward_reduce",
  source: reduceSource,
  params: ["batch", "channels", "hw", "lanes", "rows"] as const,
};
const BACKWARD_INPUT = {
  name: "batch_norm_backward_input",
  source: inputGradSource,
  params: ["channels", "hw", "chunks", "count", "n"] as const,
};

/** Workgroup size of the per-channel reduction kernels. */
const REDUCE_WG = 256;

/**
 * Options of {@link batchNorm2d}: the parameters and buffers of PyTorch's `BatchNorm2d`.
 *
 * @example
 * ```ts
 * import { batchNorm2d, type BatchNorm2dOptions, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const options: BatchNorm2dOptions = {
 *   runningMean: Tensor.zeros([16]),
 *   runningVar: Tensor.ones([16]),
 *   training: false,
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
}

/**
 * Batch normalization of `input` `[N, C, H, W]` per channel, like PyTorch's
 * `F.batch_norm`/`nn.BatchNorm2d`: `y = (x - mean) / sqrt(var + eps) * weight + bias`. In training
 * mode the mean and the biased variance are the batch's, over `N`, `H`, `W`, and the running
 * statistics and `numBatchesTracked` (when given) are updated in place; in eval mode the running
 * statistics are used and must be given.
 *
 * @returns a tensor `[N, C, H, W]`.
 * @throws {RangeError} when `input` is not `[N, C, H, W]`, a per-channel tensor is not `[C]`, eval
 * mode lacks running statistics, only one running tensor is given, or training has one value per
 * channel (`N * H * W = 1`).
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
 * });
 * console.log(y.shape, await runningMean.toArray()); // [4, 3, 8, 8], 0.1 * the batch means
 * ```
 */
export function batchNorm2d(input: Tensor, options: BatchNorm2dOptions): Tensor {
  const v = validate(input, options);
  const { weight, bias, runningMean, runningVar, training, n } = v;
  const [N, C, H, W] = input.shape;
  const hw = H * W;
  const recording = shouldRecord(input, weight, bias);

  // (mean, invstd) per channel: the batch's in training, a snapshot of the running ones in eval.
  const stats = Tensor.empty([2, C]);
  if (training) {
    encodeBatchStatistics(input, stats, v);
  } else {
    dispatch(EVAL_STATS, {
      buffers: [runningMean!.buffer, runningVar!.buffer, stats.buffer],
      params: { channels: C, eps: v.eps },
      workgroups: grid1d(C, 64),
    });
  }

  const out = Tensor.empty(input.shape);
  const chunks = Math.ceil(hw / 4);
  const count = N * C * chunks;
  dispatch(FORWARD, {
    // Absent affine parameters are replaced by a read-only alias the kernel never reads.
    buffers: [
      input.buffer,
      stats.buffer,
      (weight ?? stats).buffer,
      (bias ?? stats).buffer,
      out.buffer,
    ],
    params: { channels: C, hw, chunks, count },
    workgroups: grid1d(count, 256),
    constants: { HAS_WEIGHT: weight ? 1 : 0, HAS_BIAS: bias ? 1 : 0 },
  });

  if (!recording) {
    stats.dispose();
    return out;
  }
  const inputs = [input];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return record(out, {
    name: "batchNorm2d",
    inputs,
    internals: [stats],
    backward: (gy) => batchNorm2dBackward(gy, input, weight, bias, stats, training, n),
  });
}

// The forward saves: the input, the weight (both op inputs), and `stats` [2, C] = (mean, invstd)
// as an internal (batch statistics in training, a snapshot of the running ones in eval).
function batchNorm2dBackward(
  gy: Tensor,
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  stats: Tensor,
  training: boolean,
  n: number,
): (Tensor | null)[] {
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const wantWeight = !!weight?.requiresGrad;
  const wantBias = !!bias?.requiresGrad;
  const needSums = (training && x.requiresGrad) || wantWeight || wantBias;

  let sumDy: Tensor | null = null;
  let sumDyXhat: Tensor | null = null;
  if (needSums) {
    sumDy = Tensor.empty([C]);
    sumDyXhat = Tensor.empty([C]);
    const lanes = reductionLanes(N, hw, REDUCE_WG);
    dispatch(BACKWARD_REDUCE, {
      buffers: [gy.buffer, x.buffer, stats.buffer, sumDy.buffer, sumDyXhat.buffer],
      params: { batch: N, channels: C, hw, lanes, rows: REDUCE_WG / lanes },
      workgroups: grid1d(C, 1),
    });
  }

  let gx: Tensor | null = null;
  if (x.requiresGrad) {
    gx = Tensor.empty(x.shape);
    const chunks = Math.ceil(hw / 4);
    const count = N * C * chunks;
    dispatch(BACKWARD_INPUT, {
      buffers: [
        gy.buffer,
        x.buffer,
        stats.buffer,
        (weight ?? stats).buffer,
        (sumDy ?? stats).buffer,
        (sumDyXhat ?? stats).buffer,
        gx.buffer,
      ],
      params: { channels: C, hw, chunks, count, n },
      workgroups: grid1d(count, 256),
      constants: { TRAINING: training ? 1 : 0, HAS_WEIGHT: weight ? 1 : 0 },
    });
  }

  const grads: (Tensor | null)[] = [gx];
  if (weight) grads.push(wantWeight ? sumDyXhat : null);
  if (bias) grads.push(wantBias ? sumDy : null);
  if (sumDyXhat && !wantWeight) sumDyXhat.dispose();
  if (sumDy && !wantBias) sumDy.dispose();
  return grads;
}

interface Validated {
  weight: Tensor | null;
  bias: Tensor | null;
  runningMean: Tensor | null;
  runningVar: Tensor | null;
  counter: Tensor | null;
  training: boolean;
  momentum: number;
  eps: number;
  /** Values per channel, N * H * W. */
  n: number;
}

function validate(input: Tensor, options: BatchNorm2dOptions): Validated {
  const op = "batchNorm2d()";
  if (!(input instanceof Tensor)) {
    throw new TypeError(`${op}: input must be a Tensor, got ${describe(input)}`);
  }
  if (input.ndim !== 4) {
    throw new RangeError(`${op}: input must be [N, C, H, W], got ${formatShape(input.shape)}`);
  }
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `${op}: options must be an object such as { training: true }, got ${describe(options)}`,
    );
  }
  if (typeof options.training !== "boolean") {
    throw new TypeError(
      `${op}: options.training must be true or false, got ${describe(options.training)}`,
    );
  }
  const [N, C, H, W] = input.shape;
  const channelTensor = (name: keyof BatchNorm2dOptions): Tensor | null => {
    const t = options[name];
    if (t === undefined || t === null) return null;
    if (!(t instanceof Tensor)) {
      throw new TypeError(`${op}: options.${name} must be a Tensor or null, got ${describe(t)}`);
    }
    if (t.ndim !== 1 || t.shape[0] !== C) {
      throw new RangeError(
        `${op}: options.${name} must be [C] = [${C}] (input is ${formatShape(input.shape)}), ` +
          `got ${formatShape(t.shape)}`,
      );
    }
    return t;
  };
  const weight = channelTensor("weight");
  const bias = channelTensor("bias");
  const runningMean = channelTensor("runningMean");
  const runningVar = channelTensor("runningVar");
  if (!runningMean !== !runningVar) {
    throw new RangeError(
      `${op}: give both runningMean and runningVar or neither, got only ` +
        (runningMean ? "runningMean" : "runningVar"),
    );
  }
  let counter: Tensor | null = null;
  const tracked = options.numBatchesTracked;
  if (tracked !== undefined && tracked !== null) {
    if (!(tracked instanceof Tensor)) {
      throw new TypeError(
        `${op}: options.numBatchesTracked must be a Tensor or null, got ${describe(tracked)}`,
      );
    }
    if (tracked.size !== 1) {
      throw new RangeError(
        `${op}: options.numBatchesTracked must hold one element (shape []), got ` +
          formatShape(tracked.shape),
      );
    }
    if (!runningMean) {
      throw new RangeError(
        `${op}: options.numBatchesTracked needs runningMean and runningVar (as PyTorch tracks ` +
          "no batches without running statistics)",
      );
    }
    counter = tracked;
  }
  // The kernel writes all three in place: they must not share a buffer (views included).
  const written = [runningMean, runningVar, counter].filter((t) => t !== null);
  if (new Set(written.map((t) => t.buffer)).size !== written.length) {
    throw new RangeError(
      `${op}: runningMean, runningVar and numBatchesTracked must be distinct tensors, not views ` +
        "of one buffer",
    );
  }
  const momentum = options.momentum ?? 0.1;
  const eps = options.eps ?? 1e-5;
  if (typeof momentum !== "number" || typeof eps !== "number") {
    throw new TypeError(
      `${op}: momentum and eps must be numbers, got ${describe(momentum)} and ${describe(eps)}`,
    );
  }
  if (!Number.isFinite(momentum)) {
    throw new RangeError(`${op}: momentum must be a finite number, got ${momentum}`);
  }
  if (!(eps >= 0) || !Number.isFinite(eps)) {
    throw new RangeError(`${op}: eps must be a finite number >= 0, got ${eps}`);
  }
  const n = N * H * W;
  if (options.training) {
    if (n <= 1) {
      throw new RangeError(
        `${op}: expected more than 1 value per channel when training, got input ` +
          `${formatShape(input.shape)} (N * H * W = ${n})`,
      );
    }
  } else if (!runningMean) {
    throw new RangeError(
      `${op}: eval mode (training: false) normalizes with runningMean and runningVar, which ` +
        "were not given",
    );
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
    n,
  };
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Tensor) return `a Tensor ${formatShape(value.shape)}`;
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
