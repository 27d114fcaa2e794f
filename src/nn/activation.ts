import { relu } from "../ops/elementwise.ts";
import { flatten } from "../ops/shape.ts";
import type { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";

/**
 * `max(x, 0)` elementwise, like `torch.nn.ReLU`.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(await new nn.ReLU().forward(Tensor.from([-1, 2])).toArray()); // [0, 2]
 * ```
 */
export class ReLU extends Module {
  /**
   * Whether the repr reads `ReLU(inplace=True)`, as torchvision's layers are built. The output is
   * always a new tensor; the flag changes only `toString()`.
   */
  readonly inplace: boolean;

  /** A ReLU; `inplace` (default false) only marks the repr, as PyTorch's argument of that name. */
  constructor(options: { inplace?: boolean } = {}) {
    super();
    this.inplace = options.inplace ?? false;
  }

  /** Any shape → the same shape. */
  forward(input: Tensor): Tensor {
    return relu(input);
  }

  /** `inplace=True` when built so, else nothing, as PyTorch. */
  override extraRepr(): string {
    return this.inplace ? "inplace=True" : "";
  }
}

/**
 * Returns its input unchanged, like `torch.nn.Identity` (the shortcut of a residual block whose
 * shape does not change).
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.ones([2]);
 * console.log(new nn.Identity().forward(x) === x); // true
 * ```
 */
export class Identity extends Module {
  /** Returns `input` itself. */
  forward(input: Tensor): Tensor {
    return input;
  }
}

/**
 * Flattens dimensions `startDim..endDim` into one, like `torch.nn.Flatten` (default 1..-1:
 * `[N, C, H, W]` → `[N, C·H·W]`).
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(new nn.Flatten().forward(Tensor.ones([2, 3, 4, 4])).shape); // [2, 48]
 * ```
 */
export class Flatten extends Module {
  /** First dimension to flatten. */
  readonly startDim: number;
  /** Last dimension to flatten (negative counts from the end). */
  readonly endDim: number;

  /** Flattens `startDim..endDim` (default 1..-1). */
  constructor(startDim = 1, endDim = -1) {
    super();
    this.startDim = startDim;
    this.endDim = endDim;
  }

  /** `[N, C, H, W]` → `[N, C·H·W]` with the defaults. */
  forward(input: Tensor): Tensor {
    return flatten(input, this.startDim, this.endDim);
  }

  /** `start_dim=1, end_dim=-1`, as PyTorch. */
  override extraRepr(): string {
    return `start_dim=${this.startDim}, end_dim=${this.endDim}`;
  }
}
