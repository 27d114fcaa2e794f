import { avgPool2d, maxPool2d } from "../ops/pool.ts";
import type { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";
import { pair } from "../ops/_check.ts";

/** Options of {@link MaxPool2d} and {@link AvgPool2d}. */
export interface PoolOptions {
  /** Stride, default the kernel size. */
  stride?: number | [number, number];
  /** Implicit padding, default 0 (−∞ for max pooling, zeros for average pooling). */
  padding?: number | [number, number];
}

/**
 * Max pooling over `[N, C, H, W]` like `torch.nn.MaxPool2d`; its backward routes each gradient to
 * the arg-max.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const pool = new nn.MaxPool2d(3, { stride: 2, padding: 1 });
 * console.log(pool.forward(Tensor.randn([1, 4, 16, 16], { seed: 0 })).shape); // [1, 4, 8, 8]
 * ```
 */
export class MaxPool2d extends Module {
  /** `[KH, KW]`. */
  readonly kernelSize: [number, number];
  /** `[strideH, strideW]`. */
  readonly stride: [number, number];
  /** `[padH, padW]`. */
  readonly padding: [number, number];

  /** Max pooling with a `kernelSize` window. */
  constructor(kernelSize: number | [number, number], options: PoolOptions = {}) {
    super();
    this.kernelSize = pair("MaxPool2d", "kernelSize", kernelSize, 1);
    this.stride = pair("MaxPool2d", "stride", options.stride ?? this.kernelSize, 1);
    this.padding = pair("MaxPool2d", "padding", options.padding, 0, 0);
  }

  /** `[N, C, H, W]` → `[N, C, OH, OW]`. */
  forward(input: Tensor): Tensor {
    return maxPool2d(input, {
      kernelSize: this.kernelSize,
      stride: this.stride,
      padding: this.padding,
    });
  }

  /** `kernel_size=3, stride=2, padding=1`, as PyTorch. */
  override extraRepr(): string {
    return `kernel_size=${fmt(this.kernelSize)}, stride=${fmt(this.stride)}, ` +
      `padding=${fmt(this.padding)}`;
  }
}

/** Options of {@link AvgPool2d}. */
export interface AvgPoolOptions extends PoolOptions {
  /** Count padded zeros in the average; default true, as PyTorch. */
  countIncludePad?: boolean;
}

/**
 * Average pooling over `[N, C, H, W]` like `torch.nn.AvgPool2d`.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(new nn.AvgPool2d(2).forward(Tensor.ones([1, 1, 4, 4])).shape); // [1, 1, 2, 2]
 * ```
 */
export class AvgPool2d extends Module {
  /** `[KH, KW]`. */
  readonly kernelSize: [number, number];
  /** `[strideH, strideW]`. */
  readonly stride: [number, number];
  /** `[padH, padW]`. */
  readonly padding: [number, number];
  /** Whether padded zeros count in the average. */
  readonly countIncludePad: boolean;

  /** Average pooling with a `kernelSize` window. */
  constructor(kernelSize: number | [number, number], options: AvgPoolOptions = {}) {
    super();
    this.kernelSize = pair("AvgPool2d", "kernelSize", kernelSize, 1);
    this.stride = pair("AvgPool2d", "stride", options.stride ?? this.kernelSize, 1);
    this.padding = pair("AvgPool2d", "padding", options.padding, 0, 0);
    this.countIncludePad = options.countIncludePad ?? true;
  }

  /** `[N, C, H, W]` → `[N, C, OH, OW]`. */
  forward(input: Tensor): Tensor {
    return avgPool2d(input, {
      kernelSize: this.kernelSize,
      stride: this.stride,
      padding: this.padding,
      countIncludePad: this.countIncludePad,
    });
  }

  /** `kernel_size=3, stride=2, padding=1`, as PyTorch. */
  override extraRepr(): string {
    return `kernel_size=${fmt(this.kernelSize)}, stride=${fmt(this.stride)}, ` +
      `padding=${fmt(this.padding)}`;
  }
}

function fmt(p: [number, number]): string {
  return p[0] === p[1] ? String(p[0]) : `(${p[0]}, ${p[1]})`;
}
