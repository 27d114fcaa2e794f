/**
 * Classification loss and accuracy: `crossEntropy` (PyTorch's `F.cross_entropy` with class-index
 * targets) and `correctCount`.
 *
 * @module
 */
import crossEntropyForwardSource from "../../kernels/cross_entropy_forward.wgsl" with {
  type: "text",
};
import crossEntropyBackwardSource from "../../kernels/cross_entropy_backward.wgsl" with {
  type: "text",
};
import argmaxCorrectSource from "../../kernels/argmax_correct.wgsl" with { type: "text" };
import { noGrad } from "../autograd.ts";
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { checkOptions, checkTensor, describe } from "./_check.ts";
import { mean, sum } from "./reduce.ts";

const CE_FORWARD = kernel("cross_entropy_forward", crossEntropyForwardSource, [
  "N",
  "C",
  "nan_bits",
  "smoothing",
]);
const CE_BACKWARD = kernel("cross_entropy_backward", crossEntropyBackwardSource, [
  "N",
  "C",
  "per_row",
  "nan_bits",
  "scale",
  "smoothing",
]);
const ARGMAX_CORRECT = kernel("argmax_correct", argmaxCorrectSource, ["N", "C"]);

/** A quiet NaN's bits, for kernels to write where a target is invalid. */
const NAN_BITS = 0x7fc00000;

/** Options of {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /**
   * `"mean"` (default): the average over the N rows, shape `[]`; `"sum"`: their sum, shape `[]`;
   * `"none"`: one loss per row, shape `[N]`.
   */
  reduction?: "mean" | "sum" | "none";
  /**
   * Label smoothing `ε` in `[0, 1]`, as PyTorch's `label_smoothing`: the target becomes
   * `(1 - ε) * onehot + ε / C`, so a row's loss is `(1 - ε) * (-log p[t]) + ε * mean_c(-log p[c])`.
   * Default 0 (plain cross-entropy).
   */
  labelSmoothing?: number;
}

function labelSmoothingOption(options: CrossEntropyOptions | undefined): number {
  const eps = options?.labelSmoothing ?? 0;
  if (typeof eps !== "number" || !(eps >= 0 && eps <= 1)) {
    throw new RangeError(
      `crossEntropy(): options.labelSmoothing must be a number in [0, 1], got ${String(eps)}`,
    );
  }
  return eps;
}

/**
 * Checks `logits` `[N, C]` and the targets, and returns the targets as a float tensor of class
 * indices plus whether this call created it (and so must dispose it).
 */
function prepare(
  op: string,
  logits: Tensor,
  targets: Int32Array | Tensor,
): { n: number; c: number; t: Tensor; owned: boolean } {
  checkTensor(op, "logits", logits);
  if (logits.ndim !== 2 || logits.shape[0] < 1 || logits.shape[1] < 1) {
    throw new RangeError(
      `${op}: logits must be [N, C] with N >= 1 and C >= 1, got ${formatShape(logits.shape)}`,
    );
  }
  const [n, c] = logits.shape;
  if (targets instanceof Tensor) {
    if (targets.ndim !== 1 || targets.shape[0] !== n) {
      throw new RangeError(
        `${op}: targets must be [N] = [${n}] for logits ${formatShape(logits.shape)}, got ` +
          formatShape(targets.shape),
      );
    }
    return { n, c, t: targets, owned: false };
  }
  if (!(targets instanceof Int32Array)) {
    throw new TypeError(
      `${op}: targets must be an Int32Array of class indices or a Tensor [N], got ` +
        describe(targets),
    );
  }
  if (targets.length !== n) {
    throw new RangeError(
      `${op}: targets must hold N = ${n} class indices (logits are ` +
        `${formatShape(logits.shape)}), got ${targets.length}`,
    );
  }
  for (let i = 0; i < n; i++) {
    if (targets[i] < 0 || targets[i] >= c) {
      throw new RangeError(
        `${op}: targets[${i}] is ${targets[i]}, outside the classes [0, ${c - 1}] of logits ` +
          formatShape(logits.shape),
      );
    }
  }
  // Class indices are exact in float32 below 2^24; the kernels convert them back with u32().
  return { n, c, t: Tensor.from(Float32Array.from(targets)), owned: true };
}

function reductionOption(options: unknown): "mean" | "sum" | "none" {
  if (options === undefined) return "mean";
  checkOptions("crossEntropy()", options, '{ reduction: "sum" }');
  const reduction = options.reduction ?? "mean";
  if (typeof reduction !== "string") {
    throw new TypeError(
      `crossEntropy(): options.reduction must be a string, got ${describe(reduction)}`,
    );
  }
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new RangeError(
      `crossEntropy(): options.reduction must be "mean", "sum" or "none", got "${reduction}"`,
    );
  }
  return reduction;
}

/**
 * Cross-entropy between `logits` `[N, C]` (unnormalised scores) and integer class `targets`,
 * computed through a stable log-softmax, like PyTorch's `F.cross_entropy(logits, targets,
 * reduction=..., label_smoothing=...)`; the mean over the N rows by default (shape `[]`). With
 * `labelSmoothing: ε`, a row's loss is `(1 - ε) * (-log p[t]) + ε * mean_c(-log p[c])`.
 *
 * `targets` is an `Int32Array` of N class indices, checked on the CPU, or a float Tensor `[N]`
 * holding class indices (already on the GPU, so it cannot be checked without a readback: a target
 * that is not an integer in `[0, C)` makes that row's loss, and hence a mean or sum, NaN).
 *
 * @throws {TypeError} when `logits` is not a Tensor or `targets` neither an Int32Array nor a
 * Tensor.
 * @throws {RangeError} when `logits` is not `[N, C]`, the targets do not hold N values, an
 * Int32Array target is outside `[0, C)` (the message names the first), the reduction is
 * unknown, or `labelSmoothing` is not in `[0, 1]`.
 * @example
 * ```ts
 * import { crossEntropy, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const logits = Tensor.from([2, 0, 0, 0, 3, 0], [2, 3], { requiresGrad: true });
 * const loss = crossEntropy(logits, new Int32Array([0, 1]));
 * loss.backward();
 * console.log(await loss.item()); // ≈ 0.1672
 * const smoothed = crossEntropy(logits, new Int32Array([0, 1]), { labelSmoothing: 0.1 });
 * console.log(await smoothed.item()); // ≈ 0.3339
 * ```
 */
export function crossEntropy(
  logits: Tensor,
  targets: Int32Array | Tensor,
  options?: CrossEntropyOptions,
): Tensor {
  const { n, c, t, owned } = prepare("crossEntropy()", logits, targets);
  const reduction = reductionOption(options);
  const smoothing = labelSmoothingOption(options);
  const losses = Tensor.empty([n]);
  const lse = Tensor.empty([n]);
  dispatch(CE_FORWARD, {
    buffers: [logits.binding, t.binding, losses.binding, lse.binding],
    params: { N: n, C: c, nan_bits: NAN_BITS, smoothing },
    workgroups: grid1d(n, 64),
  });
  let out = losses;
  if (reduction !== "none") {
    out = noGrad(() => reduction === "mean" ? mean(losses) : sum(losses));
    losses.dispose();
  }
  // Saves the input logits, and as internals the per-row log-sum-exp (and the uploaded targets):
  // gx = (softmax - (1 - ε) * onehot - ε / C) * gy (/ N for the mean).
  if (shouldRecord(logits)) {
    record(out, {
      name: "crossEntropy",
      inputs: [logits],
      internals: owned ? [lse, t] : [lse],
      backward: (gy) => {
        const gx = Tensor.empty([n, c]);
        dispatch(CE_BACKWARD, {
          buffers: [logits.binding, t.binding, lse.binding, gy.binding, gx.binding],
          params: {
            N: n,
            C: c,
            per_row: reduction === "none" ? 1 : 0,
            nan_bits: NAN_BITS,
            scale: reduction === "mean" ? 1 / n : 1,
            smoothing,
          },
          workgroups: grid1d(n * c, 256),
        });
        return [gx];
      },
    });
  } else {
    lse.dispose();
    if (owned) t.dispose();
  }
  return out;
}

/**
 * The number of rows of `logits` `[N, C]` whose arg-max (the first maximum) equals the target
 * class, as a one-element float tensor of shape `[]`, so that a training loop can accumulate
 * accuracy on the GPU and read it back once per epoch. Not recorded for autograd. `targets` as in
 * {@link crossEntropy}; an invalid Tensor target never counts as correct.
 *
 * @throws {TypeError} when `logits` is not a Tensor or `targets` neither an Int32Array nor a
 * Tensor.
 * @throws {RangeError} when `logits` is not `[N, C]`, the targets do not hold N values, or an
 * Int32Array target is outside `[0, C)`.
 * @example
 * ```ts
 * import { correctCount, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const logits = Tensor.from([2, 0, 0, 0, 3, 0], [2, 3]);
 * console.log(await correctCount(logits, new Int32Array([0, 2])).item()); // 1
 * ```
 */
export function correctCount(logits: Tensor, targets: Int32Array | Tensor): Tensor {
  const { n, c, t, owned } = prepare("correctCount()", logits, targets);
  const correct = Tensor.empty([n]);
  dispatch(ARGMAX_CORRECT, {
    buffers: [logits.binding, t.binding, correct.binding],
    params: { N: n, C: c },
    workgroups: grid1d(n, 64),
  });
  if (owned) t.dispose();
  const count = noGrad(() => sum(correct));
  correct.dispose();
  return count;
}
