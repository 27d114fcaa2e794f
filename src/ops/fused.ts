/**
 * Fused ops of a ResNet block: a batch norm with the residual addition and ReLU after it
 * (`batchNormAct`, training and eval, with gradients), and a convolution followed by all of
 * those (`conv2dBatchNorm`), one pass over memory when the batch norm uses its running
 * statistics (inference).
 *
 * @module
 */
import paramsSource from "../../kernels/batch_norm_act_params.wgsl" with { type: "text" };
import actForwardSource from "../../kernels/batch_norm_act_forward.wgsl" with { type: "text" };
import actReduceSource from "../../kernels/batch_norm_act_backward_reduce.wgsl" with {
  type: "text",
};
import actInputSource from "../../kernels/batch_norm_act_backward_input.wgsl" with {
  type: "text",
};
import evalStatsSource from "../../kernels/batch_norm_eval_stats.wgsl" with { type: "text" };
import { dispatch, grid1d } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { batchNorm2d, type BatchNorm2dOptions } from "./batch_norm.ts";
import { encodeBatchStatistics, reductionLanes } from "./_batch_norm_stats.ts";
import { conv2d, type Conv2dOptions } from "./conv2d.ts";
import { add, relu } from "./elementwise.ts";
import { forwardRows, geometry, packWeight, rowsFit } from "./_conv2d_rows.ts";

const PARAMS = {
  name: "batch_norm_act_params",
  source: paramsSource,
  params: ["channels", "has_conv_bias", "has_weight", "has_bias", "eps"] as const,
};
const ACT_FORWARD = {
  name: "batch_norm_act_forward",
  source: actForwardSource,
  params: ["channels", "hw4", "count4", "has_weight", "has_bias", "has_residual", "relu"] as const,
};
const ACT_REDUCE = {
  name: "batch_norm_act_backward_reduce",
  source: actReduceSource,
  params: ["batch", "channels", "hw4", "lanes", "rows", "has_weight", "training", "n"] as const,
};
const ACT_INPUT = {
  name: "batch_norm_act_backward_input",
  source: actInputSource,
  params: ["channels", "hw4", "count4", "relu"] as const,
};
const ACT_INPUT_RESIDUAL = { ...ACT_INPUT, entryPoint: "main_residual" };
// batchNorm2d's eval-mode statistics kernel, shared.
const EVAL_STATS = {
  name: "batch_norm_eval_stats",
  source: evalStatsSource,
  params: ["channels", "eps"] as const,
};

/** Workgroup size of batch_norm_act_backward_reduce. */
const ACT_REDUCE_WG = 64;

/** Options of {@link batchNormAct}: `batchNorm2d`'s, and what follows the normalization. */
export interface BatchNormActOptions extends BatchNorm2dOptions {
  /** Added after the batch norm: a residual connection `[N, C, H, W]`; default none. */
  residual?: Tensor | null;
  /** Whether a ReLU comes last; default false. */
  relu?: boolean;
}

/** The checked per-channel tensors and numbers of a batch norm. */
interface Checked {
  weight: Tensor | null;
  bias: Tensor | null;
  runningMean: Tensor | null;
  runningVar: Tensor | null;
  counter: Tensor | null;
  momentum: number;
  eps: number;
}

/**
 * Validates `batchNorm2d`'s options (named `where` in messages of `op`) for `channels` channels
 * (called `dim`) of `values` values each.
 */
function checkBatchNorm(
  op: string,
  bn: BatchNorm2dOptions,
  where: string,
  channels: number,
  values: number,
  dim = "C",
): Checked {
  if (bn === null || typeof bn !== "object") {
    throw new TypeError(
      `${op}: ${where} must be batchNorm2d's options such as { training: false, runningMean, ` +
        `runningVar }, got ${String(bn)}`,
    );
  }
  if (typeof bn.training !== "boolean") {
    throw new TypeError(`${op}: ${where}.training must be true or false, got ${bn.training}`);
  }
  const perChannel = (name: "weight" | "bias" | "runningMean" | "runningVar") => {
    const t = bn[name];
    if (t === undefined || t === null) return null;
    if (!(t instanceof Tensor)) {
      throw new TypeError(`${op}: ${where}.${name} must be a Tensor or null, got ${t}`);
    }
    if (t.ndim !== 1 || t.shape[0] !== channels) {
      throw new RangeError(
        `${op}: ${where}.${name} must be [${dim}] = [${channels}], got ${formatShape(t.shape)}`,
      );
    }
    return t;
  };
  const weight = perChannel("weight");
  const bias = perChannel("bias");
  const runningMean = perChannel("runningMean");
  const runningVar = perChannel("runningVar");
  if (!runningMean !== !runningVar) {
    throw new RangeError(`${op}: ${where} needs both runningMean and runningVar or neither`);
  }
  if (!bn.training && !runningMean) {
    throw new RangeError(
      `${op}: eval mode (${where}.training: false) normalizes with runningMean and runningVar, ` +
        "which were not given",
    );
  }
  let counter: Tensor | null = null;
  const tracked = bn.numBatchesTracked;
  if (tracked !== undefined && tracked !== null) {
    if (!(tracked instanceof Tensor)) {
      throw new TypeError(`${op}: ${where}.numBatchesTracked must be a Tensor or null`);
    }
    if (tracked.size !== 1 || !runningMean) {
      throw new RangeError(
        `${op}: ${where}.numBatchesTracked must hold one element, with running statistics`,
      );
    }
    counter = tracked;
  }
  const written = [runningMean, runningVar, counter].filter((t) => t !== null);
  if (new Set(written.map((t) => t.buffer)).size !== written.length) {
    throw new RangeError(
      `${op}: ${where}.runningMean, runningVar and numBatchesTracked must be distinct tensors`,
    );
  }
  const momentum = bn.momentum ?? 0.1;
  const eps = bn.eps ?? 1e-5;
  if (typeof momentum !== "number" || !Number.isFinite(momentum)) {
    throw new RangeError(`${op}: ${where}.momentum must be a finite number, got ${momentum}`);
  }
  if (typeof eps !== "number" || !(eps >= 0) || !Number.isFinite(eps)) {
    throw new RangeError(`${op}: ${where}.eps must be a finite number >= 0, got ${eps}`);
  }
  if (bn.training && values <= 1) {
    throw new RangeError(
      `${op}: expected more than 1 value per channel when training, got ${values}`,
    );
  }
  return { weight, bias, runningMean, runningVar, counter, momentum, eps };
}

/** Validates a residual of shape `shape` and the relu flag. */
function checkAct(
  op: string,
  residual: unknown,
  reluFlag: unknown,
  shape: readonly number[],
): { residual: Tensor | null; relu: boolean } {
  const r = residual ?? null;
  if (r !== null && !(r instanceof Tensor)) {
    throw new TypeError(`${op}: options.residual must be a Tensor or null, got ${r}`);
  }
  if (r && r.shape.join() !== shape.join()) {
    throw new RangeError(
      `${op}: options.residual must have the output's shape ${formatShape(shape)}, got ` +
        formatShape(r.shape),
    );
  }
  const act = reluFlag ?? false;
  if (typeof act !== "boolean") {
    throw new TypeError(`${op}: options.relu must be true or false, got ${String(act)}`);
  }
  return { residual: r, relu: act };
}

/**
 * `relu(batchNorm2d(input, options) + residual)`, the residual and the ReLU optional: the batch
 * norm of a ResNet block with what follows it, in one pass (plus the statistics) instead of up to
 * three, and a backward that masks the gradient inside the batch norm's own passes. Training and
 * eval mode as `batchNorm2d` (running statistics updated in place when training); differentiable
 * in the input, the weight, the bias and the residual. Planes whose size `H * W` is not a
 * multiple of 4 run the separate ops.
 *
 * @param input `[N, C, H, W]`.
 * @param options `batchNorm2d`'s options (per-channel tensors `[C]`), `residual` `[N, C, H, W]`
 * and `relu`.
 * @returns `[N, C, H, W]`.
 * @throws {TypeError} when an argument has the wrong type.
 * @throws {RangeError} when a shape disagrees, eval mode lacks running statistics, or training
 * has one value per channel.
 * @example
 * ```ts
 * import { batchNormAct, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([4, 8, 6, 6], { seed: 0 });                // [N, C, H, W]
 * const shortcut = Tensor.randn([4, 8, 6, 6], { seed: 1 });
 * const y = batchNormAct(x, {
 *   weight: Tensor.ones([8], { requiresGrad: true }),
 *   bias: Tensor.zeros([8], { requiresGrad: true }),
 *   runningMean: Tensor.zeros([8]),
 *   runningVar: Tensor.ones([8]),
 *   training: true,
 *   residual: shortcut,
 *   relu: true,
 * });
 * console.log(y.shape); // [4, 8, 6, 6]
 * ```
 */
export function batchNormAct(input: Tensor, options: BatchNormActOptions): Tensor {
  const op = "batchNormAct()";
  if (!(input instanceof Tensor)) {
    throw new TypeError(`${op}: input must be a Tensor [N, C, H, W], got ${String(input)}`);
  }
  if (input.ndim !== 4) {
    throw new RangeError(`${op}: input must be [N, C, H, W], got ${formatShape(input.shape)}`);
  }
  if (options === null || typeof options !== "object") {
    throw new TypeError(`${op}: options must be an object such as { training: true }`);
  }
  const [N, C, H, W] = input.shape;
  const hw = H * W;
  const bn = checkBatchNorm(op, options, "options", C, N * hw);
  const { residual, relu: useRelu } = checkAct(op, options.residual, options.relu, input.shape);
  if (hw % 4 !== 0) {
    // Planes that split vec4s: the separate ops.
    let y = batchNorm2d(input, options);
    if (residual) {
      const sum = add(y, residual);
      if (!sum.gradFn) y.dispose();
      y = sum;
    }
    if (!useRelu) return y;
    const out = relu(y);
    if (!out.gradFn) y.dispose();
    return out;
  }
  const n = N * hw;
  const stats = Tensor.empty([2, C]);
  if (options.training) {
    encodeBatchStatistics(input, stats, bn);
  } else {
    dispatch(EVAL_STATS, {
      buffers: [bn.runningMean!.buffer, bn.runningVar!.buffer, stats.buffer],
      params: { channels: C, eps: bn.eps },
      workgroups: grid1d(C, 64),
    });
  }
  const out = Tensor.empty(input.shape);
  const count4 = input.size / 4;
  dispatch(ACT_FORWARD, {
    // Absent tensors are replaced by read-only aliases the kernel never reads.
    buffers: [
      input.buffer,
      stats.buffer,
      (bn.weight ?? stats).buffer,
      (bn.bias ?? stats).buffer,
      (residual ?? input).buffer,
      out.buffer,
    ],
    params: {
      channels: C,
      hw4: hw / 4,
      count4,
      has_weight: bn.weight ? 1 : 0,
      has_bias: bn.bias ? 1 : 0,
      has_residual: residual ? 1 : 0,
      relu: useRelu ? 1 : 0,
    },
    workgroups: grid1d(count4, 256),
  });
  if (!shouldRecord(input, bn.weight, bn.bias, residual)) {
    stats.dispose();
    return out;
  }
  const inputs = [input];
  if (bn.weight) inputs.push(bn.weight);
  if (bn.bias) inputs.push(bn.bias);
  if (residual) inputs.push(residual);
  const training = options.training;
  return record(out, {
    name: "batchNormAct",
    inputs,
    internals: [stats],
    backward: (gy) =>
      batchNormActBackward(gy, input, out, stats, bn, residual, useRelu, training, n),
  });
}

// The forward saves: the input and the weight (op inputs), its output y when there is a ReLU
// (for the mask), and `stats` [2, C] = (mean, invstd) as an internal.
function batchNormActBackward(
  gy: Tensor,
  x: Tensor,
  y: Tensor,
  stats: Tensor,
  bn: Checked,
  residual: Tensor | null,
  useRelu: boolean,
  training: boolean,
  n: number,
): (Tensor | null)[] {
  const [N, C, H, W] = x.shape;
  const hw = H * W;
  const wantWeight = !!bn.weight?.requiresGrad;
  const wantBias = !!bn.bias?.requiresGrad;
  const wantResidual = !!residual?.requiresGrad;
  const sumDy = Tensor.empty([C]);
  const sumDyXhat = Tensor.empty([C]);
  const coef = Tensor.empty([4, C]);
  const mask = useRelu ? y : gy;
  const lanes = reductionLanes(N, hw / 4, ACT_REDUCE_WG);
  dispatch(ACT_REDUCE, {
    buffers: [
      gy.buffer,
      mask.buffer,
      x.buffer,
      stats.buffer,
      (bn.weight ?? stats).buffer,
      sumDy.buffer,
      sumDyXhat.buffer,
      coef.buffer,
    ],
    params: {
      batch: N,
      channels: C,
      hw4: hw / 4,
      lanes,
      rows: ACT_REDUCE_WG / lanes,
      has_weight: bn.weight ? 1 : 0,
      training: training ? 1 : 0,
      n,
    },
    workgroups: grid1d(C, 1),
    constants: { RELU: useRelu ? 1 : 0 },
  });
  let gx: Tensor | null = null;
  let gr: Tensor | null = null;
  if (x.requiresGrad || wantResidual) {
    gx = Tensor.empty(x.shape);
    const buffers = [gy.buffer, mask.buffer, x.buffer, coef.buffer, gx.buffer];
    if (wantResidual) {
      gr = Tensor.empty(x.shape);
      buffers.push(gr.buffer);
    }
    const count4 = x.size / 4;
    dispatch(wantResidual ? ACT_INPUT_RESIDUAL : ACT_INPUT, {
      buffers,
      params: { channels: C, hw4: hw / 4, count4, relu: useRelu ? 1 : 0 },
      workgroups: grid1d(count4, 256),
    });
    if (!x.requiresGrad) {
      gx.dispose();
      gx = null;
    }
  }
  coef.dispose();
  const grads: (Tensor | null)[] = [gx];
  if (bn.weight) grads.push(wantWeight ? sumDyXhat : null);
  if (bn.bias) grads.push(wantBias ? sumDy : null);
  if (residual) grads.push(gr);
  if (!wantWeight) sumDyXhat.dispose();
  if (!wantBias) sumDy.dispose();
  return grads;
}

/** Options of {@link conv2dBatchNorm}: the convolution's, and what follows it. */
export interface Conv2dBatchNormOptions extends Conv2dOptions {
  /** The batch norm of the convolution's output `[N, O, OH, OW]`, as for `batchNorm2d`. */
  batchNorm: BatchNorm2dOptions;
  /** Added after the batch norm: a residual connection `[N, O, OH, OW]`; default none. */
  residual?: Tensor | null;
  /** Whether a ReLU comes last; default false. */
  relu?: boolean;
}

/**
 * `relu(batchNorm2d(conv2d(input, weight, bias, options), options.batchNorm) + residual)`, the
 * residual and the ReLU optional: a ResNet's convolution, batch norm and activation as one op.
 * When the batch norm uses its running statistics (`training: false`), no gradient is recorded
 * and the convolution has the vec4-row kernels' shape (stride 1 or 2, widths multiples of 4,
 * kernel width <= 3 with padding <= 1), the batch norm, residual and ReLU are applied as the
 * convolution's outputs are written: one pass over memory instead of up to four. Otherwise it is
 * `conv2d` then {@link batchNormAct}, with their gradients. The result equals the separate ops'
 * up to float32 rounding.
 *
 * @param input Images `[N, C, H, W]`.
 * @param weight Filters `[O, C, KH, KW]`.
 * @param bias The convolution's bias `[O]`, or null/undefined for none.
 * @param options Stride and padding as for `conv2d`, the batch norm's options as for
 * `batchNorm2d` (per-channel tensors `[O]`), `residual` and `relu`.
 * @returns `[N, O, OH, OW]`.
 * @throws {TypeError} when an argument has the wrong type.
 * @throws {RangeError} when shapes disagree (as `conv2d` and `batchNorm2d` check), the residual
 * is not `[N, O, OH, OW]`, or eval mode lacks running statistics.
 * @example
 * ```ts
 * import { conv2dBatchNorm, initGPU, noGrad, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([2, 16, 8, 8], { seed: 0 });                  // [N, C, H, W]
 * const w = Tensor.rand([16, 16, 3, 3], { seed: 1, low: -0.1, high: 0.1 }); // [O, C, KH, KW]
 * const y = noGrad(() =>
 *   conv2dBatchNorm(x, w, null, {
 *     padding: 1,
 *     batchNorm: { runningMean: Tensor.zeros([16]), runningVar: Tensor.ones([16]), training: false },
 *     residual: x,
 *     relu: true,
 *   })
 * );
 * console.log(y.shape); // [2, 16, 8, 8]
 * ```
 */
export function conv2dBatchNorm(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null | undefined,
  options: Conv2dBatchNormOptions,
): Tensor {
  const op = "conv2dBatchNorm()";
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `${op}: options must be an object such as { batchNorm: { ... }, relu: true }, got ` +
        String(options),
    );
  }
  const g = geometry(op, input, weight, bias, options);
  const outShape = [g.n, g.o, g.oh, g.ow];
  const bn = checkBatchNorm(
    op,
    options.batchNorm,
    "options.batchNorm",
    g.o,
    g.n * g.oh * g.ow,
    "O",
  );
  const { residual, relu: useRelu } = checkAct(op, options.residual, options.relu, outShape);
  const conv = { stride: options.stride, padding: options.padding };
  if (
    options.batchNorm.training || shouldRecord(input, weight, bias, bn.weight, bn.bias, residual) ||
    !rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kw, g.padW)
  ) {
    // Batch statistics need the whole convolution first, gradients the tape, and convolutions
    // of other shapes their own kernels.
    const z = conv2d(input, weight, bias, conv);
    const y = batchNormAct(z, { ...options.batchNorm, residual, relu: useRelu });
    if (!y.gradFn) z.dispose();
    return y;
  }
  const { runningMean, runningVar, weight: bnWeight, bias: bnBias, eps } = bn;

  // The epilogue's per-channel values: the batch norm folded with the convolution's bias.
  const params = Tensor.empty([3, g.o]);
  dispatch(PARAMS, {
    // Absent tensors are replaced by a read-only alias the kernel never reads.
    buffers: [
      runningMean!.buffer,
      runningVar!.buffer,
      (bias ?? runningMean!).buffer,
      (bnWeight ?? runningMean!).buffer,
      (bnBias ?? runningMean!).buffer,
      params.buffer,
    ],
    params: {
      channels: g.o,
      has_conv_bias: bias ? 1 : 0,
      has_weight: bnWeight ? 1 : 0,
      has_bias: bnBias ? 1 : 0,
      eps,
    },
    workgroups: grid1d(g.o, 64),
  });
  const out = Tensor.empty(outShape);
  const packed = packWeight(weight, false);
  forwardRows(
    input,
    packed,
    out,
    { kh: g.kh, kw: g.kw, stride: g.strideH, padH: g.padH, padW: g.padW },
    { kind: "batchNorm", params, residual, relu: useRelu },
  );
  packed.dispose();
  params.dispose();
  return out;
}
