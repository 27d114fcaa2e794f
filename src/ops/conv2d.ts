/**
 * 2-D convolution (PyTorch's `Conv2d` with dilation 1 and groups 1) and its gradients.
 *
 * Two families of kernels: the vec4-row kernels of `_conv2d_rows.ts` (stride 1 or 2, widths that
 * are multiples of 4, kernel width <= 3 with padding <= 1: every convolution of the CIFAR
 * ResNets), 2-2.5x faster on llvmpipe, and the general register-blocked kernels below for
 * everything else.
 *
 * @module
 */
import forwardSource from "../../kernels/conv2d_forward.wgsl" with { type: "text" };
import backwardInputSource from "../../kernels/conv2d_backward_input.wgsl" with { type: "text" };
import backwardWeightSource from "../../kernels/conv2d_backward_weight.wgsl" with { type: "text" };
import backwardBiasSource from "../../kernels/conv2d_backward_bias.wgsl" with { type: "text" };
import reduceChunksSource from "../../kernels/conv2d_reduce_chunks.wgsl" with { type: "text" };
import { dispatch, grid1d } from "../gpu/dispatch.ts";
import { record, shouldRecord, Tensor } from "../tensor.ts";
import {
  forwardRows,
  type Geometry,
  geometry,
  packWeight,
  rowsFit,
  weightGradientRows,
} from "./_conv2d_rows.ts";

const FORWARD = {
  name: "conv2d_forward",
  source: forwardSource,
  params: [
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
    "has_bias",
    "blocks_w",
    "pixel_blocks",
  ] as const,
};
const BACKWARD_INPUT = {
  name: "conv2d_backward_input",
  source: backwardInputSource,
  params: [
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
    "rows",
    "blocks_w",
    "pixel_blocks",
  ] as const,
};
const BACKWARD_WEIGHT = {
  name: "conv2d_backward_weight",
  source: backwardWeightSource,
  params: [
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
    "lanes",
    "rows_per_chunk",
    "rows",
  ] as const,
};
const BACKWARD_BIAS = {
  name: "conv2d_backward_bias",
  source: backwardBiasSource,
  params: ["o", "oh", "ow", "rows_per_chunk", "rows", "count"] as const,
};
const REDUCE_CHUNKS = {
  name: "conv2d_reduce_chunks",
  source: reduceChunksSource,
  params: ["count", "chunks"] as const,
};

/**
 * Workgroup size of the general blocked kernels (their `WG` override). Each of their invocations
 * computes an 8 x 8 register block (8 channels x 8 pixels, or 8 x 8 channels for the weight
 * gradient), hence the divisions by 8 in the grids below: on llvmpipe loads cost far more than
 * FMAs.
 */
const WG = 64;
/**
 * Split-K sizing of the weight and bias gradients: cut the N * OH output rows into chunks until
 * about this many invocations run...
 */
const TARGET_INVOCATIONS = 16384;
/** ...but give each chunk at least this many terms (output pixels), so partials stay few. */
const MIN_TERMS_PER_CHUNK = 256;

/** Options of {@link conv2d}; a number applies to both height and width. */
export interface Conv2dOptions {
  /** Step between windows, `[strideH, strideW]` or one number for both; positive; default 1. */
  stride?: number | [number, number];
  /** Zeros added on each side, `[padH, padW]` or one number for both; default 0. */
  padding?: number | [number, number];
}

/** The u32 fields every direct conv2d kernel's uniform struct starts with. */
function common(g: Geometry) {
  return {
    n: g.n,
    c: g.c,
    h: g.h,
    w: g.w,
    o: g.o,
    oh: g.oh,
    ow: g.ow,
    kh: g.kh,
    kw: g.kw,
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
  if (rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kw, g.padW)) {
    const packed = packWeight(weight, false);
    forwardRows(input, packed, out, rowsGeometry(g), { kind: "bias", bias: bias ?? null });
    packed.dispose();
  } else {
    const blocksW = Math.ceil(g.ow / 8);
    const pixelBlocks = g.n * g.oh * blocksW;
    dispatch(FORWARD, {
      // Without a bias the weight buffer fills the binding; has_bias = 0 keeps it from being read.
      buffers: [input.buffer, weight.buffer, (bias ?? weight).buffer, out.buffer],
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
      backward: (gy) => conv2dBackward(g, input, weight, bias ?? null, gy),
    });
  }
  return out;
}

function conv2dBackward(
  g: Geometry,
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  gy: Tensor,
): (Tensor | null)[] {
  const grads: (Tensor | null)[] = [
    input.requiresGrad ? inputGradient(g, weight, gy) : null,
    weight.requiresGrad ? weightGradient(g, input, gy) : null,
  ];
  if (bias) grads.push(bias.requiresGrad ? biasGradient(g, gy) : null);
  return grads;
}

function inputGradient(g: Geometry, weight: Tensor, gy: Tensor): Tensor {
  const gx = Tensor.empty([g.n, g.c, g.h, g.w]);
  // At stride 1 the input gradient is the convolution of gy with the flipped filters (O and C
  // swapped) and padding K - 1 - pad, which keeps the size: OH + 2 (KH - 1 - padH) - KH + 1 = H.
  const padH = g.kh - 1 - g.padH;
  const padW = g.kw - 1 - g.padW;
  if (g.strideH === 1 && padH >= 0 && padW >= 0 && rowsFit(1, g.strideW, g.ow, g.w, g.kw, padW)) {
    const packed = packWeight(weight, true);
    forwardRows(gy, packed, gx, { ...rowsGeometry(g), padH, padW }, { kind: "bias", bias: null });
    packed.dispose();
    return gx;
  }
  const rows = Math.ceil(g.h / g.strideH);
  const blocksW = Math.ceil(Math.ceil(g.w / g.strideW) / 8);
  const pixelBlocks = g.n * rows * blocksW;
  dispatch(BACKWARD_INPUT, {
    buffers: [gy.buffer, weight.buffer, gx.buffer],
    params: { ...common(g), rows, blocks_w: blocksW, pixel_blocks: pixelBlocks },
    workgroups: gridXZ(pixelBlocks, Math.ceil(g.c / 8) * g.strideH * g.strideW),
    constants: { WG },
  });
  return gx;
}

/** The sizes the vec4-row kernels take (stride and padding equal in both directions). */
function rowsGeometry(g: Geometry) {
  return { kh: g.kh, kw: g.kw, stride: g.strideH, padH: g.padH, padW: g.padW };
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

/** Sums `partial` [chunks, count] over its chunks into a fresh [shape] tensor; disposes it. */
function reduceChunks(partial: Tensor, chunks: number, shape: number[]): Tensor {
  const out = Tensor.empty(shape);
  dispatch(REDUCE_CHUNKS, {
    buffers: [partial.buffer, out.buffer],
    params: { count: out.size, chunks },
    workgroups: grid1d(out.size, 64),
  });
  partial.dispose();
  return out;
}

function weightGradient(g: Geometry, input: Tensor, gy: Tensor): Tensor {
  const shape = [g.o, g.c, g.kh, g.kw];
  if (rowsFit(g.strideH, g.strideW, g.w, g.ow, g.kw, g.padW)) {
    const { partial, chunks } = weightGradientRows(input, gy, rowsGeometry(g));
    return chunks > 1 ? reduceChunks(partial, chunks, shape) : partial;
  }
  const lanes = Math.ceil(g.c / 8) * g.kh * g.kw;
  const blocksO = Math.ceil(g.o / 8);
  const rows = g.n * g.oh;
  const { chunks, rowsPerChunk } = splitRows(blocksO * lanes, rows, g.ow);
  // Small lane counts (e.g. 36 for 16 channels, 3x3) would leave most of a 64-wide group idle.
  const wg = Math.min(WG, Math.ceil(lanes / 8) * 8);
  const out = Tensor.empty(chunks > 1 ? [chunks, ...shape] : shape);
  dispatch(BACKWARD_WEIGHT, {
    buffers: [input.buffer, gy.buffer, out.buffer],
    params: { ...common(g), lanes, rows_per_chunk: rowsPerChunk, rows },
    workgroups: [Math.ceil(lanes / wg), blocksO, chunks],
    constants: { WG: wg },
  });
  return chunks > 1 ? reduceChunks(out, chunks, shape) : out;
}

function biasGradient(g: Geometry, gy: Tensor): Tensor {
  const rows = g.n * g.oh;
  const { chunks, rowsPerChunk } = splitRows(g.o, rows, g.ow);
  const count = g.o * chunks;
  const out = Tensor.empty(chunks > 1 ? [chunks, g.o] : [g.o]);
  dispatch(BACKWARD_BIAS, {
    buffers: [gy.buffer, out.buffer],
    params: { o: g.o, oh: g.oh, ow: g.ow, rows_per_chunk: rowsPerChunk, rows, count },
    workgroups: grid1d(count, 64),
    constants: { VEC4: g.ow % 4 === 0 ? 1 : 0 },
  });
  return chunks > 1 ? reduceChunks(out, chunks, [g.o]) : out;
}
