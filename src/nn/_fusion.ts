// When the layers of a block may be fused: a child is fused with its neighbours only when it runs
// its own class's forward (not a subclass's override) and has no forward hooks, so that a
// replaced, subclassed or hooked child always runs as written. Internal: not exported by mod.ts.
import { conv2dBatchNormEval } from "../ops/conv2d_batch_norm.ts";
import { add, relu as reluOp } from "../ops/elementwise.ts";
import type { Tensor } from "../tensor.ts";
import { BatchNorm2d } from "./batch_norm2d.ts";
import { Conv2d } from "./conv2d.ts";
import { hasForwardHooks, type Module } from "./module.ts";

/** Whether `module` runs exactly `forward` (its class's, not overridden) and has no hooks. */
export function runsAs(module: Module, forward: (...args: never[]) => Tensor): boolean {
  return module.forward === forward && !hasForwardHooks(module);
}

/**
 * `norm.call(z)`, then `+ residual` and a ReLU: passed to the batch norm's forward (one pass)
 * when `norm` is an unmodified `BatchNorm2d` without hooks, else as separate ops after it.
 */
export function normThen(
  norm: Module,
  z: Tensor,
  residual: Tensor | null,
  relu: boolean,
): Tensor {
  if (runsAs(norm, BatchNorm2d.prototype.forward)) {
    return (norm as BatchNorm2d).call(z, { residual, relu });
  }
  let y = norm.call(z);
  if (residual) y = add(y, residual);
  return relu ? reluOp(y) : y;
}

/**
 * `relu(norm(conv(x)) + residual)` through `conv2dBatchNormEval` (the batch norm folded into the
 * convolution's output pass) when `conv` and `norm` are an unmodified `Conv2d` and `BatchNorm2d`
 * without hooks and the batch norm is in eval mode with running statistics; null otherwise, and
 * the caller runs the layers. `conv2dBatchNormEval` itself runs the two ops when a gradient is
 * recorded or the shape has no fused kernel.
 */
export function convBnEval(
  conv: Module,
  norm: Module,
  x: Tensor,
  residual: Tensor | null,
  relu: boolean,
): Tensor | null {
  if (
    !(conv instanceof Conv2d) || !(norm instanceof BatchNorm2d) ||
    !runsAs(conv, Conv2d.prototype.forward) || !runsAs(norm, BatchNorm2d.prototype.forward) ||
    norm.training || !norm.runningMean || !norm.runningVar
  ) {
    return null;
  }
  return conv2dBatchNormEval(x, conv.weight, conv.bias, {
    stride: conv.stride,
    padding: conv.padding,
    batchNorm: {
      weight: norm.weight,
      bias: norm.bias,
      runningMean: norm.runningMean,
      runningVar: norm.runningVar,
      eps: norm.eps,
      residual,
      relu,
    },
  });
}
