/**
 * Reductions: `sum` and `mean` over any subset of dimensions, with PyTorch's `dim`/`keepdim`
 * semantics.
 *
 * @module
 */
import sumDimsSource from "../../kernels/sum_dims.wgsl" with { type: "text" };
import broadcastDimsSource from "../../kernels/broadcast_dims.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { checkBoolean, checkOptions, checkTensor, describe } from "./_check.ts";

const SUM_DIMS = kernel("sum_dims", sumDimsSource, [
  "count",
  "splits",
  "chunk",
  "rcount",
  "nk",
  "nr",
  "ksize",
  "kstride",
  "rsize",
  "rstride",
  "scale",
]);
const BROADCAST_DIMS = kernel("broadcast_dims", broadcastDimsSource, [
  "count",
  "ndim",
  "size",
  "gstride",
  "scale",
]);

/** The kernels describe a tensor by at most this many merged kept and reduced dimensions. */
const MAX_RANK = 8;
/** Below this many reduced elements per output, one pass is cheaper than splitting. */
const MIN_SPLIT_REDUCE = 1024;
/** Reduced elements each invocation of a partial pass sums (at least). */
const SPLIT_CHUNK = 256;
/** Invocations a split reduction aims for, enough to fill a GPU. */
const TARGET_INVOCATIONS = 16384;

/** Options of {@link sum} and {@link mean}. */
export interface ReduceOptions {
  /** Keep each reduced dimension with size 1, like PyTorch's `keepdim`; default false. */
  keepDim?: boolean;
}

/** A merged run of neighbouring dimensions: its element count and the stride of its innermost. */
interface Group {
  size: number;
  stride: number;
  reduced: boolean;
}

/**
 * Merges neighbouring dimensions of a contiguous `shape` that are both kept or both reduced, and
 * drops size-1 dimensions (they change no offset). Outermost first.
 */
function mergeDims(shape: readonly number[], reduced: readonly boolean[]): Group[] {
  const groups: Group[] = [];
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const size = shape[d];
    if (size !== 1) {
      const inner = groups[0];
      if (inner && inner.reduced === reduced[d]) inner.size *= size;
      else groups.unshift({ size, stride, reduced: reduced[d] });
    }
    stride *= size;
  }
  return groups;
}

/** Four u32 words per vec4u, eight entries innermost first, padded with `fill`. */
function vec8(values: readonly number[], fill: number): number[] {
  const out = new Array<number>(8).fill(fill);
  values.forEach((v, i) => out[i] = v);
  return out;
}

function product(values: readonly number[]): number {
  return values.reduce((p, v) => p * v, 1);
}

/** Chooses how many partial sums per output element a pass should make (1: finish now). */
function splitsFor(count: number, total: number): number {
  if (total <= MIN_SPLIT_REDUCE || count >= TARGET_INVOCATIONS) return 1;
  const splits = Math.min(Math.ceil(TARGET_INVOCATIONS / count), Math.ceil(total / SPLIT_CHUNK));
  return Math.max(1, splits);
}

/**
 * Encodes `out = scale * sum of x over the dimensions marked in reduced`; `out` holds the kept
 * dimensions' elements in row-major order. Large reductions run as several passes of partial sums.
 */
function encodeSum(x: Tensor, reduced: readonly boolean[], out: Tensor, scale: number): void {
  const groups = mergeDims(x.shape, reduced);
  let kept = groups.filter((g) => !g.reduced).reverse();
  let red = groups.filter((g) => g.reduced).reverse();
  const count = product(kept.map((g) => g.size));
  if (count === 0) return;
  let total = product(red.map((g) => g.size));
  let source = x;
  let partial: Tensor | null = null;
  for (;;) {
    let splits = splitsFor(count, total);
    const chunk = splits > 1 ? Math.ceil(total / splits) : Math.max(total, 1);
    splits = splits > 1 ? Math.ceil(total / chunk) : 1;
    const target = splits > 1 ? Tensor.empty([count * splits]) : out;
    // The kernel reads the innermost reduced size even when nothing is reduced.
    const redSizes = red.length > 0 ? red.map((g) => g.size) : [1];
    const redStrides = red.length > 0 ? red.map((g) => g.stride) : [0];
    dispatch(SUM_DIMS, {
      buffers: [source.binding, target.binding],
      params: {
        count,
        splits,
        chunk,
        rcount: total,
        nk: kept.length,
        nr: redSizes.length,
        ksize: vec8(kept.map((g) => g.size), 1),
        kstride: vec8(kept.map((g) => g.stride), 0),
        rsize: vec8(redSizes, 1),
        rstride: vec8(redStrides, 0),
        scale: splits > 1 ? 1 : scale,
      },
      workgroups: grid1d(count * splits, 64),
    });
    partial?.dispose();
    if (splits === 1) return;
    // The partial sums form [count, splits]: reduce their last dimension next.
    partial = source = target;
    kept = count > 1 ? [{ size: count, stride: splits, reduced: false }] : [];
    red = [{ size: splits, stride: 1, reduced: true }];
    total = splits;
  }
}

/** Encodes `out = scale * g` spread over x's reduced dimensions (the backward of a reduction). */
function encodeBroadcast(g: Tensor, reduced: readonly boolean[], out: Tensor, scale: number) {
  const groups = mergeDims(out.shape, reduced).reverse();
  const gStrides: number[] = [];
  let stride = 1;
  for (const group of groups) {
    gStrides.push(group.reduced ? 0 : stride);
    if (!group.reduced) stride *= group.size;
  }
  dispatch(BROADCAST_DIMS, {
    buffers: [g.binding, out.binding],
    params: {
      count: out.size,
      ndim: groups.length,
      size: vec8(groups.map((g) => g.size), 1),
      gstride: vec8(gStrides, 0),
      scale,
    },
    workgroups: grid1d(out.size, 256),
  });
}

/** Validates `dims` for `x` and marks the reduced dimensions (all when `dims` is omitted). */
function reducedMask(op: string, x: Tensor, dims: unknown): boolean[] {
  checkTensor(op, "x", x);
  if (x.ndim > MAX_RANK) {
    throw new RangeError(
      `${op}: x must have at most ${MAX_RANK} dimensions, got ${formatShape(x.shape)}`,
    );
  }
  const mask = new Array<boolean>(x.ndim).fill(false);
  if (dims === undefined || dims === null) return mask.fill(true);
  let list: readonly unknown[];
  if (typeof dims === "number") list = [dims];
  else if (Array.isArray(dims)) list = dims;
  else {
    throw new TypeError(
      `${op}: dims must be a number or an array of numbers, got ${describe(dims)}`,
    );
  }
  // Like PyTorch 1.13: an empty list reduces every dimension.
  if (list.length === 0) return mask.fill(true);
  // PyTorch lets a 0-d tensor be reduced over dim 0 or -1.
  const rank = Math.max(x.ndim, 1);
  for (const d of list) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < -rank || d >= rank) {
      throw new RangeError(
        `${op}: dims must be integers in [${-rank}, ${rank - 1}] for a tensor of shape ` +
          `${formatShape(x.shape)}, got ${JSON.stringify(dims)}`,
      );
    }
    const dim = d < 0 ? d + rank : d;
    if (x.ndim === 0) continue;
    if (mask[dim]) {
      throw new RangeError(
        `${op}: dimension ${dim} appears more than once in dims ${JSON.stringify(dims)}`,
      );
    }
    mask[dim] = true;
  }
  return mask;
}

function keepDimOption(op: string, options: unknown): boolean {
  if (options === undefined) return false;
  checkOptions(op, options, "{ keepDim: true }");
  return checkBoolean(op, "options.keepDim", options.keepDim ?? false);
}

/**
 * Encodes `out` = the sum of `x` over the dimensions marked in `reduced`, without recording it
 * (a backward's sum into the tensor its gradient goes to); returns `out`. Internal: not exported
 * by mod.ts.
 */
export function sumInto(x: Tensor, reduced: readonly boolean[], out: Tensor): Tensor {
  encodeSum(x, reduced, out, 1);
  return out;
}

function reduce(
  op: "sum" | "mean",
  x: Tensor,
  dims: number | readonly number[] | undefined,
  options: ReduceOptions | undefined,
): Tensor {
  const mask = reducedMask(`${op}()`, x, dims);
  const keepDim = keepDimOption(`${op}()`, options);
  const shape = keepDim
    ? x.shape.map((d, i) => mask[i] ? 1 : d)
    : x.shape.filter((_, i) => !mask[i]);
  const reducedCount = product(x.shape.filter((_, i) => mask[i]));
  // mean over no elements is 0 * Infinity = NaN, as in PyTorch.
  const scale = op === "mean" ? 1 / reducedCount : 1;
  const out = Tensor.empty(shape);
  encodeSum(x, mask, out, scale);
  // Saves nothing but the mask and scale: gx is gy spread over the reduced dimensions.
  if (shouldRecord(x)) {
    record(out, {
      name: op,
      inputs: [x],
      backward: (gy) => [reduceBackward(gy, x.shape, mask, scale)],
    });
  }
  return out;
}

function reduceBackward(
  gy: Tensor,
  shape: readonly number[],
  mask: readonly boolean[],
  scale: number,
): Tensor {
  const gx = Tensor.empty(shape);
  encodeBroadcast(gy, mask, gx, scale);
  return gx;
}

/**
 * Sum over `dims` (a dimension or a list; negative counts from the end; omitted or `[]`: all, as
 * in PyTorch 1.13, giving shape `[]`), like `torch.sum(x, dim, keepdim)`. E.g. `[N, C, H, W]`
 * summed over `[0, 2, 3]` gives `[C]`, or `[1, C, 1, 1]` with `keepDim`. Tensors of rank up to 8.
 *
 * @throws {TypeError} when `x` is not a Tensor or `dims`/`options` have the wrong type.
 * @throws {RangeError} when a dim is out of range or repeated, or `x` has more than 8 dims.
 * @example
 * ```ts
 * import { initGPU, sum, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
 * console.log(await sum(x).item());          // 21
 * console.log(await sum(x, 0).toArray());    // Float32Array [5, 7, 9]
 * console.log(sum(x, -1, { keepDim: true }).shape); // [2, 1]
 * ```
 */
export function sum(
  x: Tensor,
  dims?: number | readonly number[],
  options?: ReduceOptions,
): Tensor {
  return reduce("sum", x, dims, options);
}

/**
 * Mean over `dims` (a dimension or a list; negative counts from the end; omitted or `[]`: all,
 * giving shape `[]`), like `torch.mean(x, dim, keepdim)`. E.g. `[N, C]` averaged over `1` gives
 * `[N]`. The mean of no elements is NaN.
 *
 * @throws {TypeError} when `x` is not a Tensor or `dims`/`options` have the wrong type.
 * @throws {RangeError} when a dim is out of range or repeated, or `x` has more than 8 dims.
 * @example
 * ```ts
 * import { initGPU, mean, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
 * console.log(await mean(x).item());       // 3.5
 * console.log(await mean(x, 1).toArray()); // Float32Array [2, 5]
 * ```
 */
export function mean(
  x: Tensor,
  dims?: number | readonly number[],
  options?: ReduceOptions,
): Tensor {
  return reduce("mean", x, dims, options);
}
