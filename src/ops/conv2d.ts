/**
 * 2-D convolution (PyTorch's `Conv2d` with dilation 1 and groups 1): the op, its gradients and the
 * launchers of its kernels (`kernels/conv2d_*.wgsl`).
 *
 * Two kernel families compute it:
 * - the vec4-row kernels (`conv2d_forward_rows`, `conv2d_backward_weight_rows`, with the filters
 *   packed by `conv2d_pack_weight`, or all those of an optimizer's flat parameter buffer at once
 *   by `conv2d_pack_weights`, see {@link packedWeight}) for stride 1 or 2, widths that are
 *   multiples of 4, kernel width <= 3 and padding <= 1 ({@link rowsFit}): every convolution of
 *   the CIFAR ResNets. The
 *   fused conv + batch norm of `fused.ts` runs `conv2d_forward_rows` too, through
 *   {@link geometry}, {@link packWeight} and {@link forwardRows}.
 * - the general register-blocked kernels (`conv2d_forward`, `conv2d_backward_input`,
 *   `conv2d_backward_weight`) for everything else.
 *
 * The bias gradient (`conv2d_backward_bias`) and the split-K sums (`conv2d_reduce_chunks`) serve
 * both. BENCHMARKS.md has how the families compare.
 *
 * Those are the `software` kernel family's (see `kernelFamily()`). The `gpu` family runs every
 * shape through workgroup-tiled implicit GEMMs within WebGPU's default limits
 * (`conv2d_forward_tiled`, `conv2d_backward_input_tiled`, and `conv2d_backward_weight_tiled` as a
 * split-K GEMM summed by `conv2d_reduce_chunks`): {@link forwardTiled}, {@link inputGradientTiled},
 * {@link weightGradientTiled}.
 *
 * @module
 */
import forwardSource from "../../kernels/conv2d_forward.wgsl" with { type: "text" };
import forwardRowsSource from "../../kernels/conv2d_forward_rows.wgsl" with { type: "text" };
import packWeightSource from "../../kernels/conv2d_pack_weight.wgsl" with { type: "text" };
import packWeightsSource from "../../kernels/conv2d_pack_weights.wgsl" with { type: "text" };
import backwardInputSource from "../../kernels/conv2d_backward_input.wgsl" with { type: "text" };
import backwardWeightSource from "../../kernels/conv2d_backward_weight.wgsl" with { type: "text" };
import backwardWeightRowsSource from "../../kernels/conv2d_backward_weight_rows.wgsl" with {
  type: "text",
};
import backwardBiasSource from "../../kernels/conv2d_backward_bias.wgsl" with { type: "text" };
import reduceChunksSource from "../../kernels/conv2d_reduce_chunks.wgsl" with { type: "text" };
import forwardTiledSource from "../../kernels/conv2d_forward_tiled.wgsl" with { type: "text" };
import backwardInputTiledSource from "../../kernels/conv2d_backward_input_tiled.wgsl" with {
  type: "text",
};
import backwardWeightTiledSource from "../../kernels/conv2d_backward_weight_tiled.wgsl" with {
  type: "text",
};
import { sizeClass } from "../gpu/buffer_pool.ts";
import { getDevice, kernelFamily } from "../gpu/device.ts";
import { dispatch, grid1d, kernel, writeBuffer } from "../gpu/dispatch.ts";
import type { PendingGradients } from "../autograd.ts";
import {
  Arena,
  arenaOf,
  cachedDerived,
  cacheDerived,
  fillZeroLater,
  formatShape,
  gradDestination,
  hasZeroChannelSums,
  record,
  shouldRecord,
  Tensor,
} from "../tensor.ts";
import { checkOptions, checkTensor, optionalTensor, pair } from "./_check.ts";

// ---- kernels ---------------------------------------------------------------------------------

/** The fields every general kernel's `struct Params` starts with (see {@link common}). */
const GENERAL_PARAMS = [
  "n",
  "c",
  "h",
  "w",
  "o",
  "oh",
  "ow",
  "kh",
  "kw",
  "stride_h",
  "stride_w",
  "pad_h",
  "pad_w",
] as const;
/** The fields every vec4-row kernel's `struct Params` starts with (see {@link rowsCommon}). */
const ROWS_PARAMS = ["n", "c", "h", "w", "o", "oh", "ow", "kh", "pad_h"] as const;

const FORWARD = kernel("conv2d_forward", forwardSource, [
  ...GENERAL_PARAMS,
  "has_bias",
  "blocks_w",
  "pixel_blocks",
]);
const FORWARD_ROWS = kernel("conv2d_forward_rows", forwardRowsSource, [
  ...ROWS_PARAMS,
  "op",
  "blocks_w",
  "pixel_blocks",
  "epilogue",
  "has_residual",
  "relu",
]);
const PACK_WEIGHT = kernel("conv2d_pack_weight", packWeightSource, [
  "o",
  "c",
  "kh",
  "kw",
  "cols",
  "count",
]);
const PACK_WEIGHTS = kernel("conv2d_pack_weights", packWeightsSource, ["first", "chunks", "base"]);
const BACKWARD_INPUT = kernel("conv2d_backward_input", backwardInputSource, [
  ...GENERAL_PARAMS,
  "rows",
  "blocks_w",
  "pixel_blocks",
]);
const BACKWARD_WEIGHT = kernel("conv2d_backward_weight", backwardWeightSource, [
  ...GENERAL_PARAMS,
  "lanes",
  "rows_per_chunk",
  "rows",
]);
const BACKWARD_WEIGHT_ROWS = kernel("conv2d_backward_weight_rows", backwardWeightRowsSource, [
  ...ROWS_PARAMS,
  "rows",
  "rows_per_chunk",
  "chunks",
]);
const BACKWARD_BIAS = kernel("conv2d_backward_bias", backwardBiasSource, [
  "o",
  "oh",
  "ow",
  "rows_per_chunk",
  "rows",
  "count",
]);
const REDUCE_CHUNKS = kernel("conv2d_reduce_chunks", reduceChunksSource, ["count", "chunks"]);
const FORWARD_TILED = kernel("conv2d_forward_tiled", forwardTiledSource, [
  ...GENERAL_PARAMS,
  "m",
  "k",
  "epilogue",
  "has_residual",
  "relu",
]);
const BACKWARD_INPUT_TILED = kernel("conv2d_backward_input_tiled", backwardInputTiledSource, [
  ...GENERAL_PARAMS,
  "m",
  "k",
]);
const BACKWARD_WEIGHT_TILED = kernel("conv2d_backward_weight_tiled", backwardWeightTiledSource, [
  ...GENERAL_PARAMS,
  "q",
  "k",
  "per_chunk",
]);

/**
 * Workgroup size of the general blocked kernels (their `WG` override). Each of their invocations
 * computes an 8 x 8 register block (8 channels x 8 pixels, or 8 x 8 channels for the weight
 * gradient), hence the divisions by 8 in the grids below: on llvmpipe loads cost far more than
 * FMAs.
 */
const WG = 64;
/** Workgroup size of conv2d_forward_rows. */
const FORWARD_ROWS_WG = 64;
/** Workgroup size of conv2d_backward_weight_rows: one invocation per chunk of rows. */
const WEIGHT_ROWS_WG = 8;
/**
 * conv2d_backward_weight_rows cuts the N * OH output rows into chunks until about this many
 * invocations run: fewer leave lanes idle, more add partial sums (BENCHMARKS.md, "Observations").
 */
const WEIGHT_ROWS_INVOCATIONS = 1024;
/**
 * Split-K sizing of the general weight gradient and of the bias gradient: cut the N * OH output
 * rows into chunks until about this many invocations run...
 */
const TARGET_INVOCATIONS = 16384;
/** ...but give each chunk at least this many terms (output pixels), so partials stay few. */
const MIN_TERMS_PER_CHUNK = 256;

// ---- the op ----------------------------------------------------------------------------------

/** Options of {@link conv2d}; a number applies to both height and width. */
export interface Conv2dOptions {
  /** Step between windows, `[strideH, strideW]` or one number for both; positive; default 1. */
  stride?: number | [number, number];
  /** Zeros added on each side, `[padH, padW]` or one number for both; default 0. */
  padding?: number | [number, number];
}

/** The sizes of one convolution, shared by its kernels' uniform structs. */
export interface Geometry {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  kernelH: number;
  kernelW: number;
  oh: number;
  ow: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
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
  checkTensor(op, "input", input);
  checkTensor(op, "weight", weight);
  optionalTensor(op, "bias", bias);
  checkOptions(op, options, "{ stride: 1, padding: 1 }");
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
  const [strideH, strideW] = pair(op, "stride", options.stride, 1, 1);
  const [padH, padW] = pair(op, "padding", options.padding, 0, 0);
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
  return { n, c, h, w, o, kernelH: kh, kernelW: kw, oh, ow, strideH, strideW, padH, padW };
}

/**
 * 2-D convolution of `input` [N, C, H, W] with `weight` [O, C, KH, KW] (OIHW) plus `bias` [O],
 * like PyTorch's `torch.nn.functional.conv2d` (cross-correlation, zero padding, dilation 1,
 * groups 1). The output is [N, O, OH, OW] with OH = floor((H + 2 * padH - KH) / strideH) + 1 and
 * likewise OW. Differentiable in all three.
 *
 * @param input Images [N, C, H, W].
 * @param weight Filters [O, C, KH, KW]; any kernel size, square or not.
 * @param bias Per-output-channel offsets [O], or null/undefined for none.
 * @param options Stride (default 1) and zero padding (default 0), each a number or [h, w].
 * @returns The feature maps [N, O, OH, OW].
 * @throws {TypeError} when an argument is not a Tensor or an option has the wrong type.
 * @throws {RangeError} when ranks or channel counts disagree, the bias is not [O], the stride is
 * not a positive integer, the padding not a non-negative integer, or the kernel does not fit.
 * @example
 * ```ts
 * import { conv2d, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([2, 3, 32, 32], { seed: 0 });                 // [N, C, H, W]
 * const w = Tensor.randn([16, 3, 3, 3], { seed: 1, requiresGrad: true }); // [O, C, KH, KW]
 * const y = conv2d(x, w, null, { stride: 2, padding: 1 });
 * console.log(y.shape); // [2, 16, 16, 16]
 * ```
 */
export function conv2d(
  input: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  options: Conv2dOptions = {},
): Tensor {
  const g = geometry("conv2d()", input, weight, bias, options);
  const out = Tensor.empty([g.n, g.o, g.oh, g.ow]);
  if (kernelFamily() === "gpu") {
    forwardTiled(input, weight, out, g, { kind: "bias", bias: bias ?? null });
  } else if (rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kernelW, g.padW)) {
    const packed = packedWeight(weight, false);
    forwardRows(input, packed, out, rowsGeometry(g), { kind: "bias", bias: bias ?? null });
  } else {
    const blocksW = Math.ceil(g.ow / 8);
    const pixelBlocks = g.n * g.oh * blocksW;
    dispatch(FORWARD, {
      // Without a bias the weight buffer fills the binding; has_bias = 0 keeps it from being read.
      buffers: [input.binding, weight.binding, (bias ?? weight).binding, out.binding],
      params: {
        ...common(g),
        has_bias: bias ? 1 : 0,
        blocks_w: blocksW,
        pixel_blocks: pixelBlocks,
      },
      workgroups: gridXZ(pixelBlocks, Math.ceil(g.o / 8)),
      constants: { WG },
    });
  }
  if (shouldRecord(input, weight, bias)) {
    // Saved for the backward: `input` (for the weight gradient) and `weight` (for the input
    // gradient); both are the op's inputs, so nothing is an internal.
    const inputs = bias ? [input, weight, bias] : [input, weight];
    record(out, {
      name: "conv2d",
      inputs,
      backward: (gy, pending) => conv2dBackward(g, input, weight, bias ?? null, gy, pending),
    });
  }
  return out;
}

// ---- the gradients ---------------------------------------------------------------------------

// A gradient autograd already holds for the input (in a ResNet block, the shortcut's gradient of
// the block input) is added by the input gradient's kernel as it writes its outputs, instead of by
// a separate add_inplace. The sum carries no zero-channel-sum mark: the convolution's own term
// has none.
function conv2dBackward(
  g: Geometry,
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  gy: Tensor,
  pending: PendingGradients | undefined,
): (Tensor | null)[] {
  let gx: Tensor | null = null;
  if (input.requiresGrad) {
    const held = pending?.grads[0] ?? null;
    const residual = held && held.size === g.n * g.c * g.h * g.w ? held : null;
    gx = inputGradient(g, weight, gy, residual);
    if (residual) pending!.included[0] = true;
  }
  const grads: (Tensor | null)[] = [
    gx,
    weight.requiresGrad ? weightGradient(g, input, gy, () => gradDestination(weight)) : null,
  ];
  if (bias) {
    // Behind a training-mode batch norm the bias gradient, the per-channel sum of gy, is exactly
    // 0: no pass over gy for it, and its clear waits to be encoded with the other layers' (a
    // clear between two dispatches splits the compute pass).
    grads.push(
      !bias.requiresGrad
        ? null
        : hasZeroChannelSums(gy)
        ? fillZeroLater(gradDestination(bias))
        : biasGradient(g, gy, () => gradDestination(bias)),
    );
  }
  return grads;
}

/**
 * The input gradient [N, C, H, W] from `gy`, plus `residual` (any tensor of that size) when given.
 */
function inputGradient(g: Geometry, weight: Tensor, gy: Tensor, residual: Tensor | null): Tensor {
  if (kernelFamily() === "gpu") return inputGradientTiled(g, weight, gy, residual);
  const gx = Tensor.empty([g.n, g.c, g.h, g.w]);
  // At stride 1 the input gradient is the convolution of gy with the flipped filters (O and C
  // swapped) and padding K - 1 - pad, which keeps the size: OH + 2 (KH - 1 - padH) - KH + 1 = H.
  const padH = g.kernelH - 1 - g.padH;
  const padW = g.kernelW - 1 - g.padW;
  if (
    g.strideH === 1 && padH >= 0 && padW >= 0 && rowsFit(1, g.strideW, g.ow, g.w, g.kernelW, padW)
  ) {
    const packed = packedWeight(weight, true);
    forwardRows(gy, packed, gx, { ...rowsGeometry(g), padH, padW }, {
      kind: "bias",
      bias: null,
      residual,
    });
    return gx;
  }
  const rows = Math.ceil(g.h / g.strideH);
  const blocksW = Math.ceil(Math.ceil(g.w / g.strideW) / 8);
  const pixelBlocks = g.n * rows * blocksW;
  dispatch(BACKWARD_INPUT, {
    // Without a residual gy fills its binding, never read then.
    buffers: [gy.binding, weight.binding, (residual ?? gy).binding, gx.binding],
    params: { ...common(g), rows, blocks_w: blocksW, pixel_blocks: pixelBlocks },
    workgroups: gridXZ(pixelBlocks, Math.ceil(g.c / 8) * g.strideH * g.strideW),
    constants: { WG, HAS_RESIDUAL: residual ? 1 : 0 },
  });
  return gx;
}

/**
 * The weight gradient [O, C, KH, KW], written into `destination()` (the tensor backward hands the
 * weight's gradient, see gradDestination).
 */
function weightGradient(
  g: Geometry,
  input: Tensor,
  gy: Tensor,
  destination: () => Tensor,
): Tensor {
  if (kernelFamily() === "gpu") return weightGradientTiled(g, input, gy, destination);
  const shape = [g.o, g.c, g.kernelH, g.kernelW];
  if (rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kernelW, g.padW)) {
    const { partial, chunks } = weightGradientRows(input, gy, rowsGeometry(g), destination);
    return chunks > 1 ? reduceChunks(partial, chunks, destination()) : partial;
  }
  const lanes = Math.ceil(g.c / 8) * g.kernelH * g.kernelW;
  const blocksO = Math.ceil(g.o / 8);
  const rows = g.n * g.oh;
  const { chunks, rowsPerChunk } = splitRows(blocksO * lanes, rows, g.ow);
  // Small lane counts (e.g. 36 for 16 channels, 3x3) would leave most of a 64-wide group idle.
  const wg = Math.min(WG, Math.ceil(lanes / 8) * 8);
  const out = chunks > 1 ? Tensor.empty([chunks, ...shape]) : destination();
  dispatch(BACKWARD_WEIGHT, {
    buffers: [input.binding, gy.binding, out.binding],
    params: { ...common(g), lanes, rows_per_chunk: rowsPerChunk, rows },
    workgroups: [Math.ceil(lanes / wg), blocksO, chunks],
    constants: { WG: wg },
  });
  return chunks > 1 ? reduceChunks(out, chunks, destination()) : out;
}

/** The bias gradient [O], written into `destination()`. */
function biasGradient(g: Geometry, gy: Tensor, destination: () => Tensor): Tensor {
  const rows = g.n * g.oh;
  const { chunks, rowsPerChunk } = splitRows(g.o, rows, g.ow);
  const count = g.o * chunks;
  const out = chunks > 1 ? Tensor.empty([chunks, g.o]) : destination();
  dispatch(BACKWARD_BIAS, {
    buffers: [gy.binding, out.binding],
    params: { o: g.o, oh: g.oh, ow: g.ow, rows_per_chunk: rowsPerChunk, rows, count },
    workgroups: grid1d(count, 64),
    constants: { VEC4: g.ow % 4 === 0 ? 1 : 0 },
  });
  return chunks > 1 ? reduceChunks(out, chunks, destination()) : out;
}

// ---- the general kernels' launch sizes -------------------------------------------------------

/** The fields every general kernel's uniform struct starts with ({@link GENERAL_PARAMS}). */
function common(g: Geometry) {
  return {
    n: g.n,
    c: g.c,
    h: g.h,
    w: g.w,
    o: g.o,
    oh: g.oh,
    ow: g.ow,
    kh: g.kernelH,
    kw: g.kernelW,
    stride_h: g.strideH,
    stride_w: g.strideW,
    pad_h: g.padH,
    pad_w: g.padW,
  };
}

/** Workgroups for `count` invocations flat over x and z (y is taken by a channel block). */
function gridXZ(count: number, y: number): [number, number, number] {
  const [gx, gz] = grid1d(count, WG);
  return [gx, y, gz];
}

/**
 * How many chunks of output rows a split-K reduction uses when `parallel` invocations exist per
 * chunk, and how many rows each chunk holds.
 */
function splitRows(parallel: number, rows: number, rowLength: number) {
  const wanted = Math.max(1, Math.min(rows, Math.ceil(TARGET_INVOCATIONS / parallel)));
  const minRows = Math.ceil(MIN_TERMS_PER_CHUNK / rowLength);
  const rowsPerChunk = Math.max(1, Math.ceil(rows / wanted), minRows);
  const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  return { chunks, rowsPerChunk };
}

/** Sums `partial` [chunks, count] over its chunks into `out` [count]; disposes `partial`. */
function reduceChunks(partial: Tensor, chunks: number, out: Tensor): Tensor {
  dispatch(REDUCE_CHUNKS, {
    buffers: [partial.binding, out.binding],
    params: { count: out.size, chunks },
    workgroups: grid1d(out.size, 64),
  });
  partial.dispose();
  return out;
}

// ---- the vec4-row kernels --------------------------------------------------------------------

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

/** The sizes the vec4-row kernels take besides their tensors' shapes. */
export interface RowsGeometry {
  kernelH: number;
  kernelW: number;
  /** The stride, equal in both directions. */
  stride: number;
  padH: number;
  padW: number;
}

/** A convolution's {@link RowsGeometry}. */
function rowsGeometry(g: Geometry): RowsGeometry {
  return { kernelH: g.kernelH, kernelW: g.kernelW, stride: g.strideH, padH: g.padH, padW: g.padW };
}

/**
 * The fields every vec4-row kernel's uniform struct starts with ({@link ROWS_PARAMS}), for input
 * `x` [N, C, H, W] and output (or output gradient) `y` [N, O, OH, OW].
 */
function rowsCommon(x: Tensor, y: Tensor, geo: RowsGeometry) {
  const [n, c, h, w] = x.shape;
  const [, o, oh, ow] = y.shape;
  return { n, c, h, w, o, oh, ow, kh: geo.kernelH, pad_h: geo.padH };
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
    buffers: [weight.binding, packed.binding],
    params: { o, c, kh, kw, cols, count: rows * cols },
    workgroups: grid1d(rows * cols, 64),
    constants: { FLIP: flip ? 1 : 0 },
  });
  return packed;
}

/**
 * {@link packWeight}'s result, cached with `weight` until its values change (an optimizer step
 * marks them) or it is disposed: inference packs each filter bank once, training once per step.
 * A weight that is a slice of an arena (an optimizer's flat parameters) is packed with the
 * others of its arena, in one dispatch (see {@link packArena}). The cache owns the tensor;
 * callers must not dispose it.
 */
export function packedWeight(weight: Tensor, flip: boolean): Tensor {
  const key = packKey(flip);
  const cached = cachedDerived(weight, key, "");
  if (cached) return cached;
  const arena = arenaOf(weight);
  const packed = arena ? packArena(arena, weight, flip) : null;
  if (packed) return packed;
  const own = packWeight(weight, flip);
  cacheDerived(weight, key, "", own);
  return own;
}

function packKey(flip: boolean): string {
  return flip ? "conv2d:packed-flipped" : "conv2d:packed";
}

/** Packed elements of one bank that one workgroup of conv2d_pack_weights writes at most. */
const PACK_CHUNK = 1024;
/** u32 words per chunk of conv2d_pack_weights' table (its `struct Chunk`). */
const CHUNK_WORDS = 10;

/** One (weight, direction) that {@link packArena} packs. */
interface PackEntry {
  weight: Tensor;
  flip: boolean;
  /** The weight's first element in its arena. */
  src: number;
  /** The first element of its packed filters in the flat packed layout. */
  dst: number;
  rows: number;
  cols: number;
  /** Its first chunk in the table. */
  chunk: number;
}

/**
 * The (weight, direction) pairs of one arena that {@link packedWeight} was asked for, in the
 * order first asked, laid out one after the other in a flat packed layout (each at an offset
 * aligned for a storage binding), and the chunk table of conv2d_pack_weights over them. The table
 * only grows at its end: a recorded pack dispatch reads the rows it was recorded with.
 */
interface PackSet {
  entries: PackEntry[];
  byWeight: Map<Tensor, (PackEntry | undefined)[]>;
  /** Elements of the packed layout. */
  layout: number;
  /** Chunks in the table. */
  chunks: number;
  /** Bytes of the arena the filters lie in (the end of the last one's binding). */
  srcBytes: number;
  /** The table's words. */
  words: Uint32Array;
  /** The table's buffer, and how many of `words` were written into it. */
  table: Tensor | null;
  written: number;
}

const packSets = new WeakMap<Arena, PackSet>();

/**
 * Packs `weight` (a slice of `arena`) in one conv2d_pack_weights dispatch with every other
 * (weight, direction) of the arena asked for before whose cached packed filters are stale, or
 * were made before the running recording: from the first such pair of the set to its end (in
 * training every one, since the optimizer writes them all). The packed filters are slices of one
 * new arena, each cached with its weight as {@link packWeight}'s would be. Null when the flat
 * packed layout would not fit one storage binding (the caller packs `weight` on its own).
 */
function packArena(arena: Arena, weight: Tensor, flip: boolean): Tensor | null {
  let set = packSets.get(arena) ?? null;
  if (set && !set.entries.every((e) => holds(arena, e))) {
    // A weight was disposed or moved out: lay the others out again, in a table of their own.
    const kept = set.entries.filter((e) => holds(arena, e));
    set.table?.dispose();
    set = null;
    for (const e of kept) set = addPair(set, e.weight, e.flip);
    if (set) packSets.set(arena, set);
    else packSets.delete(arena);
  }
  let entry = set?.byWeight.get(weight)?.[flip ? 1 : 0];
  if (!set || !entry) {
    set = addPair(set, weight, flip);
    if (!set) return null;
    packSets.set(arena, set);
    entry = set.entries[set.entries.length - 1];
  }
  writeTable(set);
  // `entry` itself is stale (packedWeight found no valid cache), so `from` <= its index.
  const from = set.entries.findIndex((e) => !cachedDerived(e.weight, packKey(e.flip), ""));
  const first = set.entries[from];
  const base = first.dst;
  const bytes = (set.layout - base) * 4;
  const out = new Arena(bytes);
  dispatch(PACK_WEIGHTS, {
    buffers: [
      set.table!.binding,
      { buffer: arena.buffer, offset: 0, size: set.srcBytes },
      { buffer: out.buffer, offset: 0, size: bytes },
    ],
    params: { first: first.chunk, chunks: set.chunks - first.chunk, base },
    workgroups: grid1d(set.chunks - first.chunk, 1),
  });
  let packed: Tensor | null = null;
  for (const e of set.entries.slice(from)) {
    const view = new Tensor([e.rows, e.cols], { buffer: out.buffer, offset: (e.dst - base) * 4 });
    cacheDerived(e.weight, packKey(e.flip), "", view);
    if (e === entry) packed = view;
  }
  // The slices hold the packed arena; it goes back to the pool with the last of them.
  out.release();
  return packed;
}

/** Whether `e`'s weight still lies in `arena` where it was registered. */
function holds(arena: Arena, e: PackEntry): boolean {
  return !e.weight.disposed && arenaOf(e.weight) === arena && e.weight.byteOffset === e.src * 4;
}

/**
 * `set` (a new one when null) with (weight, flip) added at the end of its layout and table,
 * or null when the layout would outgrow a storage binding.
 */
function addPair(set: PackSet | null, weight: Tensor, flip: boolean): PackSet | null {
  const limits = getDevice().limits;
  const align = Math.max(256, limits.minStorageBufferOffsetAlignment);
  const [o, c, kh, kw] = weight.shape;
  const outChannels = flip ? c : o;
  const block = 4 * channelVecs(outChannels);
  const cols = Math.ceil(outChannels / block) * block;
  const rows = (flip ? o : c) * kh * kw;
  const count = rows * cols;
  const layout = set?.layout ?? 0;
  const room = Math.ceil(sizeClass(count * 4) / align) * align;
  if (4 * layout + room > limits.maxStorageBufferBindingSize) return null;
  set ??= {
    entries: [],
    byWeight: new Map(),
    layout: 0,
    chunks: 0,
    srcBytes: 0,
    words: new Uint32Array(0),
    table: null,
    written: 0,
  };
  const src = weight.byteOffset / 4;
  const entry: PackEntry = { weight, flip, src, dst: layout, rows, cols, chunk: set.chunks };
  const chunks = Math.ceil(count / PACK_CHUNK);
  const words = new Uint32Array((set.chunks + chunks) * CHUNK_WORDS);
  words.set(set.words);
  for (let k = 0; k < chunks; k++) {
    const at = (set.chunks + k) * CHUNK_WORDS;
    const begin = k * PACK_CHUNK;
    words.set(
      [src, layout, o, c, kh, kw, cols, flip ? 1 : 0, begin, Math.min(PACK_CHUNK, count - begin)],
      at,
    );
  }
  set.entries.push(entry);
  const pair = set.byWeight.get(weight) ?? [];
  pair[flip ? 1 : 0] = entry;
  set.byWeight.set(weight, pair);
  set.layout = layout + room / 4;
  set.chunks += chunks;
  set.srcBytes = Math.max(set.srcBytes, weight.byteOffset + sizeClass(weight.size * 4));
  set.words = words;
  return set;
}

/**
 * Writes the words of `set`'s table that its buffer lacks: the rows added since the last write,
 * into a larger buffer (all rows) when they no longer fit. Rows once written never change.
 */
function writeTable(set: PackSet): void {
  if (set.table && set.written === set.words.length) return;
  if (!set.table || set.words.length > set.table.size) {
    set.table?.dispose();
    set.table = Tensor.empty([Math.max(256, 2 * set.words.length)]).keep();
    set.written = 0;
  }
  const table = set.table;
  writeBuffer(table.buffer, set.words.subarray(set.written), table.byteOffset + set.written * 4);
  set.written = set.words.length;
}

/**
 * The epilogue as the forward kernels take it: `mode` 0 (none), 1 (bias) or 2 (folded batch norm),
 * its per-channel tensor, the residual (and whether there is one) and the ReLU switch. Unused
 * bindings alias `unusedChan` and `unusedResidual`, read-only buffers the kernel never reads then.
 */
function epilogueBindings(epilogue: RowsEpilogue, unusedChan: Tensor, unusedResidual: Tensor) {
  const given = epilogue.residual ?? null;
  const residual = given ?? unusedResidual;
  const hasResidual = given !== null;
  if (epilogue.kind === "bias") {
    return epilogue.bias
      ? { chan: epilogue.bias, residual, hasResidual, mode: 1, relu: false }
      : { chan: unusedChan, residual, hasResidual, mode: 0, relu: false };
  }
  return { chan: epilogue.params, residual, hasResidual, mode: 2, relu: epilogue.relu };
}

/** What conv2d_forward_rows does to each output value after the convolution. */
export type RowsEpilogue =
  /**
   * Adds `bias` [O] when given, then `residual` [N, O, OH, OW] when given (conv2d's input gradient
   * adds the gradient autograd already holds for the input this way).
   */
  | { kind: "bias"; bias: Tensor | null; residual?: Tensor | null }
  /**
   * `act((v - params[0, o]) * params[1, o] + params[2, o] + residual)`: an eval-mode batch norm
   * folded with the convolution's bias (params [3, O]), an optional residual [N, O, OH, OW], then
   * ReLU when `relu`.
   */
  | { kind: "batchNorm"; params: Tensor; residual: Tensor | null; relu: boolean };

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
  const n = x.shape[0];
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
  const { chan, residual, hasResidual, mode, relu } = epilogueBindings(epilogue, packed, x);
  const [gx, gz] = grid1d(pixelBlocks, FORWARD_ROWS_WG);
  dispatch(FORWARD_ROWS, {
    // Unused per-channel and residual bindings alias other read-only buffers, never read.
    buffers: [x.binding, packed.binding, chan.binding, residual.binding, out.binding],
    params: {
      ...rowsCommon(x, out, geo),
      op,
      blocks_w: blocksW,
      pixel_blocks: pixelBlocks,
      epilogue: mode,
      has_residual: hasResidual ? 1 : 0,
      relu: relu ? 1 : 0,
    },
    workgroups: [gx, Math.ceil(o / (4 * qv)), gz],
    constants: {
      WG: FORWARD_ROWS_WG,
      STRIDE: geo.stride,
      KW: geo.kernelW,
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
function weightGradientRows(
  x: Tensor,
  gy: Tensor,
  geo: RowsGeometry,
  destination: () => Tensor,
): { partial: Tensor; chunks: number } {
  const [n, c] = x.shape;
  const [, o, oh] = gy.shape;
  const qo = o > 4 ? 2 : 1;
  const qc = c > 4 ? 2 : 1;
  const blocksC = Math.ceil(c / (4 * qc)) * geo.kernelH;
  const blocksO = Math.ceil(o / (4 * qo));
  const rows = n * oh;
  // Chunks in whole workgroups, so that no lane idles.
  const wanted = Math.ceil(WEIGHT_ROWS_INVOCATIONS / (blocksC * blocksO) / WEIGHT_ROWS_WG) *
    WEIGHT_ROWS_WG;
  const rowsPerChunk = Math.max(1, Math.ceil(rows / Math.max(1, Math.min(rows, wanted))));
  const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  const shape = [o, c, geo.kernelH, geo.kernelW];
  const partial = chunks > 1 ? Tensor.empty([chunks, ...shape]) : destination();
  dispatch(BACKWARD_WEIGHT_ROWS, {
    buffers: [x.binding, gy.binding, partial.binding],
    params: { ...rowsCommon(x, gy, geo), rows, rows_per_chunk: rowsPerChunk, chunks },
    workgroups: [Math.ceil(chunks / WEIGHT_ROWS_WG), blocksC, blocksO],
    constants: {
      WG: WEIGHT_ROWS_WG,
      STRIDE: geo.stride,
      KW: geo.kernelW,
      PAD_W: geo.padW,
      QO: qo,
      QC: qc,
    },
  });
  return { partial, chunks };
}

// ---- the gpu family: workgroup-tiled implicit GEMMs ------------------------------------------

/**
 * The tiled kernels aim at this many workgroups per dispatch: 4 per SM of a 132-SM GPU (an
 * H200), so that each SM holds several workgroups to hide memory latency.
 */
const TARGET_WORKGROUPS = 528;
/**
 * The weight gradient's chunks hold at least this many output pixels (4 steps of 16): enough
 * chunks for {@link TARGET_WORKGROUPS} down to ResNet-20's 8x8 stage at batch 128, while the
 * partial sums stay a few MB.
 */
const MIN_PIXELS_PER_CHUNK = 64;

/**
 * Tile sizes of a tiled GEMM with `rows` x `cols` outputs: `cols` per tile (TN) the smallest of
 * 16, 32, 64 that holds them (64 at most), then the largest `rows` per tile (TM, 128 down to 16)
 * with 64 to 256 invocations (TM * TN / 16) that still gives {@link TARGET_WORKGROUPS}
 * workgroups, or else the smallest.
 */
function gemmTiles(rows: number, cols: number): { tm: number; tn: number; wg: number } {
  const tn = cols <= 16 ? 16 : cols <= 32 ? 32 : 64;
  let best = 0;
  for (const tm of [128, 64, 32, 16]) {
    const wg = (tm * tn) / 16;
    if (wg < 64 || wg > 256) continue;
    best = tm;
    if (Math.ceil(rows / tm) * Math.ceil(cols / tn) >= TARGET_WORKGROUPS) break;
  }
  return { tm: best, tn, wg: (best * tn) / 16 };
}

/**
 * Encodes conv2d_forward_tiled (the gpu family's convolution, any shape): `out` [N, O, OH, OW] =
 * the epilogue of the convolution of `x` [N, C, H, W] with `weight` [O, C, KH, KW].
 *
 * @example
 * ```ts
 * import { initGPU, Tensor } from "@resnet/webgpu";
 * import { forwardTiled, geometry } from "./conv2d.ts";
 * await initGPU();
 * const x = Tensor.randn([2, 3, 8, 8], { seed: 0 });
 * const w = Tensor.randn([4, 3, 3, 3], { seed: 1 });
 * const g = geometry("example", x, w, null, { padding: 1 });
 * const y = Tensor.empty([g.n, g.o, g.oh, g.ow]);
 * forwardTiled(x, w, y, g, { kind: "bias", bias: null });
 * console.log((await y.toArray()).length); // 512
 * ```
 */
export function forwardTiled(
  x: Tensor,
  weight: Tensor,
  out: Tensor,
  g: Geometry,
  epilogue: RowsEpilogue,
): void {
  const m = g.n * g.oh * g.ow;
  const { tm, tn, wg } = gemmTiles(m, g.o);
  const { chan, residual, hasResidual, mode, relu } = epilogueBindings(epilogue, weight, x);
  const [gx, gz] = grid1d(Math.ceil(m / tm), 1);
  dispatch(FORWARD_TILED, {
    // Unused per-channel and residual bindings alias other read-only buffers, never read.
    buffers: [x.binding, weight.binding, chan.binding, residual.binding, out.binding],
    params: {
      ...common(g),
      m,
      k: g.c * g.kernelH * g.kernelW,
      epilogue: mode,
      has_residual: hasResidual ? 1 : 0,
      relu: relu ? 1 : 0,
    },
    workgroups: [gx, Math.ceil(g.o / tn), gz],
    constants: { TM: tm, TN: tn, WG: wg },
  });
}

/**
 * The gpu family's input gradient [N, C, H, W], plus `residual` when given:
 * conv2d_backward_input_tiled, any shape.
 */
function inputGradientTiled(
  g: Geometry,
  weight: Tensor,
  gy: Tensor,
  residual: Tensor | null,
): Tensor {
  const gx = Tensor.empty([g.n, g.c, g.h, g.w]);
  const m = g.n * g.h * g.w;
  const { tm, tn, wg } = gemmTiles(m, g.c);
  const [x, z] = grid1d(Math.ceil(m / tm), 1);
  dispatch(BACKWARD_INPUT_TILED, {
    // Without a residual gy fills its binding, never read then.
    buffers: [gy.binding, weight.binding, (residual ?? gy).binding, gx.binding],
    params: { ...common(g), m, k: g.o * g.kernelH * g.kernelW },
    workgroups: [x, Math.ceil(g.c / tn), z],
    constants: { TM: tm, TN: tn, WG: wg, HAS_RESIDUAL: residual ? 1 : 0 },
  });
  return gx;
}

/**
 * The gpu family's weight gradient [O, C, KH, KW]: conv2d_backward_weight_tiled over chunks of the
 * output pixels (a split-K GEMM), then conv2d_reduce_chunks when there are several.
 */
function weightGradientTiled(
  g: Geometry,
  input: Tensor,
  gy: Tensor,
  destination: () => Tensor,
): Tensor {
  const k = g.c * g.kernelH * g.kernelW;
  const q = g.n * g.oh * g.ow;
  const tm = g.o <= 16 ? 16 : g.o <= 32 ? 32 : 64;
  const tn = Math.max(k <= 16 ? 16 : k <= 32 ? 32 : 64, 1024 / tm);
  const tiles = Math.ceil(g.o / tm) * Math.ceil(k / tn);
  const wanted = Math.max(
    1,
    Math.min(Math.ceil(TARGET_WORKGROUPS / tiles), Math.ceil(q / MIN_PIXELS_PER_CHUNK)),
  );
  const perChunk = Math.max(16, Math.ceil(q / wanted / 16) * 16);
  const chunks = Math.max(1, Math.ceil(q / perChunk));
  const shape = [g.o, g.c, g.kernelH, g.kernelW];
  const partial = chunks > 1 ? Tensor.empty([chunks, ...shape]) : destination();
  dispatch(BACKWARD_WEIGHT_TILED, {
    buffers: [input.binding, gy.binding, partial.binding],
    params: { ...common(g), q, k, per_chunk: perChunk },
    workgroups: [Math.ceil(k / tn), Math.ceil(g.o / tm), chunks],
    constants: { TM: tm, TN: tn, WG: (tm * tn) / 16 },
  });
  return chunks > 1 ? reduceChunks(partial, chunks, destination()) : partial;
}
