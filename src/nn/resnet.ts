/**
 * The ResNet of labml.ai's annotated implementation (He et al., 2015), with the same classes,
 * child names and therefore the same state-dict keys as its PyTorch code, plus the paper's CIFAR
 * networks as presets.
 *
 * @module
 */
import { batchNormAct, conv2dBatchNorm } from "../ops/fused.ts";
import { globalAvgPool2d } from "../ops/pool.ts";
import type { Tensor } from "../tensor.ts";
import { BatchNorm2d } from "./batch_norm2d.ts";
import { Conv2d } from "./conv2d.ts";
import { generatorFor, type InitOptions } from "./init.ts";
import { Identity, ReLU } from "./activation.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";
import { Sequential } from "./sequential.ts";
import { positiveInt } from "./_check.ts";

/**
 * The projection shortcut `W_s x`: a 1x1 convolution with the block's stride, then batch norm.
 * Used when a block changes the number of channels or the feature map's size.
 *
 * @example
 * ```ts
 * import { initGPU, ShortcutProjection, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const s = new ShortcutProjection(16, 32, 2);
 * console.log(s.forward(Tensor.randn([1, 16, 8, 8], { seed: 0 })).shape); // [1, 32, 4, 4]
 * ```
 */
export class ShortcutProjection extends Module {
  /** Stem or projection convolution. */
  readonly conv: Conv2d;
  /** Batch norm after `conv`. */
  readonly bn: BatchNorm2d;

  /** A projection from `inChannels` to `outChannels` with `stride`. */
  constructor(inChannels: number, outChannels: number, stride: number, options: InitOptions = {}) {
    super();
    const generator = generatorFor(options);
    this.conv = this.registerModule(
      "conv",
      new Conv2d(inChannels, outChannels, 1, { stride, generator }),
    );
    this.bn = this.registerModule("bn", new BatchNorm2d(outChannels));
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    return this.bn.forward(this.conv.forward(x));
  }
}

/**
 * `bn(conv(x))`, then `+ residual` and a ReLU when asked. With the batch norm in eval mode this is
 * one fused kernel (conv2dBatchNorm, which also keeps the gradients when they are recorded); in
 * training mode the convolution, then the batch norm, residual and ReLU as one fused op
 * (batchNormAct, with the options BatchNorm2d.forward passes to batchNorm2d).
 */
function convBn(
  conv: Conv2d,
  bn: BatchNorm2d,
  x: Tensor,
  residual: Tensor | null,
  act: boolean,
): Tensor {
  if (bn.training || !bn.runningMean || !bn.runningVar) {
    const z = conv.forward(x);
    const y = batchNormAct(z, {
      weight: bn.weight,
      bias: bn.bias,
      runningMean: bn.runningMean,
      runningVar: bn.runningVar,
      numBatchesTracked: bn.training ? bn.numBatchesTracked : null,
      training: bn.training || !bn.runningMean,
      momentum: bn.momentum,
      eps: bn.eps,
      residual,
      relu: act,
    });
    if (!y.gradFn) z.dispose();
    return y;
  }
  return conv2dBatchNorm(x, conv.weight, conv.bias, {
    stride: conv.stride,
    padding: conv.padding,
    batchNorm: {
      weight: bn.weight,
      bias: bn.bias,
      runningMean: bn.runningMean,
      runningVar: bn.runningVar,
      training: false,
      eps: bn.eps,
    },
    residual,
    relu: act,
  });
}

/** The shortcut's output: a projection through {@link convBn}, else the module's forward. */
function shortcutForward(shortcut: Module, x: Tensor): Tensor {
  return shortcut instanceof ShortcutProjection
    ? convBn(shortcut.conv, shortcut.bn, x, null, false)
    : shortcut.forward(x);
}

function shortcutFor(
  inChannels: number,
  outChannels: number,
  stride: number,
  options: InitOptions,
): Module {
  return stride !== 1 || inChannels !== outChannels
    ? new ShortcutProjection(inChannels, outChannels, stride, options)
    : new Identity();
}

/**
 * The basic residual block: two 3x3 convolutions with batch norm, `relu(bn2(conv2(relu(bn1(
 * conv1(x))))) + shortcut(x))`; the first convolution carries the stride.
 *
 * @example
 * ```ts
 * import { initGPU, ResidualBlock, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const block = new ResidualBlock(16, 16, 1);
 * console.log(block.forward(Tensor.randn([2, 16, 8, 8], { seed: 0 })).shape); // [2, 16, 8, 8]
 * ```
 */
export class ResidualBlock extends Module {
  /** First convolution. */
  readonly conv1: Conv2d;
  /** Batch norm after `conv1`. */
  readonly bn1: BatchNorm2d;
  /** ReLU after `bn1`. */
  readonly act1: ReLU;
  /** Second convolution. */
  readonly conv2: Conv2d;
  /** Batch norm after `conv2`. */
  readonly bn2: BatchNorm2d;
  /** `ShortcutProjection` when the shape changes, else `Identity`. */
  readonly shortcut: Module;
  /** The ReLU after `bn2` (bottleneck) or after the addition (basic block). */
  readonly act2: ReLU;

  /** A block from `inChannels` to `outChannels` whose first convolution has `stride`. */
  constructor(inChannels: number, outChannels: number, stride: number, options: InitOptions = {}) {
    super();
    const generator = generatorFor(options);
    this.conv1 = this.registerModule(
      "conv1",
      new Conv2d(inChannels, outChannels, 3, { stride, padding: 1, generator }),
    );
    this.bn1 = this.registerModule("bn1", new BatchNorm2d(outChannels));
    this.act1 = this.registerModule("act1", new ReLU());
    this.conv2 = this.registerModule(
      "conv2",
      new Conv2d(outChannels, outChannels, 3, { stride: 1, padding: 1, generator }),
    );
    this.bn2 = this.registerModule("bn2", new BatchNorm2d(outChannels));
    this.shortcut = this.registerModule(
      "shortcut",
      shortcutFor(inChannels, outChannels, stride, { generator }),
    );
    this.act2 = this.registerModule("act2", new ReLU());
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const shortcut = shortcutForward(this.shortcut, x);
    const y = convBn(this.conv1, this.bn1, x, null, true);
    return convBn(this.conv2, this.bn2, y, shortcut, true);
  }
}

/**
 * The bottleneck residual block: 1x1 down to `bottleneckChannels`, 3x3 with the stride, 1x1 up to
 * `outChannels`, each with batch norm, plus the shortcut.
 *
 * @example
 * ```ts
 * import { BottleneckResidualBlock, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const block = new BottleneckResidualBlock(16, 8, 32, 2);
 * console.log(block.forward(Tensor.randn([1, 16, 8, 8], { seed: 0 })).shape); // [1, 32, 4, 4]
 * ```
 */
export class BottleneckResidualBlock extends Module {
  /** First convolution. */
  readonly conv1: Conv2d;
  /** Batch norm after `conv1`. */
  readonly bn1: BatchNorm2d;
  /** ReLU after `bn1`. */
  readonly act1: ReLU;
  /** Second convolution. */
  readonly conv2: Conv2d;
  /** Batch norm after `conv2`. */
  readonly bn2: BatchNorm2d;
  /** The ReLU after `bn2` (bottleneck) or after the addition (basic block). */
  readonly act2: ReLU;
  /** Third (1x1) convolution. */
  readonly conv3: Conv2d;
  /** Batch norm after `conv3`. */
  readonly bn3: BatchNorm2d;
  /** `ShortcutProjection` when the shape changes, else `Identity`. */
  readonly shortcut: Module;
  /** ReLU after the addition. */
  readonly act3: ReLU;

  /** A block `inChannels` → `bottleneckChannels` → `outChannels`, strided in the 3x3. */
  constructor(
    inChannels: number,
    bottleneckChannels: number,
    outChannels: number,
    stride: number,
    options: InitOptions = {},
  ) {
    super();
    const generator = generatorFor(options);
    this.conv1 = this.registerModule(
      "conv1",
      new Conv2d(inChannels, bottleneckChannels, 1, { stride: 1, generator }),
    );
    this.bn1 = this.registerModule("bn1", new BatchNorm2d(bottleneckChannels));
    this.act1 = this.registerModule("act1", new ReLU());
    this.conv2 = this.registerModule(
      "conv2",
      new Conv2d(bottleneckChannels, bottleneckChannels, 3, { stride, padding: 1, generator }),
    );
    this.bn2 = this.registerModule("bn2", new BatchNorm2d(bottleneckChannels));
    this.act2 = this.registerModule("act2", new ReLU());
    this.conv3 = this.registerModule(
      "conv3",
      new Conv2d(bottleneckChannels, outChannels, 1, { stride: 1, generator }),
    );
    this.bn3 = this.registerModule("bn3", new BatchNorm2d(outChannels));
    this.shortcut = this.registerModule(
      "shortcut",
      shortcutFor(inChannels, outChannels, stride, { generator }),
    );
    this.act3 = this.registerModule("act3", new ReLU());
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const shortcut = shortcutForward(this.shortcut, x);
    let y = convBn(this.conv1, this.bn1, x, null, true);
    y = convBn(this.conv2, this.bn2, y, null, true);
    return convBn(this.conv3, this.bn3, y, shortcut, true);
  }
}

/** Options of {@link ResNetBase}. */
export interface ResNetBaseOptions extends InitOptions {
  /** Bottleneck widths per stage; given, every block is a {@link BottleneckResidualBlock}. */
  bottlenecks?: readonly number[] | null;
  /** Input channels; default 3. */
  imgChannels?: number;
  /** Stem convolution's kernel size (padding `k // 2`); default 7. */
  firstKernelSize?: number;
  /** Stem convolution's stride; default 2, as the seed. The paper's CIFAR network uses 1. */
  firstStride?: number;
  /**
   * Stride of the first block of each stage. Without it, the seed's rule: stride 2 in the very
   * first block only. The paper's CIFAR layout is `[1, 2, 2]`.
   */
  stageStrides?: readonly number[] | null;
  /** A ReLU after the stem's batch norm, as in the paper (the seed has none); adds no keys. */
  stemActivation?: boolean;
}

/**
 * The ResNet trunk: stem convolution and batch norm, then every stage's blocks in one
 * `nn.Sequential` named `blocks`, then global average pooling: `[N, imgChannels, H, W]` →
 * `[N, nChannels.at(-1)]`. Stack an `nn.Linear` for classification.
 *
 * @throws {RangeError} when the lists' lengths differ or hold non-positive values.
 * @example
 * ```ts
 * import { initGPU, nn, ResNetBase, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const base = new ResNetBase([1, 1], [8, 16], { firstKernelSize: 3, seed: 0 });
 * const model = new nn.Sequential(base, new nn.Linear(16, 10));
 * console.log([...model.stateDict().keys()][0]); // "0.conv.weight"
 * console.log(model.forward(Tensor.randn([2, 3, 16, 16], { seed: 1 })).shape); // [2, 10]
 * ```
 */
export class ResNetBase extends Module {
  /** Stem or projection convolution. */
  readonly conv: Conv2d;
  /** Batch norm after `conv`. */
  readonly bn: BatchNorm2d;
  /** Every residual block, numbered from 0. */
  readonly blocks: Sequential;
  /** Whether a ReLU follows the stem. */
  readonly stemActivation: boolean;

  /** `nBlocks[i]` blocks of `nChannels[i]` channels in stage i. */
  constructor(
    nBlocks: readonly number[],
    nChannels: readonly number[],
    options: ResNetBaseOptions = {},
  ) {
    super();
    if (!Array.isArray(nBlocks) || !Array.isArray(nChannels) || nBlocks.length === 0) {
      throw new TypeError(
        "ResNetBase: nBlocks and nChannels must be non-empty arrays of numbers, e.g. [3, 3, 3] " +
          "and [16, 32, 64]",
      );
    }
    if (nBlocks.length !== nChannels.length) {
      throw new RangeError(
        `ResNetBase: nBlocks has ${nBlocks.length} stages but nChannels has ${nChannels.length}`,
      );
    }
    nBlocks.forEach((n) => positiveInt("ResNetBase", "each nBlocks entry", n));
    nChannels.forEach((c) => positiveInt("ResNetBase", "each nChannels entry", c));
    const { bottlenecks, stageStrides } = options;
    if (bottlenecks && bottlenecks.length !== nChannels.length) {
      throw new RangeError(
        `ResNetBase: bottlenecks has ${bottlenecks.length} entries, expected one per stage ` +
          `(${nChannels.length})`,
      );
    }
    bottlenecks?.forEach((b) => positiveInt("ResNetBase", "each bottlenecks entry", b));
    if (stageStrides && stageStrides.length !== nChannels.length) {
      throw new RangeError(
        `ResNetBase: stageStrides has ${stageStrides.length} entries, expected one per stage ` +
          `(${nChannels.length})`,
      );
    }
    stageStrides?.forEach((s) => positiveInt("ResNetBase", "each stageStrides entry", s));
    const generator = generatorFor(options);
    const imgChannels = options.imgChannels ?? 3;
    const k = options.firstKernelSize ?? 7;
    positiveInt("ResNetBase", "firstKernelSize", k);
    this.conv = this.registerModule(
      "conv",
      new Conv2d(imgChannels, nChannels[0], k, {
        stride: options.firstStride ?? 2,
        padding: Math.floor(k / 2),
        generator,
      }),
    );
    this.bn = this.registerModule("bn", new BatchNorm2d(nChannels[0]));
    this.stemActivation = options.stemActivation ?? false;
    const blocks: Module[] = [];
    let previous = nChannels[0];
    nChannels.forEach((channels, i) => {
      const stride = stageStrides ? stageStrides[i] : blocks.length === 0 ? 2 : 1;
      for (let j = 0; j < nBlocks[i]; j++) {
        const inChannels = j === 0 ? previous : channels;
        const s = j === 0 ? stride : 1;
        blocks.push(
          bottlenecks
            ? new BottleneckResidualBlock(inChannels, bottlenecks[i], channels, s, { generator })
            : new ResidualBlock(inChannels, channels, s, { generator }),
        );
      }
      previous = channels;
    });
    this.blocks = this.registerModule("blocks", new Sequential(...blocks));
  }

  /** `[N, imgChannels, H, W]` → `[N, C]`, C the last stage's channels. */
  forward(x: Tensor): Tensor {
    const y = convBn(this.conv, this.bn, x, null, this.stemActivation);
    return globalAvgPool2d(this.blocks.forward(y));
  }
}

/** Options of {@link resnet}. */
export interface ResNetOptions extends InitOptions {
  /** Number of classes of the final linear layer; default 10 (CIFAR-10). */
  numClasses?: number;
}

/**
 * The paper's CIFAR ResNet of `depth` = 6n+2 layers (20, 32, 44, 56, 110, …): a 3x3 stem with
 * stride 1 and ReLU, three stages of n basic blocks with 16/32/64 channels at strides 1/2/2
 * (projection shortcuts), global average pooling and a linear layer, as
 * `nn.Sequential(ResNetBase, nn.Linear(64, numClasses))`.
 *
 * @throws {RangeError} when `depth` is not 6n+2 with n >= 1.
 * @example
 * ```ts
 * import { initGPU, resnet } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet(20, { seed: 0 });
 * const count = model.parameters().reduce((s, p) => s + p.size, 0);
 * console.log(count); // 272474
 * ```
 */
export function resnet(depth: number, options: ResNetOptions = {}): Sequential {
  if (!Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) {
    throw new RangeError(
      `resnet(depth): depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, …), got ${depth}`,
    );
  }
  const n = (depth - 2) / 6;
  const numClasses = positiveInt("resnet", "numClasses", options.numClasses ?? 10);
  const generator = generatorFor(options);
  const base = new ResNetBase([n, n, n], [16, 32, 64], {
    firstKernelSize: 3,
    firstStride: 1,
    stageStrides: [1, 2, 2],
    stemActivation: true,
    generator,
  });
  return new Sequential(base, new Linear(64, numClasses, { generator }));
}
