/**
 * The vec4-row convolution kernels, shared by `conv2d` and the fused ops: for stride 1 or 2,
 * rows of whole vec4s and taps within one column of `stride * ox` (kernel width <= 3, padding
 * <= 1), which covers every convolution of the CIFAR ResNets. Internal: not exported by mod.ts.
 *
 * @module
 */
import forwardRowsSource from "../../kernels/conv2d_forward_rows.wgsl" with { type: "text" };
import packWeightSource from "../../kernels/conv2d_pack_weight.wgsl" with { type: "text" };
import weightRowsSource from "../../kernels/conv2d_backward_weight_rows.wgsl" with {
  type: "text",
};
import { dispatch, grid1d } from "../gpu/dispatch.ts";
import { formatShape, Tensor } from "../tensor.ts";
import type { Conv2dOptions } from "./conv2d.ts";

const FORWARD_ROWS = {
  name: "conv2d_forward_rows",
  source: forwardRowsSource,
  params: [
    "n",
    "c",
    "h",
    "w",
    "o",
    "oh",
    "ow",
    "kh",
    "pad_h",
    "op",
    "blocks_w",
    "pixel_blocks",
    "epilogue",
    "has_residual",
    "relu",
  ] as const,
};
const PACK_WEIGHT = {
  name: "conv2d_pack_weight",
  source: packWeightSource,
  params: ["o", "c", "kh", "kw", "cols", "count"] as const,
};
const WEIGHT_ROWS = {
  name: "conv2d_backward_weight_rows",
  source: weightRowsSource,
  params: [
    "n",
    "c",
    "h",
    "w",
    "o",
    "oh",
    "ow",
    "kh",
    "pad_h",
    "rows",
    "rows_per_chunk",
    "chunks",
  ] as const,
};

/** Workgroup size of conv2d_forward_rows. */
const FORWARD_WG = 64;
/** Workgroup size of conv2d_backward_weight_rows: one invocation per chunk of rows. */
const WEIGHT_WG = 8;
/**
 * conv2d_backward_weight_rows cuts the N * OH output rows into chunks until about this many
 * invocations run: fewer leave lanes idle, more add partial sums (measured: 1024 is best for the
 * CIFAR ResNet shapes, 256 takes 2.7x as long on 64 channels of 8x8).
 */
const WEIGHT_INVOCATIONS = 1024;

/** The sizes of one convolution, shared by its kernels' uniform structs. */
export interface Geometry {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  kh: number;
  kw: number;
  oh: number;
  ow: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
}

function pair(
  op: string,
  value: number | [number, number] | undefined,
  name: string,
  fallback: number,
  min: number,
): [number, number] {
  if (value === undefined) return [fallback, fallback];
  const wanted = min > 0 ? "positive integers" : "non-negative integers";
  let values: [number, number];
  if (typeof value === "number") {
    values = [value, value];
  } else if (Array.isArray(value) && value.length === 2) {
    values = [value[0], value[1]];
  } else {
    throw new TypeError(
      `${op}: ${name} must be a number or a pair [${name}H, ${name}W] of ${wanted}, got ` +
        (Array.isArray(value) ? `an array of length ${value.length}` : String(value)),
    );
  }
  for (const v of values) {
    if (typeof v !== "number") {
      throw new TypeError(`${op}: ${name} must hold numbers, got ${String(v)}`);
    }
    if (!Number.isInteger(v) || v < min) {
      throw new RangeError(
        `${op}: ${name} must be ${wanted}, got ${
          typeof value === "number" ? value : `[${values.join(", ")}]`
        }`,
      );
    }
  }
  return values;
}

/**
 * Validates the arguments of a convolution (for the op named `op`, e.g. "conv2d()", in messages)
 * and returns its sizes.
 */
export function geometry(
  op: string,
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null | undefined,
  options: Conv2dOptions,
): Geometry {
  if (!(input instanceof Tensor)) {
    throw new TypeError(`${op}: input must be a Tensor [N, C, H, W], got ${String(input)}`);
  }
  if (!(weight instanceof Tensor)) {
    throw new TypeError(`${op}: weight must be a Tensor [O, C, KH, KW], got ${String(weight)}`);
  }
  if (bias !== undefined && bias !== null && !(bias instanceof Tensor)) {
    throw new TypeError(`${op}: bias must be a Tensor [O], null or undefined, got ${bias}`);
  }
  if (options === null || typeof options !== "object") {
    throw new TypeError(`${op}: options must be an object, got ${String(options)}`);
  }
  if (weight.ndim !== 4 || weight.shape.some((d) => d < 1)) {
    throw new RangeError(
      `${op}: weight must be [O, C, KH, KW] with every size >= 1, got ` +
        formatShape(weight.shape),
    );
  }
  const [o, c, kh, kw] = weight.shape;
  if (input.ndim !== 4 || input.shape[1] !== c) {
    throw new RangeError(
      `${op}: input must be [N, C, H, W] with C = ${c} (weight is ` +
        `${formatShape(weight.shape)}), got ${formatShape(input.shape)}`,
    );
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== o)) {
    throw new RangeError(
      `${op}: bias must be [O] = [${o}] (weight is ${formatShape(weight.shape)}), got ` +
        formatShape(bias.shape),
    );
  }
  const [strideH, strideW] = pair(op, options.stride, "stride", 1, 1);
  const [padH, padW] = pair(op, options.padding, "padding", 0, 0);
  const [n, , h, w] = input.shape;
  const oh = Math.floor((h + 2 * padH - kh) / strideH) + 1;
  const ow = Math.floor((w + 2 * padW - kw) / strideW) + 1;
  if (!(oh >= 1 && ow >= 1)) {
    throw new RangeError(
      `${op}: the ${kh}x${kw} kernel (weight ${formatShape(weight.shape)}) does not fit ` +
        `input ${formatShape(input.shape)} with padding [${padH}, ${padW}] and stride ` +
        `[${strideH}, ${strideW}]: output would be ${oh}x${ow}`,
    );
  }
  return { n, c, h, w, o, kh, kw, oh, ow, strideH, strideW, padH, padW };
}

/**
 * Whether the vec4-row kernels compute a convolution with this stride, input width `inWidth`,
 * output width `outWidth`, kernel width `kw` and column padding `padW`.
 */
export function rowsFit(
  strideH: number,
  strideW: number,
  inWidth: number,
  outWidth: number,
  kw: number,
  padW: number,
): boolean {
  return strideH === strideW && (strideH === 1 || strideH === 2) && inWidth % 4 === 0 &&
    outWidth % 4 === 0 && kw <= 3 && padW <= 1 && kw - 1 - padW <= 1;
}

/** Output channels per conv2d_forward_rows invocation, in vec4s (its QV). */
function channelVecs(outChannels: number): number {
  return outChannels <= 4 ? 1 : outChannels <= 8 ? 2 : 4;
}

/**
 * The filters `weight` [O, C, KH, KW] packed for conv2d_forward_rows (see
 * conv2d_pack_weight.wgsl): [C * KH * KW, OP], or with `flip` (for the input gradient, O and C
 * swapped and the taps turned around) [O * KH * KW, CP].
 */
export function packWeight(weight: Tensor, flip: boolean): Tensor {
  const [o, c, kh, kw] = weight.shape;
  const outChannels = flip ? c : o;
  const block = 4 * channelVecs(outChannels);
  const cols = Math.ceil(outChannels / block) * block;
  const rows = (flip ? o : c) * kh * kw;
  const packed = Tensor.empty([rows, cols]);
  dispatch(PACK_WEIGHT, {
    buffers: [weight.buffer, packed.buffer],
    params: { o, c, kh, kw, cols, count: rows * cols },
    workgroups: grid1d(rows * cols, 64),
    constants: { FLIP: flip ? 1 : 0 },
  });
  return packed;
}

/** What conv2d_forward_rows does to each output value after the convolution. */
export type RowsEpilogue =
  /** Adds `bias` [O] when given. */
  | { kind: "bias"; bias: Tensor | null }
  /**
   * `act((v - params[0, o]) * params[1, o] + params[2, o] + residual)`: an eval-mode batch norm
   * folded with the convolution's bias (params [3, O]), an optional residual [N, O, OH, OW], then
   * ReLU when `relu`.
   */
  | { kind: "batchNorm"; params: Tensor; residual: Tensor | null; relu: boolean };

/** The sizes conv2d_forward_rows needs besides its tensors' shapes. */
export interface RowsGeometry {
  kh: number;
  kw: number;
  stride: number;
  padH: number;
  padW: number;
}

/**
 * Encodes conv2d_forward_rows: `out` [N, O, OH, OW] = the epilogue of the convolution of `x`
 * [N, C, H, W] with `packed` (from {@link packWeight}).
 */
export function forwardRows(
  x: Tensor,
  packed: Tensor,
  out: Tensor,
  geo: RowsGeometry,
  epilogue: RowsEpilogue,
): void {
  const [n, c, h, w] = x.shape;
  const [, o, oh, ow] = out.shape;
  const op = packed.shape[1];
  const pv = Math.min(4, ow / 4);
  // Narrow planes take several rows per invocation, so that each weight load serves 4 pixel
  // vec4s (see the kernel's header).
  let py = Math.floor(4 / pv);
  while (py > 1 && py > oh) py >>= 1;
  const qv = channelVecs(o);
  const blocksW = Math.ceil(ow / (4 * pv));
  const pixelBlocks = n * Math.ceil(oh / py) * blocksW;
  let chan = packed;
  let residual = x;
  let mode = 0;
  let relu = false;
  if (epilogue.kind === "bias") {
    if (epilogue.bias) {
      chan = epilogue.bias;
      mode = 1;
    }
  } else {
    chan = epilogue.params;
    mode = 2;
    if (epilogue.residual) residual = epilogue.residual;
    relu = epilogue.relu;
  }
  const [gx, gz] = grid1d(pixelBlocks, FORWARD_WG);
  dispatch(FORWARD_ROWS, {
    // Unused per-channel and residual bindings alias other read-only buffers, never read.
    buffers: [x.buffer, packed.buffer, chan.buffer, residual.buffer, out.buffer],
    params: {
      n,
      c,
      h,
      w,
      o,
      oh,
      ow,
      kh: geo.kh,
      pad_h: geo.padH,
      op,
      blocks_w: blocksW,
      pixel_blocks: pixelBlocks,
      epilogue: mode,
      has_residual: residual === x ? 0 : 1,
      relu: relu ? 1 : 0,
    },
    workgroups: [gx, Math.ceil(o / (4 * qv)), gz],
    constants: {
      WG: FORWARD_WG,
      STRIDE: geo.stride,
      KW: geo.kw,
      PAD_W: geo.padW,
      PV: pv,
      PY: py,
      QV: qv,
    },
  });
}

/**
 * Encodes conv2d_backward_weight_rows for `x` [N, C, H, W] and `gy` [N, O, OH, OW]: returns the
 * weight gradient [O, C, KH, KW], or partial sums [chunks, O, C, KH, KW] with their `chunks`
 * (> 1) for the caller to add up.
 */
export function weightGradientRows(
  x: Tensor,
  gy: Tensor,
  geo: RowsGeometry,
): { partial: Tensor; chunks: number } {
  const [n, c, h, w] = x.shape;
  const [, o, oh, ow] = gy.shape;
  const qo = o > 4 ? 2 : 1;
  const qc = c > 4 ? 2 : 1;
  const blocksC = Math.ceil(c / (4 * qc)) * geo.kh;
  const blocksO = Math.ceil(o / (4 * qo));
  const rows = n * oh;
  // Chunks in whole workgroups, so that no lane idles.
  const wanted = Math.ceil(WEIGHT_INVOCATIONS / (blocksC * blocksO) / WEIGHT_WG) * WEIGHT_WG;
  const rowsPerChunk = Math.max(1, Math.ceil(rows / Math.max(1, Math.min(rows, wanted))));
  const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  const shape = [o, c, geo.kh, geo.kw];
  const partial = Tensor.empty(chunks > 1 ? [chunks, ...shape] : shape);
  dispatch(WEIGHT_ROWS, {
    buffers: [x.buffer, gy.buffer, partial.buffer],
    params: {
      n,
      c,
      h,
      w,
      o,
      oh,
      ow,
      kh: geo.kh,
      pad_h: geo.padH,
      rows,
      rows_per_chunk: rowsPerChunk,
      chunks,
    },
    workgroups: [Math.ceil(chunks / WEIGHT_WG), blocksC, blocksO],
    constants: {
      WG: WEIGHT_WG,
      STRIDE: geo.stride,
      KW: geo.kw,
      PAD_W: geo.padW,
      QO: qo,
      QC: qc,
    },
  });
  return { partial, chunks };
}
