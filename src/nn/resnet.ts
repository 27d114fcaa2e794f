/**
 * The ResNet of labml.ai's annotated implementation (He et al., 2015), with the same classes,
 * child names and therefore the same state-dict keys as its PyTorch code, plus the paper's CIFAR
 * networks as presets.
 *
 * Every block runs its children with `call` (forward hooks included) and looks them up by name, so
 * a child replaced with `setSubmodule`, a subclass or a hooked layer runs as written. Where a
 * batch norm is an unmodified `nn.BatchNorm2d` without hooks, the block passes it the residual
 * addition and, when the next child is an unmodified `nn.ReLU` without hooks, the ReLU, which it
 * then applies in the same pass (`bn.call(z, { residual, relu: true })`). In eval mode an
 * unmodified, unhooked `nn.Conv2d` and the `nn.BatchNorm2d` after it run as one op,
 * `conv2dBatchNormEval` (the batch norm folded into the convolution's output pass when no gradient
 * is recorded), as `fuseConvBn(model)` makes explicit.
 *
 * @module
 */
import { globalAvgPool2d } from "../ops/pool.ts";
import type { Tensor } from "../tensor.ts";
import { BatchNorm2d } from "./batch_norm2d.ts";
import { Conv2d } from "./conv2d.ts";
import { ConvBn2d } from "./conv_bn2d.ts";
import { generatorFor, type InitOptions } from "./init.ts";
import { Identity, ReLU } from "./activation.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";
import { Sequential } from "./sequential.ts";
import { checkInteger } from "../ops/_check.ts";
import { convBnEval, normThen, runsAs } from "./_fusion.ts";

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
  /** A projection from `inChannels` to `outChannels` with `stride`. */
  constructor(inChannels: number, outChannels: number, stride: number, options: InitOptions = {}) {
    super();
    const generator = generatorFor(options);
    this.registerModule("conv", new Conv2d(inChannels, outChannels, 1, { stride, generator }));
    this.registerModule("bn", new BatchNorm2d(outChannels));
  }

  /** The 1x1 convolution (an `nn.Conv2d` unless replaced). */
  get conv(): Module {
    return this.getSubmodule("conv");
  }

  /** The batch norm after `conv` (an `nn.BatchNorm2d` unless replaced). */
  get bn(): Module {
    return this.getSubmodule("bn");
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`: `bn(conv(x))`. */
  forward(x: Tensor): Tensor {
    return convNormAct(this.conv, this.bn, null, x, null);
  }
}

/**
 * `act(norm(conv(x)) + residual)` through the children's `call`s; `act` null: a functional ReLU
 * when `relu` (the paper's stem, which has no ReLU child). The residual, and the ReLU when `act`
 * is an unmodified `nn.ReLU` without hooks, go to the layer that applies them in its own pass:
 * the batch norm (see `normThen`); in eval mode the convolution and batch norm together (see
 * `convBnEval`); or, after `fuseConvBn` made the convolution a `ConvBn2d` and the batch norm an
 * `Identity`, the `ConvBn2d`. Internal (torchvision's blocks use it too): not exported by mod.ts.
 */
export function convNormAct(
  conv: Module,
  norm: Module,
  act: Module | null,
  x: Tensor,
  residual: Tensor | null,
  relu = false,
): Tensor {
  const fuseRelu = act ? runsAs(act, ReLU.prototype.forward) : relu;
  let y = runsAs(norm, Identity.prototype.forward) && runsAs(conv, ConvBn2d.prototype.forward)
    ? (conv as ConvBn2d).call(x, { residual, relu: fuseRelu })
    : convBnEval(conv, norm, x, residual, fuseRelu);
  if (!y) {
    const z = conv.call(x);
    y = normThen(norm, z, residual, fuseRelu);
    // Nothing else holds the convolution's output when neither layer is hooked or replaced.
    if (
      !y.gradFn && runsAs(conv, Conv2d.prototype.forward) &&
      runsAs(norm, BatchNorm2d.prototype.forward)
    ) {
      z.dispose();
    }
  }
  return act && !fuseRelu ? act.call(y) : y;
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
 * The base of {@link ResidualBlock} and {@link BottleneckResidualBlock}: the children both have,
 * as PyTorch's attributes (`block.conv1`, …), looked up by name each time, so that a child
 * replaced with `setSubmodule` is the one returned (and the one the block runs).
 *
 * @example
 * ```ts
 * import { initGPU, nn, ResidualBlock, type ResidualBlockBase } from "@resnet/webgpu";
 * await initGPU();
 * const block: ResidualBlockBase = new ResidualBlock(8, 8, 1);
 * block.setSubmodule("act1", new nn.Identity());
 * console.log(block.act1.toString()); // "Identity()"
 * ```
 */
export abstract class ResidualBlockBase extends Module {
  /** First convolution (an `nn.Conv2d` unless replaced). */
  get conv1(): Module {
    return this.getSubmodule("conv1");
  }

  /** Batch norm after `conv1` (an `nn.BatchNorm2d` unless replaced). */
  get bn1(): Module {
    return this.getSubmodule("bn1");
  }

  /** ReLU after `bn1` (an `nn.ReLU` unless replaced). */
  get act1(): Module {
    return this.getSubmodule("act1");
  }

  /** Second convolution (an `nn.Conv2d` unless replaced). */
  get conv2(): Module {
    return this.getSubmodule("conv2");
  }

  /** Batch norm after `conv2` (an `nn.BatchNorm2d` unless replaced). */
  get bn2(): Module {
    return this.getSubmodule("bn2");
  }

  /**
   * The ReLU after `bn2` (bottleneck) or after the addition (basic block) (an `nn.ReLU` unless
   * replaced).
   */
  get act2(): Module {
    return this.getSubmodule("act2");
  }

  /** `ShortcutProjection` when the shape changes, else `Identity` (unless replaced). */
  get shortcut(): Module {
    return this.getSubmodule("shortcut");
  }
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
export class ResidualBlock extends ResidualBlockBase {
  /** A block from `inChannels` to `outChannels` whose first convolution has `stride`. */
  constructor(inChannels: number, outChannels: number, stride: number, options: InitOptions = {}) {
    super();
    const generator = generatorFor(options);
    this.registerModule(
      "conv1",
      new Conv2d(inChannels, outChannels, 3, { stride, padding: 1, generator }),
    );
    this.registerModule("bn1", new BatchNorm2d(outChannels));
    this.registerModule("act1", new ReLU());
    this.registerModule(
      "conv2",
      new Conv2d(outChannels, outChannels, 3, { stride: 1, padding: 1, generator }),
    );
    this.registerModule("bn2", new BatchNorm2d(outChannels));
    this.registerModule(
      "shortcut",
      shortcutFor(inChannels, outChannels, stride, { generator }),
    );
    this.registerModule("act2", new ReLU());
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const shortcut = this.shortcut.call(x);
    const y = convNormAct(this.conv1, this.bn1, this.act1, x, null);
    return convNormAct(this.conv2, this.bn2, this.act2, y, shortcut);
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
export class BottleneckResidualBlock extends ResidualBlockBase {
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
    this.registerModule(
      "conv1",
      new Conv2d(inChannels, bottleneckChannels, 1, { stride: 1, generator }),
    );
    this.registerModule("bn1", new BatchNorm2d(bottleneckChannels));
    this.registerModule("act1", new ReLU());
    this.registerModule(
      "conv2",
      new Conv2d(bottleneckChannels, bottleneckChannels, 3, { stride, padding: 1, generator }),
    );
    this.registerModule("bn2", new BatchNorm2d(bottleneckChannels));
    this.registerModule("act2", new ReLU());
    this.registerModule(
      "conv3",
      new Conv2d(bottleneckChannels, outChannels, 1, { stride: 1, generator }),
    );
    this.registerModule("bn3", new BatchNorm2d(outChannels));
    this.registerModule(
      "shortcut",
      shortcutFor(inChannels, outChannels, stride, { generator }),
    );
    this.registerModule("act3", new ReLU());
  }

  /** Third (1x1) convolution (an `nn.Conv2d` unless replaced). */
  get conv3(): Module {
    return this.getSubmodule("conv3");
  }

  /** Batch norm after `conv3` (an `nn.BatchNorm2d` unless replaced). */
  get bn3(): Module {
    return this.getSubmodule("bn3");
  }

  /** ReLU after the addition (an `nn.ReLU` unless replaced). */
  get act3(): Module {
    return this.getSubmodule("act3");
  }

  /** `[N, in, H, W]` → `[N, out, H/stride, W/stride]`. */
  forward(x: Tensor): Tensor {
    const shortcut = this.shortcut.call(x);
    let y = convNormAct(this.conv1, this.bn1, this.act1, x, null);
    y = convNormAct(this.conv2, this.bn2, this.act2, y, null);
    return convNormAct(this.conv3, this.bn3, this.act3, y, shortcut);
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
    nBlocks.forEach((n) => checkInteger("ResNetBase", "each nBlocks entry", n, 1));
    nChannels.forEach((c) => checkInteger("ResNetBase", "each nChannels entry", c, 1));
    const { bottlenecks, stageStrides } = options;
    if (bottlenecks && bottlenecks.length !== nChannels.length) {
      throw new RangeError(
        `ResNetBase: bottlenecks has ${bottlenecks.length} entries, expected one per stage ` +
          `(${nChannels.length})`,
      );
    }
    bottlenecks?.forEach((b) => checkInteger("ResNetBase", "each bottlenecks entry", b, 1));
    if (stageStrides && stageStrides.length !== nChannels.length) {
      throw new RangeError(
        `ResNetBase: stageStrides has ${stageStrides.length} entries, expected one per stage ` +
          `(${nChannels.length})`,
      );
    }
    stageStrides?.forEach((s) => checkInteger("ResNetBase", "each stageStrides entry", s, 1));
    const generator = generatorFor(options);
    const imgChannels = options.imgChannels ?? 3;
    const k = options.firstKernelSize ?? 7;
    checkInteger("ResNetBase", "firstKernelSize", k, 1);
    this.registerModule(
      "conv",
      new Conv2d(imgChannels, nChannels[0], k, {
        stride: options.firstStride ?? 2,
        padding: Math.floor(k / 2),
        generator,
      }),
    );
    this.registerModule("bn", new BatchNorm2d(nChannels[0]));
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
    this.registerModule("blocks", new Sequential(...blocks));
  }

  /** Stem convolution (an `nn.Conv2d` unless replaced). */
  get conv(): Module {
    return this.getSubmodule("conv");
  }

  /** Batch norm after `conv` (an `nn.BatchNorm2d` unless replaced). */
  get bn(): Module {
    return this.getSubmodule("bn");
  }

  /** Every residual block, numbered from 0 (an `nn.Sequential` unless replaced). */
  get blocks(): Module {
    return this.getSubmodule("blocks");
  }

  /** `[N, imgChannels, H, W]` → `[N, C]`, C the last stage's channels. */
  forward(x: Tensor): Tensor {
    const y = convNormAct(this.conv, this.bn, null, x, null, this.stemActivation);
    return globalAvgPool2d(this.blocks.call(y));
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
  const numClasses = checkInteger("resnet", "numClasses", options.numClasses ?? 10, 1);
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

/**
 * Fuses each convolution with the batch norm after it for inference, in place, as PyTorch's
 * `torch.ao.quantization.fuse_modules` does with `fuse_conv_bn_eval`: in every `ResNetBase`,
 * `ShortcutProjection`, `ResidualBlock`, `BottleneckResidualBlock` and `nn.Sequential`, a child
 * `nn.Conv2d` registered right before a child `nn.BatchNorm2d` (both unmodified and without
 * hooks) becomes an `nn.ConvBn2d` of the two, and the batch norm's slot an `nn.Identity`. In eval
 * mode each such pair then runs as one kernel (`conv2dBatchNormEval`) that also applies the
 * block's residual and ReLU; in training mode the pair runs as before. The state-dict keys of a
 * fused pair are the `ConvBn2d`'s (`conv1.0.weight`, `conv1.1.running_mean`, …), as in PyTorch.
 *
 * @returns `model`, fused.
 * @example
 * ```ts
 * import { fuseConvBn, initGPU, noGrad, resnet, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const model = fuseConvBn(resnet(8, { seed: 0 }).eval());
 * console.log(model.getSubmodule("0.blocks.0.conv1").constructor.name); // "ConvBn2d"
 * const logits = noGrad(() => model.forward(Tensor.randn([2, 3, 16, 16], { seed: 1 })));
 * console.log(logits.shape); // [2, 10]
 * ```
 */
export function fuseConvBn<M extends Module>(model: M): M {
  for (const [path, parent] of model.namedModules()) {
    const chained = parent instanceof ResNetBase || parent instanceof ShortcutProjection ||
      parent instanceof ResidualBlock || parent instanceof BottleneckResidualBlock ||
      (parent instanceof Sequential && !(parent instanceof ConvBn2d));
    if (!chained) continue;
    const children = parent.namedChildren();
    for (let i = 0; i + 1 < children.length; i++) {
      const [convName, conv] = children[i];
      const [bnName, bn] = children[i + 1];
      if (
        conv instanceof Conv2d && runsAs(conv, Conv2d.prototype.forward) &&
        bn instanceof BatchNorm2d && runsAs(bn, BatchNorm2d.prototype.forward)
      ) {
        const fused = new ConvBn2d(conv, bn);
        fused.training = bn.training;
        const prefix = path ? `${path}.` : "";
        model.setSubmodule(prefix + convName, fused);
        model.setSubmodule(prefix + bnName, new Identity());
        i++;
      }
    }
  }
  return model;
}
