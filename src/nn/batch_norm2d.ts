import { batchNorm2d, runningStatistics } from "../ops/batch_norm.ts";
import { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";
import { checkInteger } from "../ops/_check.ts";

/**
 * What {@link BatchNorm2d.forward} may apply after the normalization, in the same pass: the
 * residual addition and the ReLU that end a ResNet block (`relu(bn(x) + residual)`).
 */
export interface BatchNorm2dForwardOptions {
  /** Added after the normalization, `[N, C, H, W]`; default none. */
  residual?: Tensor | null;
  /** Whether a ReLU comes last; default false. */
  relu?: boolean;
}

/** Options of {@link BatchNorm2d}. */
export interface BatchNorm2dLayerOptions {
  /** Added to the variance; default 1e-5. */
  eps?: number;
  /** Weight of the new batch in the running statistics; default 0.1. */
  momentum?: number;
  /** Learned `weight` and `bias`; default true. */
  affine?: boolean;
  /** Keep running statistics for evaluation; default true. */
  trackRunningStats?: boolean;
}

/**
 * Batch normalization over `[N, C, H, W]` like `torch.nn.BatchNorm2d`: in training mode it
 * normalizes with the batch's mean and biased variance and updates `running_mean`,
 * `running_var` (unbiased) and `num_batches_tracked` on the GPU; in eval mode it uses the running
 * statistics. `forward(x, { residual, relu })` also adds a residual and applies a ReLU in the
 * same pass, which the ResNet blocks ask for when the layers after the batch norm are an
 * unmodified `nn.ReLU` and the addition.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const bn = new nn.BatchNorm2d(3);
 * const y = bn.forward(Tensor.randn([4, 3, 8, 8], { seed: 0 }));
 * console.log(await bn.runningMean!.toArray());
 * ```
 */
export class BatchNorm2d extends Module {
  /** Channels C. */
  readonly numFeatures: number;
  /** Added to the variance before the square root. */
  readonly eps: number;
  /** Weight of each new batch in the running statistics. */
  readonly momentum: number;
  /** Scale `[C]` (ones), or null without affine. */
  readonly weight: Tensor | null;
  /** Shift `[C]` (zeros), or null without affine. */
  readonly bias: Tensor | null;
  /** Running mean `[C]`. */
  readonly runningMean: Tensor | null;
  /** Running (unbiased) variance `[C]`. */
  readonly runningVar: Tensor | null;
  /** Number of training batches seen, shape `[]`. */
  readonly numBatchesTracked: Tensor | null;

  /** Batch norm over `numFeatures` channels. */
  constructor(numFeatures: number, options: BatchNorm2dLayerOptions = {}) {
    super();
    this.numFeatures = checkInteger("BatchNorm2d", "numFeatures", numFeatures, 1);
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    if (!(this.eps > 0)) throw new RangeError(`BatchNorm2d: eps must be > 0, got ${this.eps}`);
    if (!(this.momentum >= 0 && this.momentum <= 1)) {
      throw new RangeError(`BatchNorm2d: momentum must be in [0, 1], got ${this.momentum}`);
    }
    const affine = options.affine ?? true;
    const track = options.trackRunningStats ?? true;
    this.weight = this.registerParameter("weight", affine ? Tensor.ones([numFeatures]) : null);
    this.bias = this.registerParameter("bias", affine ? Tensor.zeros([numFeatures]) : null);
    // Slices of one buffer, which the software family's training pass binds as one range (its
    // storage bindings would not fit with three).
    const running = track ? runningStatistics(numFeatures) : null;
    this.runningMean = this.registerBuffer("running_mean", running?.runningMean ?? null);
    this.runningVar = this.registerBuffer("running_var", running?.runningVar ?? null);
    this.numBatchesTracked = this.registerBuffer(
      "num_batches_tracked",
      running?.numBatchesTracked ?? null,
    );
  }

  /** `[N, C, H, W]` → `[N, C, H, W]`, then `+ options.residual` and a ReLU when asked. */
  forward(input: Tensor, options: BatchNorm2dForwardOptions = {}): Tensor {
    const useBatchStats = this.training || !this.runningMean;
    return batchNorm2d(input, {
      weight: this.weight,
      bias: this.bias,
      runningMean: this.runningMean,
      runningVar: this.runningVar,
      numBatchesTracked: this.training ? this.numBatchesTracked : null,
      training: useBatchStats,
      momentum: this.momentum,
      eps: this.eps,
      residual: options.residual,
      relu: options.relu,
    });
  }

  /** `16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True`, as PyTorch. */
  override extraRepr(): string {
    return `${this.numFeatures}, eps=${pythonFloat(this.eps)}, momentum=${
      pythonFloat(this.momentum)
    }, ` +
      `affine=${this.weight ? "True" : "False"}, ` +
      `track_running_stats=${this.runningMean ? "True" : "False"}`;
  }
}

/** Formats a number as Python's `repr(float)` does, for PyTorch-identical module reprs. */
function pythonFloat(x: number): string {
  const exponent = x === 0 ? 0 : Math.floor(Math.log10(Math.abs(x)));
  if (exponent < -4 || exponent >= 16) {
    return x.toExponential().replace(/e([+-])(\d)$/, "e$10$2");
  }
  return Number.isInteger(x) ? x.toFixed(1) : String(x);
}
