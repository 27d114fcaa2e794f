// When the layers of a block may be fused: a child is fused with its neighbours only when it runs
// its own class's forward (not a subclass's override) and has no forward hooks, so that a
// replaced, subclassed or hooked child always runs as written. Internal: not exported by mod.ts.
import { add, relu as reluOp } from "../ops/elementwise.ts";
import type { Tensor } from "../tensor.ts";
import { BatchNorm2d } from "./batch_norm2d.ts";
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
