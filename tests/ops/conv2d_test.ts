import assert from "node:assert/strict";
import { conv2d, type Conv2dOptions } from "../../src/ops/conv2d.ts";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import {
  gpuCounters,
  profileKernels,
  releaseRecording,
  startRecording,
  stopRecording,
} from "../../src/gpu/dispatch.ts";
import { batchNorm2d } from "../../src/ops/batch_norm.ts";
import { add, mul } from "../../src/ops/elementwise.ts";
import { sum } from "../../src/ops/reduce.ts";
import { kernelFamily } from "../../src/gpu/device.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";
import { convBackwardReference, convReference, type Geo } from "./_conv_reference.ts";

// ---- float64 reference -------------------------------------------------------------------------

function geo(
  [n, c, h, w]: number[],
  [o, , kh, kw]: number[],
  stride: [number, number],
  padding: [number, number],
): Geo {
  const [strideH, strideW] = stride;
  const [padH, padW] = padding;
  const oh = Math.floor((h + 2 * padH - kh) / strideH) + 1;
  const ow = Math.floor((w + 2 * padW - kw) / strideW) + 1;
  return { n, c, h, w, o, kh, kw, strideH, strideW, padH, padW, oh, ow };
}

// ---- GPU vs reference --------------------------------------------------------------------------

interface Case {
  input: number[];
  weight: number[];
  bias: boolean;
  stride: [number, number];
  padding: [number, number];
}

/** Random float32-exact inputs for a case (the reference then sees exactly what the GPU sees). */
function inputs(c: Case, seed: number) {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const x = f32(randomValues(size(c.input), seed));
  const w = f32(randomValues(size(c.weight), seed + 1, 0.5));
  const b = c.bias ? f32(randomValues(c.weight[0], seed + 2)) : null;
  return { x, w, b };
}

async function checkCase(c: Case, seed: number, grads = true): Promise<void> {
  const g = geo(c.input, c.weight, c.stride, c.padding);
  const { x, w, b } = inputs(c, seed);
  const options: Conv2dOptions = { stride: c.stride, padding: c.padding };
  const xt = Tensor.from(x, c.input, { requiresGrad: grads });
  const wt = Tensor.from(w, c.weight, { requiresGrad: grads });
  const bt = b ? Tensor.from(b, [c.weight[0]], { requiresGrad: grads }) : null;
  const y = conv2d(xt, wt, bt, options);
  assert.deepEqual(y.shape, [g.n, g.o, g.oh, g.ow]);
  assertClose(await y.toArray(), convReference(x, w, b, g), { what: "y" });
  if (!grads) return;

  const r = f32(randomValues(y.size, seed + 3));
  const rt = Tensor.from(r, y.shape);
  y.backward(rt);
  const expected = convBackwardReference(x, w, r, g);
  assertClose(await xt.grad!.toArray(), expected.gx, { what: "grad input" });
  assertClose(await wt.grad!.toArray(), expected.gw, { what: "grad weight" });
  if (bt) assertClose(await bt.grad!.toArray(), expected.gb, { what: "grad bias" });
  for (const t of [xt, wt, bt, y, rt, xt.grad, wt.grad, bt?.grad]) t?.dispose();
}

const cases: [string, Case][] = [
  ["batch 1, 3 -> 5 channels, 3x3, stride 1, padding 1, 9x7, bias", {
    input: [1, 3, 9, 7],
    weight: [5, 3, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [1, 1],
  }],
  ["batch 2, 6 -> 7 channels, 3x3, stride 2, padding 1, 11x11, no bias", {
    input: [2, 6, 11, 11],
    weight: [7, 6, 3, 3],
    bias: false,
    stride: [2, 2],
    padding: [1, 1],
  }],
  ["batch 2, 3 -> 5 channels, 7x7, stride 2, padding 3, 11x11, bias", {
    input: [2, 3, 11, 11],
    weight: [5, 3, 7, 7],
    bias: true,
    stride: [2, 2],
    padding: [3, 3],
  }],
  ["batch 3, 5 -> 6 channels, 1x1, stride 1, padding 0, 9x7, bias", {
    input: [3, 5, 9, 7],
    weight: [6, 5, 1, 1],
    bias: true,
    stride: [1, 1],
    padding: [0, 0],
  }],
  ["batch 2, 10 -> 9 channels, 1x1, stride 2, padding 0, 11x9, no bias", {
    input: [2, 10, 11, 9],
    weight: [9, 10, 1, 1],
    bias: false,
    stride: [2, 2],
    padding: [0, 0],
  }],
  ["batch 2, 4 -> 8 channels, 7x7, stride 1, padding 3, 19x17 (several pixel blocks), no bias", {
    input: [2, 4, 19, 17],
    weight: [8, 4, 7, 7],
    bias: false,
    stride: [1, 1],
    padding: [3, 3],
  }],
  ["batch 1, 5 -> 3 channels, 3x3, stride 1, padding 0, 11x11, bias", {
    input: [1, 5, 11, 11],
    weight: [3, 5, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [0, 0],
  }],
  ["batch 2, non-square 3x1 kernel, stride [2, 1], padding [1, 0], 9x7, bias", {
    input: [2, 3, 9, 7],
    weight: [5, 3, 3, 1],
    bias: true,
    stride: [2, 1],
    padding: [1, 0],
  }],
  ["batch 2, 9 -> 7 channels, 2x2 kernel, stride 3 (inputs no window reads), padding 1", {
    input: [2, 9, 11, 10],
    weight: [7, 9, 2, 2],
    bias: true,
    stride: [3, 3],
    padding: [1, 1],
  }],
  [
    "batch 2, 3x3, stride 3, padding 1, 7x25 (a block of columns that starts past the edge)",
    { input: [2, 3, 7, 25], weight: [4, 3, 3, 3], bias: false, stride: [3, 3], padding: [1, 1] },
  ],
  ["batch 2, 1x1, stride 2, one column (residue columns outside the input)", {
    input: [2, 3, 5, 1],
    weight: [2, 3, 1, 1],
    bias: true,
    stride: [2, 2],
    padding: [0, 0],
  }],
];

for (const [i, [name, c]] of cases.entries()) {
  gpuTest(`conv2d() forward and gradients match float64 reference: ${name}`, async () => {
    await checkCase(c, 100 * i + 1);
  });
}

// ---- the vec4-row kernels: stride 1 or 2, input and output rows of whole vec4s ----------------

// Shapes that take conv2d_forward_rows (forward and, at stride 1, the input gradient) and
// conv2d_backward_weight_rows: strides 1 and 2, column blocks of 4 to 16 outputs with left,
// right and interior edges, 1 to 4 channel vec4s with channels past O or C, kernel heights 1 to
// 5, row padding 0 to 3 (3 with a 3-row kernel sends the input gradient back to the general
// kernel, as does stride 2).
const rowCases: [string, Case][] = [
  ["batch 2, 5 -> 7 channels, 3x3, padding 1, 9x20 (a full and a partial 16-column block)", {
    input: [2, 5, 9, 20],
    weight: [7, 5, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [1, 1],
  }],
  ["batch 1, 3 -> 3 channels, 3x3, padding 1, 7x8 (8-column blocks, one channel vec4)", {
    input: [1, 3, 7, 8],
    weight: [3, 3, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [1, 1],
  }],
  ["batch 3, 6 -> 17 channels, 3x3, padding 1, 5x4 (4-column blocks, 17 channels)", {
    input: [3, 6, 5, 4],
    weight: [17, 6, 3, 3],
    bias: false,
    stride: [1, 1],
    padding: [1, 1],
  }],
  ["batch 2, 9 -> 10 channels, 1x1, padding 0, 6x12 (12-column blocks)", {
    input: [2, 9, 6, 12],
    weight: [10, 9, 1, 1],
    bias: true,
    stride: [1, 1],
    padding: [0, 0],
  }],
  ["batch 2, 4 -> 6 channels, 5x3, padding [2, 1], 7x8", {
    input: [2, 4, 7, 8],
    weight: [6, 4, 5, 3],
    bias: false,
    stride: [1, 1],
    padding: [2, 1],
  }],
  ["batch 2, 3 -> 5 channels, 3x1, padding [1, 0], 9x8", {
    input: [2, 3, 9, 8],
    weight: [5, 3, 3, 1],
    bias: true,
    stride: [1, 1],
    padding: [1, 0],
  }],
  ["batch 2, 3 -> 5 channels, 3x3, padding [3, 1], 6x8 (rows of padding only)", {
    input: [2, 3, 6, 8],
    weight: [5, 3, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [3, 1],
  }],
  ["batch 1, 2 -> 4 channels, 3x3, padding 1, 5x48 (an interior column block)", {
    input: [1, 2, 5, 48],
    weight: [4, 2, 3, 3],
    bias: false,
    stride: [1, 1],
    padding: [1, 1],
  }],
  ["batch 2, 5 -> 7 channels, 3x3, stride 2, padding 1, 9x8", {
    input: [2, 5, 9, 8],
    weight: [7, 5, 3, 3],
    bias: true,
    stride: [2, 2],
    padding: [1, 1],
  }],
  ["batch 1, 3 -> 10 channels, 3x3, stride 2, padding 1, 6x40 (16- and 4-column blocks)", {
    input: [1, 3, 6, 40],
    weight: [10, 3, 3, 3],
    bias: false,
    stride: [2, 2],
    padding: [1, 1],
  }],
  ["batch 3, 6 -> 9 channels, 1x1, stride 2, padding 0, 7x24 (12-column blocks)", {
    input: [3, 6, 7, 24],
    weight: [9, 6, 1, 1],
    bias: true,
    stride: [2, 2],
    padding: [0, 0],
  }],
  ["batch 2, 4 -> 4 channels, 3x2, stride 2, padding [2, 0], 7x16", {
    input: [2, 4, 7, 16],
    weight: [4, 4, 3, 2],
    bias: true,
    stride: [2, 2],
    padding: [2, 0],
  }],
];

for (const [i, [name, c]] of rowCases.entries()) {
  gpuTest(
    `conv2d() vec4-row shapes match float64 reference in either family: ${name}`,
    async () => {
      // Software family: the forward packs the filters and runs conv2d_forward_rows, two
      // dispatches; gpu family: conv2d_forward_tiled alone.
      const { x, w } = inputs(c, 2000 + i);
      const before = gpuCounters().dispatches;
      conv2d(Tensor.from(x, c.input), Tensor.from(w, c.weight), null, {
        stride: c.stride,
        padding: c.padding,
      }).dispose();
      assert.equal(gpuCounters().dispatches - before, kernelFamily() === "gpu" ? 1 : 2);
      await checkCase(c, 1000 + 100 * i);
    },
  );
}

gpuTest("conv2d() takes a single number for stride and padding", async () => {
  const { x, w } = inputs({
    input: [2, 3, 9, 7],
    weight: [4, 3, 3, 3],
    bias: false,
    stride: [2, 2],
    padding: [1, 1],
  }, 7);
  const y = conv2d(Tensor.from(x, [2, 3, 9, 7]), Tensor.from(w, [4, 3, 3, 3]), undefined, {
    stride: 2,
    padding: 1,
  });
  const g = geo([2, 3, 9, 7], [4, 3, 3, 3], [2, 2], [1, 1]);
  assert.deepEqual(y.shape, [2, 4, 5, 4]);
  assertClose(await y.toArray(), convReference(x, w, null, g));
});

gpuTest("conv2d() gradients use the split-K reduction for many output pixels", async () => {
  const c: Case = {
    input: [4, 12, 16, 16],
    weight: [17, 12, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [1, 1],
  };
  const mark = poolMark();
  await checkCase(c, 900);
  assert.equal(inUseBytesSince(mark), 0, "partial sums are released");

  // The weight gradient alone: the partial-sum kernel and the chunk reduction.
  const { x, w } = inputs(c, 901);
  const xt = Tensor.from(x, c.input);
  const wt = Tensor.from(w, c.weight, { requiresGrad: true });
  const y = conv2d(xt, wt, null, { padding: 1 });
  const r = Tensor.from(f32(randomValues(y.size, 902)), y.shape);
  const start = gpuCounters().dispatches;
  y.backward(r);
  assert.equal(gpuCounters().dispatches - start, 2);
  assert.equal(xt.grad, null);
  const g = geo(c.input, c.weight, [1, 1], [1, 1]);
  assertClose(await wt.grad!.toArray(), convBackwardReference(x, w, await r.toArray(), g).gw);
});

gpuTest(
  "conv2d() handles an empty batch: empty output, zero weight and bias gradients",
  async () => {
    const x = Tensor.from([], [0, 3, 5, 5], { requiresGrad: true });
    const w = Tensor.from(f32(randomValues(4 * 3 * 3 * 3, 3)), [4, 3, 3, 3], {
      requiresGrad: true,
    });
    const b = Tensor.from([1, 2, 3, 4], [4], { requiresGrad: true });
    const y = conv2d(x, w, b, { padding: 1 });
    assert.deepEqual(y.shape, [0, 4, 5, 5]);
    y.backward(Tensor.from([], y.shape));
    assert.deepEqual(x.grad!.shape, [0, 3, 5, 5]);
    assert.deepEqual(Array.from(await w.grad!.toArray()), new Array(108).fill(0));
    assert.deepEqual(Array.from(await b.grad!.toArray()), [0, 0, 0, 0]);
  },
);

gpuTest("conv2d() vec4-row kernels handle an empty batch: zero weight gradient", async () => {
  const x = Tensor.from([], [0, 3, 8, 8], { requiresGrad: true });
  const w = Tensor.from(f32(randomValues(4 * 3 * 3 * 3, 4)), [4, 3, 3, 3], { requiresGrad: true });
  const y = conv2d(x, w, null, { padding: 1 });
  assert.deepEqual(y.shape, [0, 4, 8, 8]);
  y.backward(Tensor.from([], y.shape));
  assert.deepEqual(x.grad!.shape, [0, 3, 8, 8]);
  assert.deepEqual(Array.from(await w.grad!.toArray()), new Array(108).fill(0));
});

gpuTest("conv2d() computes only the gradients whose input requires grad", async () => {
  const c: Case = {
    input: [1, 3, 9, 7],
    weight: [5, 3, 3, 3],
    bias: true,
    stride: [1, 1],
    padding: [1, 1],
  };
  const { x, w, b } = inputs(c, 11);
  const xt = Tensor.from(x, c.input, { requiresGrad: true });
  const wt = Tensor.from(w, c.weight);
  const bt = Tensor.from(b!, [5]);
  const y = conv2d(xt, wt, bt, { padding: 1 });
  const r = f32(randomValues(y.size, 12));
  const start = gpuCounters().dispatches;
  y.backward(Tensor.from(r, y.shape));
  assert.equal(gpuCounters().dispatches - start, 1, "only the input-gradient kernel runs");
  assert.equal(wt.grad, null);
  assert.equal(bt.grad, null);
  const g = geo(c.input, c.weight, [1, 1], [1, 1]);
  assertClose(await xt.grad!.toArray(), convBackwardReference(x, w, r, g).gx);

  const plain = conv2d(Tensor.from(x, c.input), wt, bt, { padding: 1 });
  assert.equal(plain.gradFn, null);
  const untracked = noGrad(() => conv2d(xt, wt, bt, { padding: 1 }));
  assert.equal(untracked.requiresGrad, false);
});

// ---- the reference backward against finite differences -----------------------------------------

for (
  const [name, c] of [
    ["3x3, stride 2, padding 1", {
      input: [2, 3, 5, 4],
      weight: [2, 3, 3, 3],
      bias: true,
      stride: [2, 2],
      padding: [1, 1],
    }],
    ["non-square 2x3 kernel, stride [1, 2], padding [0, 2]", {
      input: [1, 2, 4, 5],
      weight: [3, 2, 2, 3],
      bias: true,
      stride: [1, 2],
      padding: [0, 2],
    }],
  ] as [string, Case][]
) {
  Deno.test(`float64 reference conv2d backward matches finite differences: ${name}`, () => {
    const g = geo(c.input, c.weight, c.stride, c.padding);
    const { x, w, b } = inputs(c, 5);
    const r = randomValues(g.n * g.o * g.oh * g.ow, 6);
    const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) =>
      dot(convReference(xx, ww, bb, g), r);
    const expected = convBackwardReference(x, w, r, g);
    const opts = { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-7 };
    assertClose(expected.gx, finiteDifferences((v) => loss(v, w, b!), x), { ...opts, what: "gx" });
    assertClose(expected.gw, finiteDifferences((v) => loss(x, v, b!), w), { ...opts, what: "gw" });
    assertClose(expected.gb, finiteDifferences((v) => loss(x, w, v), b!), { ...opts, what: "gb" });
  });
}

// ---- bad input ---------------------------------------------------------------------------------

gpuTest("conv2d() rejects wrong ranks, shapes and options with named errors", () => {
  const x = Tensor.zeros([2, 3, 8, 8]);
  const w = Tensor.zeros([4, 3, 3, 3]);
  const b = Tensor.zeros([4]);
  const throwsRange = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof RangeError && pattern.test(e.message));
  throwsRange(() => conv2d(Tensor.zeros([3, 8, 8]), w), /conv2d\(\).*\[N, C, H, W\].*\[3, 8, 8\]/);
  throwsRange(() => conv2d(Tensor.zeros([2, 4, 8, 8]), w), /C = 3 \(weight is \[4, 3, 3, 3\]\)/);
  throwsRange(() => conv2d(x, Tensor.zeros([4, 3, 3])), /conv2d\(\): weight.*\[4, 3, 3\]/);
  throwsRange(() => conv2d(x, Tensor.zeros([4, 3, 0, 3])), /weight/);
  throwsRange(() => conv2d(x, w, Tensor.zeros([5])), /bias must be \[O\] = \[4\].*got \[5\]/);
  throwsRange(() => conv2d(x, w, Tensor.zeros([1, 4])), /bias/);
  throwsRange(() => conv2d(x, w, b, { stride: 0 }), /stride.*positive/);
  throwsRange(() => conv2d(x, w, b, { stride: 1.5 }), /stride/);
  throwsRange(() => conv2d(x, w, b, { stride: [1, -2] }), /stride.*got \[1, -2\]/);
  throwsRange(() => conv2d(x, w, b, { padding: -1 }), /padding.*non-negative/);
  throwsRange(() => conv2d(x, Tensor.zeros([4, 3, 9, 9]), b), /does not fit/);
  throwsRange(() => conv2d(x, Tensor.zeros([4, 3, 9, 9]), b, { padding: [1, 0] }), /0x-0|fit/);
  assert.throws(() => conv2d([1, 2] as unknown as Tensor, w), TypeError);
  assert.throws(() => conv2d(x, "w" as unknown as Tensor), TypeError);
  assert.throws(() => conv2d(x, w, [1, 2, 3, 4] as unknown as Tensor), TypeError);
  assert.throws(() => conv2d(x, w, b, { stride: "2" as unknown as number }), TypeError);
  // An array of the wrong length is the right kind of value with a bad size: a RangeError.
  throwsRange(
    () => conv2d(x, w, b, { padding: [1, 1, 1] as unknown as number }),
    /padding must be .* or a pair \[h, w\] of them, got an array of length 3/,
  );
  // A kernel that fits only thanks to the padding is fine.
  assert.deepEqual(conv2d(x, Tensor.zeros([4, 3, 9, 9]), b, { padding: 1 }).shape, [2, 4, 2, 2]);
});

gpuTest(
  "a bias gradient behind a training batch norm is exactly 0 and takes no pass over gy",
  async () => {
    // [N, C, H, W] = [3, 5, 6, 6] -> [3, 7, 6, 6]: odd sizes.
    const x = Tensor.from(f32(randomValues(3 * 5 * 36, 61)), [3, 5, 6, 6]);
    const w = Tensor.from(f32(randomValues(7 * 5 * 9, 62, 0.3)), [7, 5, 3, 3], {
      requiresGrad: true,
    });
    const b = Tensor.from(f32(randomValues(7, 63)), [7], { requiresGrad: true });
    const r = randomValues(3 * 7 * 36, 64);
    const upstream = Tensor.from(f32(r), [3, 7, 6, 6]);
    const bn = { runningMean: Tensor.zeros([7]), runningVar: Tensor.ones([7]), training: true };
    // Behind the batch norm alone: the bias gradient is the per-channel sum of the batch norm's
    // input gradient, which is exactly 0 (dy - mean(dy) - xhat * mean(dy * xhat) sums to 0).
    const z = conv2d(x, w, b, { padding: 1 });
    const before = gpuCounters().dispatches;
    const biasKernels = await profileKernels(() =>
      sum(mul(batchNorm2d(z, bn), upstream)).backward()
    );
    assert.ok(gpuCounters().dispatches > before);
    assert.ok(
      !biasKernels.kernels.some((k) => k.kernel.startsWith("conv2d_backward_bias")),
      biasKernels.kernels.map((k) => k.kernel).join(", "),
    );
    assert.deepEqual(Array.from(await b.grad!.toArray()), new Array(7).fill(0));
    // The weight gradient still flows.
    assert.ok((await w.grad!.toArray()).some((v) => v !== 0));
    // With a second consumer of z (a skip connection), the sum is the skip's: computed.
    b.grad = null;
    w.grad = null;
    const z2 = conv2d(x, w, b, { padding: 1 });
    sum(mul(add(batchNorm2d(z2, bn), z2), upstream)).backward();
    const expected = new Float64Array(7);
    for (let i = 0; i < r.length; i++) expected[Math.floor(i / 36) % 7] += r[i];
    assertClose(await b.grad!.toArray(), expected, { rtol: 1e-4, atol: 1e-4, what: "bias grad" });
  },
);

gpuTest(
  "zero bias gradients behind batch norms are cleared together after the backward dispatches",
  async () => {
    // conv -> batch norm -> conv -> batch norm: each layer's zero bias gradient used to be cleared
    // as its backward ran, a clear between the layers' dispatches (which splits the compute pass).
    const layer = (c: number, o: number, seed: number) => ({
      w: Tensor.from(f32(randomValues(o * c * 9, seed, 0.3)), [o, c, 3, 3], { requiresGrad: true }),
      b: Tensor.from(f32(randomValues(o, seed + 1)), [o], { requiresGrad: true }),
      bn: { runningMean: Tensor.zeros([o]), runningVar: Tensor.ones([o]), training: true },
    });
    const first = layer(3, 5, 71);
    const second = layer(5, 4, 73);
    const x = Tensor.from(f32(randomValues(2 * 3 * 25, 75)), [2, 3, 5, 5]);
    const upstream = Tensor.from(f32(randomValues(2 * 4 * 25, 76)), [2, 4, 5, 5]);
    const h = batchNorm2d(conv2d(x, first.w, first.b, { padding: 1 }), first.bn);
    const y = batchNorm2d(conv2d(h, second.w, second.b, { padding: 1 }), second.bn);
    const loss = sum(mul(y, upstream));
    startRecording();
    let recording;
    try {
      loss.backward();
    } finally {
      recording = stopRecording();
      releaseRecording(recording);
    }
    const kinds = recording.commands.map((c) => c.kind);
    const clears = kinds.flatMap((k, i) => k === "clear" ? [i] : []);
    assert.equal(clears.length, 2, kinds.join(" "));
    assert.ok(clears.every((i) => i > kinds.lastIndexOf("dispatch")), kinds.join(" "));
    assert.deepEqual(Array.from(await first.b.grad!.toArray()), [0, 0, 0, 0, 0]);
    assert.deepEqual(Array.from(await second.b.grad!.toArray()), [0, 0, 0, 0]);
  },
);
