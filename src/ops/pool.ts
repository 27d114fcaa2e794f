/**
 * Spatial pooling of `[N, C, H, W]` tensors: max, average and global average, as PyTorch's
 * `MaxPool2d`, `AvgPool2d` and `AdaptiveAvgPool2d((1, 1))` followed by a flatten.
 *
 * @module
 */
import maxForwardSource from "../../kernels/max_pool2d_forward.wgsl" with { type: "text" };
import maxBackwardSource from "../../kernels/max_pool2d_backward.wgsl" with { type: "text" };
import avgForwardSource from "../../kernels/avg_pool2d_forward.wgsl" with { type: "text" };
import avgBackwardSource from "../../kernels/avg_pool2d_backward.wgsl" with { type: "text" };
import globalForwardSource from "../../kernels/global_avg_pool2d_forward.wgsl" with {
  type: "text",
};
import globalBackwardSource from "../../kernels/global_avg_pool2d_backward.wgsl" with {
  type: "text",
};
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { checkBoolean, checkOptions, checkTensorNd, pair } from "./_check.ts";

/** The `struct Params` of the four window kernels (filled by {@link windowArgs}). */
const WINDOW_PARAMS = [
  "count",
  "height",
  "width",
  "out_h",
  "out_w",
  "kernel_h",
  "kernel_w",
  "stride_h",
  "stride_w",
  "pad_h",
  "pad_w",
  "chunks",
] as const;
const MAX_FORWARD = kernel("max_pool2d_forward", maxForwardSource, WINDOW_PARAMS);
const MAX_FORWARD_INDICES = { ...MAX_FORWARD, entryPoint: "main_indices" };
const MAX_BACKWARD = kernel("max_pool2d_backward", maxBackwardSource, WINDOW_PARAMS);
const AVG_FORWARD = kernel("avg_pool2d_forward", avgForwardSource, WINDOW_PARAMS);
const AVG_BACKWARD = kernel("avg_pool2d_backward", avgBackwardSource, WINDOW_PARAMS);
const GLOBAL_FORWARD = kernel("global_avg_pool2d_forward", globalForwardSource, ["planes", "hw"]);
const GLOBAL_BACKWARD = kernel("global_avg_pool2d_backward", globalBackwardSource, [
  "hw",
  "chunks",
  "count",
]);

/** Arg-max offsets are stored as float32 values, exact up to 2^24. */
const MAX_PLANE = 2 ** 24;

/**
 * Window options of {@link maxPool2d} and {@link avgPool2d}; a number applies to H and W.
 *
 * @example
 * ```ts
 * import { initGPU, maxPool2d, type Pool2dOptions, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const stem: Pool2dOptions = { kernelSize: 3, stride: 2, padding: 1 };
 * console.log(maxPool2d(Tensor.randn([1, 8, 16, 16], { seed: 0 }), stem).shape); // [1, 8, 8, 8]
 * ```
 */
export interface Pool2dOptions {
  /** Window size `k` or `[kernelH, kernelW]`. */
  kernelSize: number | [number, number];
  /** Step between windows; default `kernelSize`. */
  stride?: number | [number, number];
  /** Implicit padding on each side, at most half the window; default 0. */
  padding?: number | [number, number];
}

/**
 * Options of {@link avgPool2d}.
 *
 * @example
 * ```ts
 * import { type AvgPool2dOptions, avgPool2d, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const options: AvgPool2dOptions = { kernelSize: 2, countIncludePad: false };
 * console.log(avgPool2d(Tensor.ones([1, 1, 4, 4]), options).shape); // [1, 1, 2, 2]
 * ```
 */
export interface AvgPool2dOptions extends Pool2dOptions {
  /** Divide by the whole window with its padding (true, PyTorch's default) or its valid part. */
  countIncludePad?: boolean;
}

/** A resolved pooling geometry: input [n, c, h, w], output [n, c, oh, ow]. */
interface Geometry {
  n: number;
  c: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
  kernelH: number;
  kernelW: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
}

/**
 * Max pooling of `input` `[N, C, H, W]`, as PyTorch's `MaxPool2d` (dilation 1, floor mode):
 * padding counts as -infinity, the output is `[N, C, OH, OW]` with
 * `OH = floor((H + 2 * padding - kernelSize) / stride) + 1`, and among equal values the first
 * in row-major window order is the maximum (and receives the gradient).
 *
 * @throws {RangeError} when `input` is not `[N, C, H, W]`, a size is not a positive integer,
 * padding exceeds half the window, or the output would be empty.
 * @throws {TypeError} when an option has the wrong type.
 * @example
 * ```ts
 * import { initGPU, maxPool2d, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([2, 64, 32, 32], { seed: 0 });
 * const y = maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1 });
 * console.log(y.shape); // [2, 64, 16, 16]
 * ```
 */
export function maxPool2d(input: Tensor, options: Pool2dOptions): Tensor {
  const g = geometry("maxPool2d()", input, options);
  if (g.h * g.w > MAX_PLANE) {
    throw new RangeError(
      `maxPool2d(): H * W must be at most 2^24 (arg-max offsets are float32), got input ` +
        formatShape(input.shape),
    );
  }
  const out = Tensor.empty([g.n, g.c, g.oh, g.ow]);
  const recording = shouldRecord(input);
  const indices = recording ? Tensor.empty(out.shape) : null;
  const buffers = [input.binding, out.binding];
  if (indices) buffers.push(indices.binding);
  dispatch(indices ? MAX_FORWARD_INDICES : MAX_FORWARD, {
    buffers,
    ...windowArgs(g, g.n * g.c * g.oh, g.ow),
  });
  if (!indices) return out;
  return record(out, {
    name: "maxPool2d",
    inputs: [input],
    internals: [indices],
    backward: (gy) => [maxPool2dBackward(gy, indices, g)],
  });
}

// The forward saves only `indices` [N, C, OH, OW] (internal): each window's arg-max as the flat
// offset ih * W + iw in its plane, stored as float32.
function maxPool2dBackward(gy: Tensor, indices: Tensor, g: Geometry): Tensor {
  const gx = Tensor.empty([g.n, g.c, g.h, g.w]);
  dispatch(MAX_BACKWARD, {
    buffers: [gy.binding, indices.binding, gx.binding],
    ...windowArgs(g, g.n * g.c * g.h, g.w),
  });
  return gx;
}

/**
 * Average pooling of `input` `[N, C, H, W]`, as PyTorch's `AvgPool2d` (floor mode): each output
 * `[N, C, OH, OW]` is its window's sum over the input divided by the window size, padding
 * included (`countIncludePad: true`, the default) or not.
 *
 * @throws {RangeError} when `input` is not `[N, C, H, W]`, a size is not a positive integer,
 * padding exceeds half the window, or the output would be empty.
 * @throws {TypeError} when an option has the wrong type.
 * @example
 * ```ts
 * import { avgPool2d, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([1, 3, 7, 7], { seed: 0 });
 * const y = avgPool2d(x, { kernelSize: 3, stride: 2, padding: 1, countIncludePad: false });
 * console.log(y.shape); // [1, 3, 4, 4]
 * ```
 */
export function avgPool2d(input: Tensor, options: AvgPool2dOptions): Tensor {
  const g = geometry("avgPool2d()", input, options);
  const includePad = checkBoolean(
    "avgPool2d()",
    "countIncludePad",
    options.countIncludePad ?? true,
  );
  const constants = { COUNT_INCLUDE_PAD: includePad ? 1 : 0 };
  const out = Tensor.empty([g.n, g.c, g.oh, g.ow]);
  dispatch(AVG_FORWARD, {
    buffers: [input.binding, out.binding],
    ...windowArgs(g, g.n * g.c * g.oh, g.ow),
    constants,
  });
  if (!shouldRecord(input)) return out;
  return record(out, {
    name: "avgPool2d",
    inputs: [input],
    backward: (gy) => [avgPool2dBackward(gy, g, constants)],
  });
}

// The forward saves no tensor: the gradient depends only on the geometry.
function avgPool2dBackward(
  gy: Tensor,
  g: Geometry,
  constants: Record<string, number>,
): Tensor {
  const gx = Tensor.empty([g.n, g.c, g.h, g.w]);
  dispatch(AVG_BACKWARD, {
    buffers: [gy.binding, gx.binding],
    ...windowArgs(g, g.n * g.c * g.h, g.w),
    constants,
  });
  return gx;
}

/**
 * Global average pooling: the mean over `H` and `W` of `input` `[N, C, H, W]`, giving `[N, C]`
 * (PyTorch's `AdaptiveAvgPool2d((1, 1))` and a flatten, as at the end of a ResNet).
 *
 * @throws {RangeError} when `input` is not `[N, C, H, W]` with `H, W >= 1`.
 * @throws {TypeError} when `input` is not a Tensor.
 * @example
 * ```ts
 * import { globalAvgPool2d, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const features = Tensor.randn([2, 512, 4, 4], { seed: 0 });
 * console.log(globalAvgPool2d(features).shape); // [2, 512]
 * ```
 */
export function globalAvgPool2d(input: Tensor): Tensor {
  checkTensorNd("globalAvgPool2d()", "input", input, 4, "[N, C, H, W]");
  const [n, c, h, w] = input.shape;
  if (h < 1 || w < 1) {
    throw new RangeError(
      `globalAvgPool2d(): input must be [N, C, H, W] with H, W >= 1, got ${
        formatShape(input.shape)
      }`,
    );
  }
  const out = Tensor.empty([n, c]);
  dispatch(GLOBAL_FORWARD, {
    buffers: [input.binding, out.binding],
    params: { planes: n * c, hw: h * w },
    workgroups: grid1d(n * c, 64),
  });
  if (!shouldRecord(input)) return out;
  return record(out, {
    name: "globalAvgPool2d",
    inputs: [input],
    backward: (gy) => [globalAvgPool2dBackward(gy, input.shape)],
  });
}

// The forward saves no tensor, only the input's shape.
function globalAvgPool2dBackward(gy: Tensor, shape: readonly number[]): Tensor {
  const gx = Tensor.empty(shape);
  const hw = shape[2] * shape[3];
  const chunks = Math.ceil(hw / 4);
  const count = shape[0] * shape[1] * chunks;
  dispatch(GLOBAL_BACKWARD, {
    buffers: [gy.binding, gx.binding],
    params: { hw, chunks, count },
    workgroups: grid1d(count, 256),
  });
  return gx;
}

/**
 * The pooling kernels' uniforms and grid: each invocation handles up to 4 consecutive elements of
 * one row of `rows` rows of `width` elements (outputs for the forwards, inputs for the backwards).
 */
function windowArgs(g: Geometry, rows: number, width: number) {
  const chunks = Math.ceil(width / 4);
  const count = rows * chunks;
  return {
    params: {
      count,
      height: g.h,
      width: g.w,
      out_h: g.oh,
      out_w: g.ow,
      kernel_h: g.kernelH,
      kernel_w: g.kernelW,
      stride_h: g.strideH,
      stride_w: g.strideW,
      pad_h: g.padH,
      pad_w: g.padW,
      chunks,
    },
    workgroups: grid1d(count, 256),
  };
}

/** Validates the arguments of a window pooling (for the op named `op`) and returns its sizes. */
function geometry(op: string, input: Tensor, options: Pool2dOptions): Geometry {
  checkTensorNd(op, "input", input, 4, "[N, C, H, W]");
  checkOptions(op, options, "{ kernelSize: 2 }");
  const [kernelH, kernelW] = pair(op, "kernelSize", options.kernelSize, 1);
  const [strideH, strideW] = pair(op, "stride", options.stride ?? options.kernelSize, 1);
  const [padH, padW] = pair(op, "padding", options.padding, 0, 0);
  if (padH > Math.floor(kernelH / 2) || padW > Math.floor(kernelW / 2)) {
    throw new RangeError(
      `${op}: padding should be at most half of the kernel size, got padding [${padH}, ${padW}] ` +
        `with kernelSize [${kernelH}, ${kernelW}]`,
    );
  }
  const [n, c, h, w] = input.shape;
  const oh = Math.floor((h + 2 * padH - kernelH) / strideH) + 1;
  const ow = Math.floor((w + 2 * padW - kernelW) / strideW) + 1;
  if (oh < 1 || ow < 1) {
    throw new RangeError(
      `${op}: input ${formatShape(input.shape)} is too small for kernelSize ` +
        `[${kernelH}, ${kernelW}], stride [${strideH}, ${strideW}], padding [${padH}, ${padW}]: ` +
        `the output would be [${n}, ${c}, ${oh}, ${ow}]`,
    );
  }
  return { n, c, h, w, oh, ow, kernelH, kernelW, strideH, strideW, padH, padW };
}
