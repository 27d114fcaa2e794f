import type { Tensor } from "../tensor.ts";
import { BatchNorm2d, type BatchNorm2dForwardOptions } from "./batch_norm2d.ts";
import { Conv2d } from "./conv2d.ts";
import { Sequential } from "./sequential.ts";
import { convBnEval, normThen } from "./_fusion.ts";

/**
 * A convolution and the batch norm after it as one layer, as PyTorch's
 * `torch.ao.nn.intrinsic.ConvBn2d`: a `Sequential(conv, bn)` (children `"0"` and `"1"`, state-dict
 * keys `0.weight`, `1.running_mean`, …) whose forward in eval mode folds the batch norm into the
 * convolution's output pass with `conv2dBatchNormEval`, residual and ReLU included. In training
 * mode, or when a child was replaced, subclassed or hooked, it runs its children in turn.
 * `fuseConvBn(model)` puts these in a model for inference.
 *
 * @example
 * ```ts
 * import { initGPU, nn, noGrad, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const layer = new nn.ConvBn2d(new nn.Conv2d(3, 8, 3, { padding: 1 }), new nn.BatchNorm2d(8));
 * layer.eval();
 * const y = noGrad(() => layer.forward(Tensor.randn([2, 3, 8, 8], { seed: 0 }), { relu: true }));
 * console.log(y.shape, [...layer.stateDict().keys()][0]); // [2, 8, 8, 8] "0.weight"
 * ```
 */
export class ConvBn2d extends Sequential {
  /** `conv` then `bn`, as children `"0"` and `"1"`. */
  constructor(conv: Conv2d, bn: BatchNorm2d) {
    if (!(conv instanceof Conv2d) || !(bn instanceof BatchNorm2d)) {
      throw new TypeError("ConvBn2d: expected an nn.Conv2d and an nn.BatchNorm2d");
    }
    super(conv, bn);
  }

  /**
   * `bn(conv(input))`, then `+ options.residual` and a ReLU when asked: `[N, C, H, W]` →
   * `[N, O, OH, OW]`.
   */
  override forward(input: Tensor, options: BatchNorm2dForwardOptions = {}): Tensor {
    const conv = this.at(0);
    const bn = this.at(1);
    const residual = options.residual ?? null;
    const relu = options.relu ?? false;
    const fused = convBnEval(conv, bn, input, residual, relu);
    if (fused) return fused;
    return normThen(bn, conv.call(input), residual, relu);
  }
}
