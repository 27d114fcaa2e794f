/**
 * The eval-time fusion of a convolution with the batch norm after it (PyTorch's
 * `fuse_conv_bn_eval`): the batch norm's running statistics are folded into per-channel values
 * that the convolution applies, with the residual and the ReLU, as it writes its outputs.
 *
 * @module
 */
import foldSource from "../../kernels/batch_norm_fold.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { derivedTensor, shouldRecord, Tensor } from "../tensor.ts";
import { batchNorm2d, type BatchNorm2dOptions, checkBatchNorm } from "./batch_norm.ts";
import { describe } from "./_check.ts";
import { conv2d, type Conv2dOptions } from "./conv2d.ts";
import { forwardRows, forwardTiled, geometry, packedWeight, rowsFit } from "./conv2d.ts";
import { kernelFamily } from "../gpu/device.ts";

const FOLD = kernel("batch_norm_fold", foldSource, ["channels", "eps"]);

/**
 * The batch norm of {@link conv2dBatchNormEval}: `batchNorm2d`'s options in eval mode (running
 * statistics required), with the residual and the ReLU that follow it.
 */
export type EvalBatchNormOptions =
  & Omit<
    BatchNorm2dOptions,
    "training" | "momentum" | "numBatchesTracked" | "runningMean" | "runningVar"
  >
  & { runningMean: Tensor; runningVar: Tensor };

/** Options of {@link conv2dBatchNormEval}: the convolution's, and the batch norm after it. */
export interface Conv2dBatchNormEvalOptions extends Conv2dOptions {
  /** The eval-mode batch norm of the convolution's output `[N, O, OH, OW]` (tensors `[O]`). */
  batchNorm: EvalBatchNormOptions;
}

/**
 * `batchNorm2d(conv2d(input, weight, bias, options), { ...options.batchNorm, training: false })`
 * — a convolution and the eval-mode batch norm after it (with its residual and ReLU), as PyTorch's
 * `fuse_conv_bn_eval` folds them for inference. When no gradient is recorded and the convolution
 * has the vec4-row kernels' shape (stride 1 or 2, widths multiples of 4, kernel width <= 3 with
 * padding <= 1), the batch norm, residual and ReLU are applied as the convolution's outputs are
 * written: one pass over memory instead of two. Otherwise it runs the two ops, with their
 * gradients. The result equals the separate ops' up to float32 rounding. With the `gpu` kernel
 * family (see `kernelFamily()`) every shape is fused, through the tiled convolution's epilogue. `fuseConvBn(model)` makes
 * a model's layers use it.
 *
 * @param input Images `[N, C, H, W]`.
 * @param weight Filters `[O, C, KH, KW]`.
 * @param bias The convolution's bias `[O]`, or null/undefined for none.
 * @param options Stride and padding as for `conv2d`, and the batch norm's options as for
 * `batchNorm2d` in eval mode (per-channel tensors `[O]`, `residual` `[N, O, OH, OW]`, `relu`).
 * @returns `[N, O, OH, OW]`.
 * @throws {TypeError} when an argument has the wrong type.
 * @throws {RangeError} when shapes disagree (as `conv2d` and `batchNorm2d` check) or the running
 * statistics are missing.
 * @example
 * ```ts
 * import { conv2dBatchNormEval, initGPU, noGrad, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([2, 16, 8, 8], { seed: 0 });                  // [N, C, H, W]
 * const w = Tensor.rand([16, 16, 3, 3], { seed: 1, low: -0.1, high: 0.1 }); // [O, C, KH, KW]
 * const y = noGrad(() =>
 *   conv2dBatchNormEval(x, w, null, {
 *     padding: 1,
 *     batchNorm: {
 *       runningMean: Tensor.zeros([16]),
 *       runningVar: Tensor.ones([16]),
 *       residual: x,
 *       relu: true,
 *     },
 *   })
 * );
 * console.log(y.shape); // [2, 16, 8, 8]
 * ```
 */
export function conv2dBatchNormEval(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null | undefined,
  options: Conv2dBatchNormEvalOptions,
): Tensor {
  const op = "conv2dBatchNormEval()";
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `${op}: options must be an object such as { batchNorm: { runningMean, runningVar } }, ` +
        `got ${describe(options)}`,
    );
  }
  const g = geometry(op, input, weight, bias, options);
  const outShape = [g.n, g.o, g.oh, g.ow];
  const given = options.batchNorm;
  if (given === null || typeof given !== "object") {
    throw new TypeError(
      `${op}: options.batchNorm must be an object such as { runningMean, runningVar }, got ` +
        describe(given),
    );
  }
  const batchNorm = { ...given, training: false };
  const bn = checkBatchNorm(op, batchNorm, "options.batchNorm", outShape, "O");
  const conv = { stride: options.stride, padding: options.padding };
  // The gpu family's tiled convolution takes every shape; the software family's epilogue is in
  // its vec4-row kernel only.
  const tiled = kernelFamily() === "gpu";
  if (
    shouldRecord(input, weight, bias, bn.weight, bn.bias, bn.residual) ||
    (!tiled && !rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kernelW, g.padW))
  ) {
    // Gradients need the tape, and convolutions of other shapes their own kernels.
    const z = conv2d(input, weight, bias, conv);
    const y = batchNorm2d(z, batchNorm);
    if (!y.gradFn) z.dispose();
    return y;
  }

  // The epilogue's per-channel values: the batch norm folded with the convolution's bias, cached
  // with the running mean until any of the tensors it was folded from changes.
  const { runningMean, runningVar } = bn;
  const stamp = [runningVar, bias, bn.weight, bn.bias].map(versionStamp).join("/") +
    `/${bn.eps}`;
  const params = derivedTensor(runningMean!, "conv2dBatchNormEval:fold", stamp, () => {
    const folded = Tensor.empty([3, g.o]);
    dispatch(FOLD, {
      // Absent tensors are replaced by a read-only alias the kernel never reads.
      buffers: [
        runningMean!.binding,
        runningVar!.binding,
        (bias ?? runningMean!).binding,
        (bn.weight ?? runningMean!).binding,
        (bn.bias ?? runningMean!).binding,
        folded.binding,
      ],
      params: { channels: g.o, eps: bn.eps },
      workgroups: grid1d(g.o, 64),
      constants: {
        HAS_CONV_BIAS: bias ? 1 : 0,
        HAS_WEIGHT: bn.weight ? 1 : 0,
        HAS_BIAS: bn.bias ? 1 : 0,
      },
    });
    return folded;
  });
  const out = Tensor.empty(outShape);
  const epilogue = { kind: "batchNorm", params, residual: bn.residual, relu: bn.relu } as const;
  if (tiled) {
    forwardTiled(input, weight, out, g, epilogue);
    return out;
  }
  forwardRows(
    input,
    packedWeight(weight, false),
    out,
    { kernelH: g.kernelH, kernelW: g.kernelW, stride: g.strideH, padH: g.padH, padW: g.padW },
    epilogue,
  );
  return out;
}

const tensorIds = new WeakMap<Tensor, number>();
let nextTensorId = 1;

/** A tensor's identity and version (or "-" for none), for the fold cache's stamp. */
function versionStamp(t: Tensor | null | undefined): string {
  if (!t) return "-";
  let id = tensorIds.get(t);
  if (id === undefined) tensorIds.set(t, id = nextTensorId++);
  return `${id}.${t.version}`;
}
