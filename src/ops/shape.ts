/**
 * Shape ops: `reshape` and `flatten`. Tensors are contiguous, so both return views that share the
 * input's buffer: no kernel runs and no memory is copied.
 *
 * @module
 */
import { formatShape, record, shouldRecord, type Tensor } from "../tensor.ts";
import { checkTensor, describe } from "./_check.ts";

/** A view of `x` with `shape`, recorded on the tape under `name`. */
function view(name: string, x: Tensor, shape: readonly number[]): Tensor {
  const out = x.viewAs(shape);
  // Saves nothing: the gradient is gy viewed with x's shape.
  if (shouldRecord(x)) {
    record(out, { name, inputs: [x], backward: (gy) => [gy.viewAs(x.shape)] });
  }
  return out;
}

/**
 * The same values with another shape of the same size, like PyTorch's `x.reshape(shape)`; one
 * size may be `-1`, inferred from the others. Returns a view sharing `x`'s buffer (no copy); the
 * gradient flows back reshaped to `x`'s shape.
 *
 * @throws {TypeError} when `x` is not a Tensor or `shape` not an array.
 * @throws {RangeError} when a size is not an integer >= -1, more than one is -1, or the sizes do
 * not hold exactly `x.size` elements.
 * @example
 * ```ts
 * import { initGPU, reshape, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.zeros([2, 3, 4]);
 * console.log(reshape(x, [6, -1]).shape); // [6, 4]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor("reshape()", "x", x);
  if (!Array.isArray(shape)) {
    throw new TypeError(`reshape(): shape must be an array of sizes, got ${describe(shape)}`);
  }
  let inferred = -1;
  let known = 1;
  shape.forEach((d, i) => {
    if (!Number.isInteger(d) || d < -1) {
      throw new RangeError(
        `reshape(): sizes must be integers >= 0 or a single -1, got ${formatShape(shape)}`,
      );
    }
    if (d === -1) {
      if (inferred >= 0) {
        throw new RangeError(
          `reshape(): only one size may be -1, got ${formatShape(shape)} for a tensor of shape ` +
            formatShape(x.shape),
        );
      }
      inferred = i;
    } else {
      known *= d;
    }
  });
  const resolved = [...shape];
  if (inferred >= 0) {
    if (known === 0 || x.size % known !== 0) {
      throw new RangeError(
        `reshape(): cannot reshape ${formatShape(x.shape)} (${x.size} elements) into ` +
          formatShape(shape),
      );
    }
    resolved[inferred] = x.size / known;
  } else if (known !== x.size) {
    throw new RangeError(
      `reshape(): cannot reshape ${formatShape(x.shape)} (${x.size} elements) into ` +
        `${formatShape(shape)} (${known} elements)`,
    );
  }
  return view("reshape", x, resolved);
}

/**
 * Merges dimensions `startDim..endDim` (inclusive; negative counts from the end) into one, with
 * the semantics of PyTorch's `torch.flatten(x, startDim, endDim)` but `startDim` defaulting to 1
 * like `nn.Flatten`, so `[N, C, H, W]` becomes `[N, C * H * W]`. A 0-d tensor becomes `[1]`.
 * Returns a view sharing `x`'s buffer (no copy).
 *
 * @throws {TypeError} when `x` is not a Tensor.
 * @throws {RangeError} when a dim is not an integer in `[-rank, rank)` or `startDim` comes after
 * `endDim`.
 * @example
 * ```ts
 * import { flatten, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.zeros([2, 3, 4, 5]);
 * console.log(flatten(x).shape);       // [2, 60]
 * console.log(flatten(x, 0, 1).shape); // [6, 4, 5]
 * ```
 */
export function flatten(x: Tensor, startDim = 1, endDim = -1): Tensor {
  checkTensor("flatten()", "x", x);
  // PyTorch treats a 0-d tensor as having one dimension for the range check.
  const rank = Math.max(x.ndim, 1);
  const normalize = (d: number, name: string): number => {
    if (!Number.isInteger(d) || d < -rank || d >= rank) {
      throw new RangeError(
        `flatten(): ${name} must be an integer in [${-rank}, ${rank - 1}] for a tensor of shape ` +
          `${formatShape(x.shape)}, got ${d}`,
      );
    }
    return d < 0 ? d + rank : d;
  };
  const start = normalize(startDim, "startDim");
  const end = normalize(endDim, "endDim");
  if (start > end) {
    throw new RangeError(
      `flatten(): startDim (${startDim}) must not come after endDim (${endDim}) for shape ` +
        formatShape(x.shape),
    );
  }
  if (x.ndim === 0) return view("flatten", x, [1]);
  const merged = x.shape.slice(start, end + 1).reduce((p, d) => p * d, 1);
  const shape = [...x.shape.slice(0, start), merged, ...x.shape.slice(end + 1)];
  return view("flatten", x, shape);
}
