import { linear } from "../ops/linear.ts";
import type { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";
import { biasUniform, generatorFor, type InitOptions, kaimingUniform } from "./init.ts";
import { checkInteger } from "../ops/_check.ts";

/** Options of {@link Linear}. */
export interface LinearOptions extends InitOptions {
  /** Whether to add a learned bias; default true. */
  bias?: boolean;
}

/**
 * A fully connected layer like `torch.nn.Linear`: `[N, in]` → `[N, out]`, `y = x Wᵀ + b`, with
 * `weight` `[out, in]` and `bias` `[out]` initialised as PyTorch does.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const fc = new nn.Linear(64, 10, { seed: 0 });
 * console.log(fc.forward(Tensor.randn([8, 64], { seed: 1 })).shape); // [8, 10]
 * ```
 */
export class Linear extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** Weight `[out, in]`. */
  readonly weight: Tensor;
  /** Bias `[out]`, or null. */
  readonly bias: Tensor | null;

  /** A layer from `inFeatures` to `outFeatures`. */
  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    this.inFeatures = checkInteger("Linear", "inFeatures", inFeatures, 1);
    this.outFeatures = checkInteger("Linear", "outFeatures", outFeatures, 1);
    const g = generatorFor(options);
    this.weight = this.registerParameter(
      "weight",
      kaimingUniform([outFeatures, inFeatures], inFeatures, g),
    );
    this.bias = this.registerParameter(
      "bias",
      options.bias === false ? null : biasUniform(outFeatures, inFeatures, g),
    );
  }

  /** `[N, in]` → `[N, out]`. */
  forward(input: Tensor): Tensor {
    return linear(input, this.weight, this.bias);
  }

  /** `in_features=64, out_features=10, bias=True`, as PyTorch. */
  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, ` +
      `bias=${this.bias ? "True" : "False"}`;
  }
}
