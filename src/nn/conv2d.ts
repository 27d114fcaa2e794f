import { conv2d } from "../ops/conv2d.ts";
import type { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";
import { biasUniform, generatorFor, type InitOptions, kaimingUniform } from "./init.ts";
import { checkInteger, pair } from "../ops/_check.ts";

/** Options of {@link Conv2d}. */
export interface Conv2dLayerOptions extends InitOptions {
  /** Stride, one number or `[h, w]`; default 1. */
  stride?: number | [number, number];
  /** Zero padding, one number or `[h, w]`; default 0. */
  padding?: number | [number, number];
  /** Whether to add a learned bias; default true, as PyTorch. */
  bias?: boolean;
}

/**
 * A 2-D convolution like `torch.nn.Conv2d` (dilation 1, groups 1): input `[N, C, H, W]`, weight
 * `[O, C, KH, KW]`, output `[N, O, OH, OW]`. Parameters `weight` and `bias`, initialised as
 * PyTorch does.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const conv = new nn.Conv2d(3, 16, 3, { padding: 1, seed: 0 });
 * const y = conv.forward(Tensor.randn([2, 3, 32, 32], { seed: 1 }));
 * console.log(y.shape); // [2, 16, 32, 32]
 * ```
 */
export class Conv2d extends Module {
  /** Weight `[O, C, KH, KW]`. */
  readonly weight: Tensor;
  /** Bias `[O]`, or null. */
  readonly bias: Tensor | null;
  /** Input channels C. */
  readonly inChannels: number;
  /** Output channels O. */
  readonly outChannels: number;
  /** `[KH, KW]`. */
  readonly kernelSize: [number, number];
  /** `[strideH, strideW]`. */
  readonly stride: [number, number];
  /** `[padH, padW]`. */
  readonly padding: [number, number];

  /** A convolution from `inChannels` to `outChannels` with a `kernelSize` window. */
  constructor(
    inChannels: number,
    outChannels: number,
    kernelSize: number | [number, number],
    options: Conv2dLayerOptions = {},
  ) {
    super();
    this.inChannels = checkInteger("Conv2d", "inChannels", inChannels, 1);
    this.outChannels = checkInteger("Conv2d", "outChannels", outChannels, 1);
    this.kernelSize = pair("Conv2d", "kernelSize", kernelSize, 1);
    this.stride = pair("Conv2d", "stride", options.stride, 1, 1);
    this.padding = pair("Conv2d", "padding", options.padding, 0, 0);
    const g = generatorFor(options);
    const fanIn = inChannels * this.kernelSize[0] * this.kernelSize[1];
    this.weight = this.registerParameter(
      "weight",
      kaimingUniform([outChannels, inChannels, ...this.kernelSize], fanIn, g),
    );
    this.bias = this.registerParameter(
      "bias",
      options.bias === false ? null : biasUniform(outChannels, fanIn, g),
    );
  }

  /** `[N, C, H, W]` → `[N, O, OH, OW]`. */
  forward(input: Tensor): Tensor {
    return conv2d(input, this.weight, this.bias, { stride: this.stride, padding: this.padding });
  }

  /** `3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)`, as PyTorch. */
  override extraRepr(): string {
    const k = this.kernelSize;
    let s = `${this.inChannels}, ${this.outChannels}, kernel_size=(${k[0]}, ${k[1]}), ` +
      `stride=(${this.stride[0]}, ${this.stride[1]})`;
    if (this.padding[0] || this.padding[1]) {
      s += `, padding=(${this.padding[0]}, ${this.padding[1]})`;
    }
    if (!this.bias) s += ", bias=False";
    return s;
  }
}
