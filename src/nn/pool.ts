import { avgPool2d, globalAvgPool2d, maxPool2d } from "../ops/pool.ts";
import { reshape } from "../ops/shape.ts";
import { formatShape, type Tensor } from "../tensor.ts";
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

  /** `kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False`, as PyTorch. */
  override extraRepr(): string {
    return `kernel_size=${fmt(this.kernelSize)}, stride=${fmt(this.stride)}, ` +
      `padding=${fmt(this.padding)}, dilation=1, ceil_mode=False`;
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

/**
 * Average pooling to a fixed output size, like `torch.nn.AdaptiveAvgPool2d`: `[N, C, H, W]` →
 * `[N, C, OH, OW]`. Output `(1, 1)` (a ResNet's head) takes the mean of each plane; other sizes
 * need `H` and `W` to be multiples of `OH` and `OW` (then the windows are PyTorch's: equal,
 * non-overlapping), else a `RangeError` says so.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const pool = new nn.AdaptiveAvgPool2d([1, 1]);
 * console.log(pool.forward(Tensor.randn([2, 8, 7, 7], { seed: 0 })).shape); // [2, 8, 1, 1]
 * console.log(pool.toString()); // "AdaptiveAvgPool2d(output_size=(1, 1))"
 * ```
 */
export class AdaptiveAvgPool2d extends Module {
  /** `[OH, OW]`. */
  readonly outputSize: [number, number];

  /** Pooling to `outputSize`, one number or `[OH, OW]`. */
  constructor(outputSize: number | [number, number]) {
    super();
    this.outputSize = pair("AdaptiveAvgPool2d", "outputSize", outputSize, 1);
  }

  /** `[N, C, H, W]` → `[N, C, OH, OW]`. */
  forward(input: Tensor): Tensor {
    const [oh, ow] = this.outputSize;
    if (oh === 1 && ow === 1 && input.ndim === 4) {
      const [n, c] = input.shape;
      return reshape(globalAvgPool2d(input), [n, c, 1, 1]);
    }
    const [h, w] = input.shape.slice(2);
    if (input.ndim !== 4 || h % oh !== 0 || w % ow !== 0) {
      throw new RangeError(
        `AdaptiveAvgPool2d: output size (${oh}, ${ow}) needs an input [N, C, H, W] whose H and W ` +
          `are multiples of it (or output size (1, 1)), got ${formatShape(input.shape)}`,
      );
    }
    return avgPool2d(input, { kernelSize: [h / oh, w / ow], stride: [h / oh, w / ow] });
  }

  /** `output_size=(1, 1)`, as PyTorch. */
  override extraRepr(): string {
    return `output_size=(${this.outputSize[0]}, ${this.outputSize[1]})`;
  }
}

function fmt(p: [number, number]): string {
  return p[0] === p[1] ? String(p[0]) : `(${p[0]}, ${p[1]})`;
}
