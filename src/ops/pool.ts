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
import { dispatch, grid1d } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";

const MAX_FORWARD = {
  name: "max_pool2d_forward",
  source: maxForwardSource,
  params: [
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
  ] as const,
};
const MAX_FORWARD_INDICES = { ...MAX_FORWARD, entryPoint: "main_indices" };
const MAX_BACKWARD = {
  name: "max_pool2d_backward",
  source: maxBackwardSource,
  params: [
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
  ] as const,
};
const AVG_FORWARD = {
  name: "avg_pool2d_forward",
  source: avgForwardSource,
  params: [
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
  ] as const,
};
const AVG_BACKWARD = {
  name: "avg_pool2d_backward",
  source: avgBackwardSource,
  params: [
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
  ] as const,
};
const GLOBAL_FORWARD = {
  name: "global_avg_pool2d_forward",
  source: globalForwardSource,
  params: ["planes", "hw"] as const,
};
const GLOBAL_BACKWARD = {
  name: "global_avg_pool2d_backward",
  source: globalBackwardSource,
  params: ["hw", "chunks", "count"] as const,
};

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
  /** Window size `k` or `[kH, kW]`. */
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

/** A resolved pooling geometry. */
interface Geometry {
  N: number;
  C: number;
  H: number;
  W: number;
  OH: number;
  OW: number;
  kH: number;
  kW: number;
  sH: number;
  sW: number;
  pH: number;
  pW: number;
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
  if (g.H * g.W > MAX_PLANE) {
    throw new RangeError(
      `maxPool2d(): H * W must be at most 2^24 (arg-max offsets are float32), got input ` +
        formatShape(input.shape),
    );
  }
  const out = Tensor.empty([g.N, g.C, g.OH, g.OW]);
  const recording = shouldRecord(input);
  const indices = recording ? Tensor.empty(out.shape) : null;
  const buffers = [input.buffer, out.buffer];
  if (indices) buffers.push(indices.buffer);
  dispatch(indices ? MAX_FORWARD_INDICES : MAX_FORWARD, {
    buffers,
    ...windowArgs(g, g.N * g.C * g.OH, g.OW),
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
  const gx = Tensor.empty([g.N, g.C, g.H, g.W]);
  dispatch(MAX_BACKWARD, {
    buffers: [gy.buffer, indices.buffer, gx.buffer],
    ...windowArgs(g, g.N * g.C * g.H, g.W),
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
  const includePad = options.countIncludePad ?? true;
  if (typeof includePad !== "boolean") {
    throw new TypeError(
      `avgPool2d(): countIncludePad must be true or false, got ${typeof includePad} ` +
        String(includePad),
    );
  }
  const constants = { COUNT_INCLUDE_PAD: includePad ? 1 : 0 };
  const out = Tensor.empty([g.N, g.C, g.OH, g.OW]);
  dispatch(AVG_FORWARD, {
    buffers: [input.buffer, out.buffer],
    ...windowArgs(g, g.N * g.C * g.OH, g.OW),
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
  const gx = Tensor.empty([g.N, g.C, g.H, g.W]);
  dispatch(AVG_BACKWARD, {
    buffers: [gy.buffer, gx.buffer],
    ...windowArgs(g, g.N * g.C * g.H, g.W),
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
  checkInput("globalAvgPool2d()", input);
  const [N, C, H, W] = input.shape;
  if (H < 1 || W < 1) {
    throw new RangeError(
      `globalAvgPool2d(): input must be [N, C, H, W] with H, W >= 1, got ${
        formatShape(input.shape)
      }`,
    );
  }
  const out = Tensor.empty([N, C]);
  dispatch(GLOBAL_FORWARD, {
    buffers: [input.buffer, out.buffer],
    params: { planes: N * C, hw: H * W },
    workgroups: grid1d(N * C, 64),
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
    buffers: [gy.buffer, gx.buffer],
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
      height: g.H,
      width: g.W,
      out_h: g.OH,
      out_w: g.OW,
      kernel_h: g.kH,
      kernel_w: g.kW,
      stride_h: g.sH,
      stride_w: g.sW,
      pad_h: g.pH,
      pad_w: g.pW,
      chunks,
    },
    workgroups: grid1d(count, 256),
  };
}

function checkInput(op: string, input: Tensor): void {
  if (!(input instanceof Tensor)) {
    throw new TypeError(
      `${op}: input must be a Tensor, got ${input === null ? "null" : typeof input}`,
    );
  }
  if (input.ndim !== 4) {
    throw new RangeError(`${op}: input must be [N, C, H, W], got ${formatShape(input.shape)}`);
  }
}

/** Reads a size option given as `k` or `[kH, kW]`. */
function pair(op: string, name: string, value: unknown, min: number): [number, number] {
  let hw: [unknown, unknown];
  if (typeof value === "number") {
    hw = [value, value];
  } else if (Array.isArray(value)) {
    if (value.length !== 2) {
      throw new RangeError(`${op}: ${name} must be a number or [h, w], got [${value.join(", ")}]`);
    }
    hw = [value[0], value[1]];
  } else {
    throw new TypeError(
      `${op}: ${name} must be a number or [h, w], got ${value === null ? "null" : typeof value}`,
    );
  }
  for (const v of hw) {
    if (typeof v !== "number") {
      throw new TypeError(`${op}: ${name} must hold numbers, got ${typeof v}`);
    }
    if (!Number.isInteger(v) || v < min) {
      throw new RangeError(
        `${op}: ${name} must be ${min === 0 ? "a non-negative" : "a positive"} integer, got ` +
          (Array.isArray(value) ? `[${value.join(", ")}]` : String(value)),
      );
    }
  }
  return hw as [number, number];
}

function geometry(op: string, input: Tensor, options: Pool2dOptions): Geometry {
  checkInput(op, input);
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `${op}: options must be an object such as { kernelSize: 2 }, got ${
        options === null ? "null" : typeof options
      }`,
    );
  }
  const [kH, kW] = pair(op, "kernelSize", options.kernelSize, 1);
  const [sH, sW] = pair(op, "stride", options.stride ?? options.kernelSize, 1);
  const [pH, pW] = pair(op, "padding", options.padding ?? 0, 0);
  if (pH > Math.floor(kH / 2) || pW > Math.floor(kW / 2)) {
    throw new RangeError(
      `${op}: padding should be at most half of the kernel size, got padding [${pH}, ${pW}] ` +
        `with kernelSize [${kH}, ${kW}]`,
    );
  }
  const [N, C, H, W] = input.shape;
  const OH = Math.floor((H + 2 * pH - kH) / sH) + 1;
  const OW = Math.floor((W + 2 * pW - kW) / sW) + 1;
  if (OH < 1 || OW < 1) {
    throw new RangeError(
      `${op}: input ${formatShape(input.shape)} is too small for kernelSize [${kH}, ${kW}], ` +
        `stride [${sH}, ${sW}], padding [${pH}, ${pW}]: the output would be [${N}, ${C}, ` +
        `${OH}, ${OW}]`,
    );
  }
  return { N, C, H, W, OH, OW, kH, kW, sH, sW, pH, pW };
}
