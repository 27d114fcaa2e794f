/**
 * torchvision's ResNets (`torchvision.models.resnet`), mirrored: the classes `BasicBlock`,
 * `Bottleneck` (the stride on the 3x3 convolution, torchvision's "v1.5") and `ResNet`, the
 * builders `resnet18` … `resnet152`, torchvision's child names and therefore its state-dict keys
 * (`conv1.weight`, `layer2.0.downsample.0.weight`, `fc.bias`, …), its initialisation and its
 * repr. A state dict saved by torchvision (read with `loadTorchCheckpoint`) loads with
 * `loadStateDict`, and one saved from these models loads into torchvision's with `strict=True`.
 *
 * The blocks run their children through `call` and look them up by name, as the labml ResNet's
 * do, so replaced or hooked children run as written; unmodified convolution / batch norm / ReLU
 * chains run through the same fused paths (batch norm with the residual and ReLU in one pass;
 * in eval mode, convolution and batch norm as one op).
 *
 * @module
 */
import { flatten } from "../ops/shape.ts";
import { writeBuffer } from "../gpu/dispatch.ts";
import type { Tensor } from "../tensor.ts";
import type { Generator } from "../random.ts";
import { checkInteger } from "../ops/_check.ts";
import { ReLU } from "./activation.ts";
import { BatchNorm2d } from "./batch_norm2d.ts";
import { Conv2d } from "./conv2d.ts";
import { generatorFor, type InitOptions } from "./init.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";
import { AdaptiveAvgPool2d, MaxPool2d } from "./pool.ts";
import { convNormAct } from "./resnet.ts";
import { Sequential } from "./sequential.ts";

/**
 * A bias-free convolution initialised as torchvision's ResNet does:
 * `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, normal with standard deviation
 * `sqrt(2 / (outChannels * k * k))`.
 */
function tvConv(
  inChannels: number,
  outChannels: number,
  kernelSize: number,
  stride: number,
  padding: number,
  generator: Generator,
): Conv2d {
  const conv = new Conv2d(inChannels, outChannels, kernelSize, {
    stride,
    padding,
    bias: false,
    generator,
  });
  const std = Math.sqrt(2 / (outChannels * kernelSize * kernelSize));
  const values = new Float32Array(conv.weight.size);
  for (let i = 0; i < values.length; i++) values[i] = generator.normal() * std;
  writeBuffer(conv.weight.buffer, values, conv.weight.byteOffset);
  return conv;
}

/** Options of {@link BasicBlock} and {@link Bottleneck}, as torchvision's keyword arguments. */
export interface TorchvisionBlockOptions extends InitOptions {
  /** Stride of the block (of its 3x3 convolution); default 1. */
  stride?: number;
  /** The shortcut's projection (torchvision's `downsample`), or null (default) for identity. */
  downsample?: Module | null;
  /** Bottleneck only: width of each group, default 64 (128 for `wide_resnet50_2`). */
  baseWidth?: number;
}

/**
 * torchvision's `BasicBlock`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))`, two 3x3
 * bias-free convolutions, the first with the stride, one `relu` child used twice. `expansion` 1.
 *
 * @example
 * ```ts
 * import { BasicBlock, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const block = new BasicBlock(16, 16, { seed: 0 });
 * console.log(block.forward(Tensor.randn([2, 16, 8, 8], { seed: 1 })).shape); // [2, 16, 8, 8]
 * console.log([...block.stateDict().keys()][0]); // "conv1.weight"
 * ```
 */
export class BasicBlock extends Module {
  /** Output channels per `planes`: 1. */
  static readonly expansion = 1;

  /** A block from `inplanes` to `planes` channels. */
  constructor(inplanes: number, planes: number, options: TorchvisionBlockOptions = {}) {
    super();
    const generator = generatorFor(options);
    const stride = checkInteger("BasicBlock", "stride", options.stride ?? 1, 1);
    this.registerModule("conv1", tvConv(inplanes, planes, 3, stride, 1, generator));
    this.registerModule("bn1", new BatchNorm2d(planes));
    this.registerModule("relu", new ReLU({ inplace: true }));
    this.registerModule("conv2", tvConv(planes, planes, 3, 1, 1, generator));
    this.registerModule("bn2", new BatchNorm2d(planes));
    if (options.downsample) this.registerModule("downsample", options.downsample);
  }

  /** `[N, inplanes, H, W]` → `[N, planes, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const identity = this.namedChildren().some(([name]) => name === "downsample")
      ? this.getSubmodule("downsample").call(x)
      : x;
    const relu = this.getSubmodule("relu");
    const y = convNormAct(this.getSubmodule("conv1"), this.getSubmodule("bn1"), relu, x, null);
    return convNormAct(this.getSubmodule("conv2"), this.getSubmodule("bn2"), relu, y, identity);
  }
}

/**
 * torchvision's `Bottleneck` (ResNet v1.5): 1x1 down to `width`, 3x3 with the stride, 1x1 up to
 * `planes * 4`, each bias-free and followed by batch norm, then `relu(· + downsample(x))`.
 * `width = planes * baseWidth / 64`. `expansion` 4.
 *
 * @example
 * ```ts
 * import { Bottleneck, initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const downsample = new nn.Sequential(
 *   new nn.Conv2d(16, 32, 1, { stride: 2, bias: false }),
 *   new nn.BatchNorm2d(32),
 * );
 * const block = new Bottleneck(16, 8, { stride: 2, downsample, seed: 0 });
 * console.log(block.forward(Tensor.randn([1, 16, 8, 8], { seed: 1 })).shape); // [1, 32, 4, 4]
 * ```
 */
export class Bottleneck extends Module {
  /** Output channels per `planes`: 4. */
  static readonly expansion = 4;

  /** A block from `inplanes` through `width` to `planes * 4` channels. */
  constructor(inplanes: number, planes: number, options: TorchvisionBlockOptions = {}) {
    super();
    const generator = generatorFor(options);
    const stride = checkInteger("Bottleneck", "stride", options.stride ?? 1, 1);
    const baseWidth = checkInteger("Bottleneck", "baseWidth", options.baseWidth ?? 64, 1);
    const width = Math.floor(planes * (baseWidth / 64));
    const out = planes * Bottleneck.expansion;
    this.registerModule("conv1", tvConv(inplanes, width, 1, 1, 0, generator));
    this.registerModule("bn1", new BatchNorm2d(width));
    this.registerModule("conv2", tvConv(width, width, 3, stride, 1, generator));
    this.registerModule("bn2", new BatchNorm2d(width));
    this.registerModule("conv3", tvConv(width, out, 1, 1, 0, generator));
    this.registerModule("bn3", new BatchNorm2d(out));
    this.registerModule("relu", new ReLU({ inplace: true }));
    if (options.downsample) this.registerModule("downsample", options.downsample);
  }

  /** `[N, inplanes, H, W]` → `[N, planes * 4, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const identity = this.namedChildren().some(([name]) => name === "downsample")
      ? this.getSubmodule("downsample").call(x)
      : x;
    const relu = this.getSubmodule("relu");
    let y = convNormAct(this.getSubmodule("conv1"), this.getSubmodule("bn1"), relu, x, null);
    y = convNormAct(this.getSubmodule("conv2"), this.getSubmodule("bn2"), relu, y, null);
    return convNormAct(this.getSubmodule("conv3"), this.getSubmodule("bn3"), relu, y, identity);
  }
}

/** The block classes {@link ResNet} stacks. */
export type TorchvisionBlock = typeof BasicBlock | typeof Bottleneck;

/** Options of {@link ResNet} and the builders `resnet18` … `resnet152`. */
export interface TorchvisionResNetOptions extends InitOptions {
  /** Outputs of `fc`; default 1000 (ImageNet). */
  numClasses?: number;
  /**
   * Zero the last batch norm's weight in every block (`bn3` of a `Bottleneck`, `bn2` of a
   * `BasicBlock`), so that each block starts as the identity; default false.
   */
  zeroInitResidual?: boolean;
  /** `Bottleneck` width per group (torchvision's `width_per_group`); default 64. */
  widthPerGroup?: number;
}

/**
 * torchvision's `ResNet`: the 7x7 stride-2 stem (`conv1`, `bn1`, `relu`), 3x3 stride-2 max
 * pooling (`maxpool`), four stages `layer1` … `layer4` of 64/128/256/512 `planes` (strides 1, 2,
 * 2, 2; a 1x1 convolution and batch norm as `downsample` where the shape changes), `avgpool`
 * (`AdaptiveAvgPool2d((1, 1))`), a flatten and `fc`: `[N, 3, H, W]` → `[N, numClasses]`.
 * Initialised as torchvision: convolutions Kaiming-normal (fan-out, ReLU gain), batch norms 1
 * and 0, `fc` PyTorch's default `Linear` init; `zeroInitResidual` as its `zero_init_residual`.
 *
 * @throws {RangeError} when `layers` is not four positive integers.
 * @example
 * ```ts
 * import { BasicBlock, initGPU, ResNet, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const model = new ResNet(BasicBlock, [1, 1, 1, 1], { numClasses: 5, seed: 0 });
 * console.log(model.forward(Tensor.randn([2, 3, 32, 32], { seed: 1 })).shape); // [2, 5]
 * console.log(model.stateDict().has("layer2.0.downsample.1.running_mean")); // true
 * ```
 */
export class ResNet extends Module {
  /** The block class of every stage. */
  readonly block: TorchvisionBlock;

  /** A ResNet of `layers[i]` `block`s in stage i. */
  constructor(
    block: TorchvisionBlock,
    layers: readonly number[],
    options: TorchvisionResNetOptions = {},
  ) {
    super();
    if (block !== BasicBlock && block !== Bottleneck) {
      throw new TypeError("ResNet: block must be BasicBlock or Bottleneck");
    }
    if (!Array.isArray(layers) || layers.length !== 4) {
      throw new RangeError(
        `ResNet: layers must be four block counts, e.g. [2, 2, 2, 2], got ${String(layers)}`,
      );
    }
    layers.forEach((n) => checkInteger("ResNet", "each layers entry", n, 1));
    this.block = block;
    const numClasses = checkInteger("ResNet", "numClasses", options.numClasses ?? 1000, 1);
    const baseWidth = options.widthPerGroup ?? 64;
    const generator = generatorFor(options);
    let inplanes = 64;
    this.registerModule("conv1", tvConv(3, inplanes, 7, 2, 3, generator));
    this.registerModule("bn1", new BatchNorm2d(inplanes));
    this.registerModule("relu", new ReLU({ inplace: true }));
    this.registerModule("maxpool", new MaxPool2d(3, { stride: 2, padding: 1 }));
    [64, 128, 256, 512].forEach((planes, i) => {
      const stride = i === 0 ? 1 : 2;
      const out = planes * block.expansion;
      const blocks: Module[] = [];
      for (let j = 0; j < layers[i]; j++) {
        const downsample = j === 0 && (stride !== 1 || inplanes !== out)
          ? new Sequential(tvConv(inplanes, out, 1, stride, 0, generator), new BatchNorm2d(out))
          : null;
        blocks.push(
          new block(j === 0 ? inplanes : out, planes, {
            stride: j === 0 ? stride : 1,
            downsample,
            baseWidth,
            generator,
          }),
        );
      }
      inplanes = out;
      this.registerModule(`layer${i + 1}`, new Sequential(...blocks));
    });
    this.registerModule("avgpool", new AdaptiveAvgPool2d([1, 1]));
    this.registerModule("fc", new Linear(512 * block.expansion, numClasses, { generator }));
    if (options.zeroInitResidual) {
      const last = block === Bottleneck ? "bn3" : "bn2";
      for (const [, m] of this.namedModules()) {
        if (m instanceof block) {
          const bn = m.getSubmodule(last) as BatchNorm2d;
          if (bn.weight) {
            writeBuffer(bn.weight.buffer, new Float32Array(bn.weight.size), bn.weight.byteOffset);
          }
        }
      }
    }
  }

  /** Input features of `fc` (512 for BasicBlock, 2048 for Bottleneck). */
  get numFeatures(): number {
    return 512 * this.block.expansion;
  }

  /** `[N, 3, H, W]` → `[N, numClasses]`. */
  forward(x: Tensor): Tensor {
    let y = convNormAct(
      this.getSubmodule("conv1"),
      this.getSubmodule("bn1"),
      this.getSubmodule("relu"),
      x,
      null,
    );
    y = this.getSubmodule("maxpool").call(y);
    for (const name of ["layer1", "layer2", "layer3", "layer4"]) {
      y = this.getSubmodule(name).call(y);
    }
    y = this.getSubmodule("avgpool").call(y);
    return this.getSubmodule("fc").call(flatten(y, 1));
  }
}

function builder(name: string, block: TorchvisionBlock, layers: number[]) {
  return (options: TorchvisionResNetOptions = {}): ResNet => {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`${name}(): options must be an object like { numClasses: 10 }`);
    }
    return new ResNet(block, layers, options);
  };
}

/**
 * torchvision's `resnet18()`: `ResNet(BasicBlock, [2, 2, 2, 2])`, 11.7 M parameters with 1000
 * classes. Load torchvision's weights with `loadTorchCheckpoint` and `loadStateDict`.
 *
 * @example
 * ```ts
 * import { initGPU, resnet18 } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet18({ numClasses: 10, seed: 0 });
 * console.log(model.parameters().reduce((s, p) => s + p.size, 0)); // 11181642
 * ```
 */
export const resnet18: (options?: TorchvisionResNetOptions) => ResNet = builder(
  "resnet18",
  BasicBlock,
  [2, 2, 2, 2],
);

/**
 * torchvision's `resnet34()`: `ResNet(BasicBlock, [3, 4, 6, 3])`.
 *
 * @example
 * ```ts
 * import { initGPU, resnet34 } from "@resnet/webgpu";
 * await initGPU();
 * console.log(resnet34({ numClasses: 10, seed: 0 }).getSubmodule("layer3").children().length); // 6
 * ```
 */
export const resnet34: (options?: TorchvisionResNetOptions) => ResNet = builder(
  "resnet34",
  BasicBlock,
  [3, 4, 6, 3],
);

/**
 * torchvision's `resnet50()`: `ResNet(Bottleneck, [3, 4, 6, 3])`, 25.6 M parameters with 1000
 * classes.
 *
 * @example
 * ```ts
 * import { initGPU, resnet50 } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet50({ numClasses: 10, seed: 0 });
 * console.log(model.getSubmodule("fc").toString());
 * // "Linear(in_features=2048, out_features=10, bias=True)"
 * ```
 */
export const resnet50: (options?: TorchvisionResNetOptions) => ResNet = builder(
  "resnet50",
  Bottleneck,
  [3, 4, 6, 3],
);

/**
 * torchvision's `resnet101()`: `ResNet(Bottleneck, [3, 4, 23, 3])`.
 *
 * @example
 * ```ts
 * import { initGPU, resnet101 } from "@resnet/webgpu";
 * await initGPU();
 * console.log(resnet101({ numClasses: 2, seed: 0 }).getSubmodule("layer3").children().length); // 23
 * ```
 */
export const resnet101: (options?: TorchvisionResNetOptions) => ResNet = builder(
  "resnet101",
  Bottleneck,
  [3, 4, 23, 3],
);

/**
 * torchvision's `resnet152()`: `ResNet(Bottleneck, [3, 8, 36, 3])`.
 *
 * @example
 * ```ts
 * import { initGPU, resnet152 } from "@resnet/webgpu";
 * await initGPU();
 * console.log(resnet152({ numClasses: 2, seed: 0 }).getSubmodule("layer3").children().length); // 36
 * ```
 */
export const resnet152: (options?: TorchvisionResNetOptions) => ResNet = builder(
  "resnet152",
  Bottleneck,
  [3, 8, 36, 3],
);
