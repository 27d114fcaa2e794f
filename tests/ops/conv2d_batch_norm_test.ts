import assert from "node:assert/strict";
import { conv2dBatchNormEval } from "../../src/ops/conv2d_batch_norm.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { batchNorm2d } from "../../src/ops/batch_norm.ts";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { kernelFamily } from "../../src/gpu/device.ts";
import { assertClose, dot, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";
import { convBackwardReference, convReference, type Geo } from "./_conv_reference.ts";
import { bnBackward, bnForward, type RefOptions } from "./_batch_norm_reference.ts";

// ---- float64 reference -------------------------------------------------------------------------

interface Case {
  input: number[];
  weight: number[];
  convBias: boolean;
  affine: boolean;
  residual: boolean;
  relu: boolean;
  stride: number;
  padding: number;
}

function geo(c: Case): Geo {
  const [n, ch, h, w] = c.input;
  const [o, , kh, kw] = c.weight;
  const oh = Math.floor((h + 2 * c.padding - kh) / c.stride) + 1;
  const ow = Math.floor((w + 2 * c.padding - kw) / c.stride) + 1;
  const [s, p] = [c.stride, c.padding];
  return { n, c: ch, h, w, o, kh, kw, strideH: s, strideW: s, padH: p, padW: p, oh, ow };
}

/** Every value a case's op reads, float32-exact. */
interface Values {
  x: Float64Array;
  w: Float64Array;
  b: Float64Array | null;
  mean: Float64Array;
  variance: Float64Array;
  gamma: Float64Array | null;
  beta: Float64Array | null;
  r: Float64Array | null;
}

const EPS = 1e-5;
const f32 = (values: Float64Array) => Float64Array.from(Float32Array.from(values));

function values(c: Case, seed: number): Values {
  const g = geo(c);
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  return {
    x: f32(randomValues(size(c.input), seed)),
    w: f32(randomValues(size(c.weight), seed + 1, 0.5)),
    b: c.convBias ? f32(randomValues(g.o, seed + 2)) : null,
    mean: f32(randomValues(g.o, seed + 3, 0.5)),
    variance: f32(randomValues(g.o, seed + 4).map((v) => 0.5 + Math.abs(v))),
    gamma: c.affine ? f32(randomValues(g.o, seed + 5).map((v) => 1 + 0.5 * v)) : null,
    beta: c.affine ? f32(randomValues(g.o, seed + 6)) : null,
    r: c.residual ? f32(randomValues(g.n * g.o * g.oh * g.ow, seed + 7)) : null,
  };
}

/** The eval-mode batch norm of a case, as the reference's options. */
function bnOptions(v: Values, c: Case): RefOptions {
  return {
    weight: v.gamma,
    bias: v.beta,
    runningMean: v.mean,
    runningVar: v.variance,
    training: false,
    eps: EPS,
    residual: v.r,
    relu: c.relu,
  };
}

/** z = conv2d(x, w) + b, then y = relu(bn(z) + r). */
function refForward(v: Values, c: Case) {
  const g = geo(c);
  const z = convReference(v.x, v.w, v.b, g);
  return { z, y: bnForward(z, [g.n, g.o, g.oh, g.ow], bnOptions(v, c)).y };
}

/** Gradients of sum(y * gy) with respect to every input, by the chain rule in float64. */
function refBackward(v: Values, c: Case, gy: ArrayLike<number>) {
  const g = geo(c);
  const { z } = refForward(v, c);
  const bn = bnBackward(z, gy, [g.n, g.o, g.oh, g.ow], bnOptions(v, c));
  const { gx, gw, gb } = convBackwardReference(v.x, v.w, bn.gx, g);
  return { gx, gw, gb, ggamma: bn.gw, gbeta: bn.gb, gr: bn.gr };
}

// ---- GPU vs reference --------------------------------------------------------------------------

interface Made {
  x: Tensor;
  w: Tensor;
  b: Tensor | null;
  mean: Tensor;
  variance: Tensor;
  gamma: Tensor | null;
  beta: Tensor | null;
  r: Tensor | null;
}

function tensors(v: Values, c: Case, requiresGrad: boolean): Made {
  const o = c.weight[0];
  const opt = { requiresGrad };
  const g = geo(c);
  return {
    x: Tensor.from(v.x, c.input, opt),
    w: Tensor.from(v.w, c.weight, opt),
    b: v.b ? Tensor.from(v.b, [o], opt) : null,
    mean: Tensor.from(v.mean, [o]),
    variance: Tensor.from(v.variance, [o]),
    gamma: v.gamma ? Tensor.from(v.gamma, [o], opt) : null,
    beta: v.beta ? Tensor.from(v.beta, [o], opt) : null,
    r: v.r ? Tensor.from(v.r, [g.n, g.o, g.oh, g.ow], opt) : null,
  };
}

function run(t: Made, c: Case): Tensor {
  return conv2dBatchNormEval(t.x, t.w, t.b, {
    stride: c.stride,
    padding: c.padding,
    batchNorm: {
      runningMean: t.mean,
      runningVar: t.variance,
      weight: t.gamma,
      bias: t.beta,
      residual: t.r,
      relu: c.relu,
    },
  });
}

const cases: [string, Case][] = [
  ["3x3, stride 1, padding 1, 5 -> 7 channels, 6x8, batch 2, bias, residual, ReLU (vec4 rows)", {
    input: [2, 5, 6, 8],
    weight: [7, 5, 3, 3],
    convBias: true,
    affine: true,
    residual: true,
    relu: true,
    stride: 1,
    padding: 1,
  }],
  ["3x3, stride 2, padding 1, 3 -> 6 channels, 8x16, batch 1, ReLU (vec4 rows)", {
    input: [1, 3, 8, 16],
    weight: [6, 3, 3, 3],
    convBias: false,
    affine: true,
    residual: false,
    relu: true,
    stride: 2,
    padding: 1,
  }],
  ["1x1, stride 2, padding 0, 6 -> 10 channels, 7x8, no affine, no ReLU (vec4 rows)", {
    input: [2, 6, 7, 8],
    weight: [10, 6, 1, 1],
    convBias: true,
    affine: false,
    residual: false,
    relu: false,
    stride: 2,
    padding: 0,
  }],
  ["1x1, stride 1, padding 0, 9 -> 9 channels, 5x4, batch 1, residual (vec4 rows)", {
    input: [1, 9, 5, 4],
    weight: [9, 9, 1, 1],
    convBias: false,
    affine: true,
    residual: true,
    relu: false,
    stride: 1,
    padding: 0,
  }],
  [
    "7x7, stride 1, padding 3, 3 -> 5 channels, 9x7, residual, ReLU (general kernel, then batchNorm2d)",
    {
      input: [2, 3, 9, 7],
      weight: [5, 3, 7, 7],
      convBias: true,
      affine: true,
      residual: true,
      relu: true,
      stride: 1,
      padding: 3,
    },
  ],
  ["3x3, stride 2, padding 1, 4 -> 3 channels, 11x11, ReLU (general kernel, then batchNorm2d)", {
    input: [1, 4, 11, 11],
    weight: [3, 4, 3, 3],
    convBias: true,
    affine: false,
    residual: false,
    relu: true,
    stride: 2,
    padding: 1,
  }],
];

for (const [i, [name, c]] of cases.entries()) {
  gpuTest(
    `conv2dBatchNormEval() in eval mode matches float64 reference: ${name}`,
    async () => {
      const v = values(c, 100 * i + 1);
      const t = tensors(v, c, false);
      const before = gpuCounters().dispatches;
      const y = run(t, c);
      if (kernelFamily() === "gpu") {
        // Batch-norm parameters, then the tiled convolution with its epilogue, for every shape.
        assert.equal(gpuCounters().dispatches - before, 2);
      } else if (name.includes("vec4 rows")) {
        // Batch-norm parameters, then the packed filters and the convolution with its epilogue.
        assert.equal(gpuCounters().dispatches - before, 3);
      }
      const g = geo(c);
      assert.deepEqual(y.shape, [g.n, g.o, g.oh, g.ow]);
      assertClose(await y.toArray(), refForward(v, c).y, { what: "y" });
    },
  );
}

for (const i of [0, 4]) {
  const [name, c] = cases[i];
  gpuTest(
    `conv2dBatchNormEval() gradients in eval mode match float64 reference: ${name}`,
    async () => {
      const v = values(c, 500 + i);
      const t = tensors(v, c, true);
      const y = run(t, c);
      assertClose(await y.toArray(), refForward(v, c).y, { what: "y" });
      const gy = f32(randomValues(y.size, 600 + i));
      y.backward(Tensor.from(gy, y.shape));
      const e = refBackward(v, c, gy);
      assertClose(await t.x.grad!.toArray(), e.gx, { what: "grad input" });
      assertClose(await t.w.grad!.toArray(), e.gw, { what: "grad weight" });
      assertClose(await t.b!.grad!.toArray(), e.gb, { what: "grad conv bias" });
      assertClose(await t.gamma!.grad!.toArray(), e.ggamma, { what: "grad bn weight" });
      assertClose(await t.beta!.grad!.toArray(), e.gbeta, { what: "grad bn bias" });
      assertClose(await t.r!.grad!.toArray(), e.gr, { what: "grad residual" });
    },
  );
}

gpuTest(
  "conv2dBatchNormEval() in eval mode under noGrad fuses even with parameters that need grad",
  async () => {
    const c = cases[0][1];
    const v = values(c, 700);
    const t = tensors(v, c, true);
    const before = gpuCounters().dispatches;
    const y = noGrad(() => run(t, c));
    // Folded parameters, then the convolution (after packing its filters, software family).
    assert.equal(gpuCounters().dispatches - before, kernelFamily() === "gpu" ? 2 : 3);
    assert.equal(y.requiresGrad, false);
    assertClose(await y.toArray(), refForward(v, c).y);
  },
);

gpuTest("conv2dBatchNormEval() equals conv2d then batchNorm2d in eval mode", async () => {
  const c = cases[0][1];
  const v = values(c, 800);
  const t = tensors(v, c, false);
  const fused = run(t, c);
  const separate = batchNorm2d(conv2d(t.x, t.w, t.b, { padding: 1 }), {
    runningMean: t.mean,
    runningVar: t.variance,
    weight: t.gamma,
    bias: t.beta,
    training: false,
    residual: t.r,
    relu: true,
  });
  assertClose(await fused.toArray(), await separate.toArray(), { what: "fused vs separate" });
  assert.deepEqual(await t.mean.toArray(), Float32Array.from(v.mean));
});

gpuTest("conv2dBatchNormEval() adds a residual that is the convolution's own input", async () => {
  // [2, 4, 6, 8] -> [2, 4, 6, 8]: the fused kernel binds the input twice, as x and as res.
  const x = Tensor.from(randomValues(2 * 4 * 48, 810), [2, 4, 6, 8]);
  const w = Tensor.from(randomValues(4 * 4 * 9, 811, 0.3), [4, 4, 3, 3]);
  const bn = { runningMean: Tensor.zeros([4]), runningVar: Tensor.ones([4]), eps: 0 };
  const fused = noGrad(() =>
    conv2dBatchNormEval(x, w, null, { padding: 1, batchNorm: { ...bn, residual: x } })
  );
  const separate = noGrad(() =>
    batchNorm2d(conv2d(x, w, null, { padding: 1 }), { ...bn, training: false, residual: x })
  );
  assertClose(await fused.toArray(), await separate.toArray(), { what: "fused vs separate" });
});

// ---- the reference backward against finite differences -----------------------------------------

Deno.test("float64 reference conv2dBatchNormEval backward matches finite differences", () => {
  const c: Case = {
    input: [2, 2, 4, 5],
    weight: [3, 2, 3, 3],
    convBias: true,
    affine: true,
    residual: true,
    relu: true,
    stride: 2,
    padding: 1,
  };
  const v = values(c, 900);
  const g = geo(c);
  const gy = randomValues(g.n * g.o * g.oh * g.ow, 901);
  const e = refBackward(v, c, gy);
  const loss = (changed: Partial<Values>) => dot(refForward({ ...v, ...changed }, c).y, gy);
  const opts = { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-7 };
  assertClose(e.gx, finiteDifferences((x) => loss({ x }), v.x), { ...opts, what: "gx" });
  assertClose(e.gw, finiteDifferences((w) => loss({ w }), v.w), { ...opts, what: "gw" });
  assertClose(e.gb, finiteDifferences((b) => loss({ b }), v.b!), { ...opts, what: "gb" });
  assertClose(e.ggamma, finiteDifferences((gamma) => loss({ gamma }), v.gamma!), {
    ...opts,
    what: "ggamma",
  });
  assertClose(e.gbeta, finiteDifferences((beta) => loss({ beta }), v.beta!), {
    ...opts,
    what: "gbeta",
  });
  assertClose(e.gr, finiteDifferences((r) => loss({ r }), v.r!), { ...opts, what: "gr" });
});

// ---- bad input ---------------------------------------------------------------------------------

gpuTest("conv2dBatchNormEval() rejects wrong shapes and options with named errors", () => {
  const x = Tensor.zeros([2, 3, 8, 8]);
  const w = Tensor.zeros([4, 3, 3, 3]);
  const stats = { runningMean: Tensor.zeros([4]), runningVar: Tensor.ones([4]) };
  const ok = { padding: 1, batchNorm: stats };
  const throwsRange = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof RangeError && pattern.test(e.message));
  const throwsType = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof TypeError && pattern.test(e.message));
  throwsRange(
    () => conv2dBatchNormEval(Tensor.zeros([2, 4, 8, 8]), w, null, ok),
    /conv2dBatchNormEval\(\): input must be \[N, C, H, W\] with C = 3/,
  );
  throwsRange(
    () => conv2dBatchNormEval(x, w, null, { ...ok, stride: 0 }),
    /conv2dBatchNormEval\(\): stride/,
  );
  throwsRange(
    () =>
      conv2dBatchNormEval(x, w, null, {
        ...ok,
        batchNorm: { ...stats, runningMean: Tensor.zeros([3]) },
      }),
    /conv2dBatchNormEval\(\): options.batchNorm.runningMean must be \[O\] = \[4\].*got \[3\]/,
  );
  throwsRange(
    () => conv2dBatchNormEval(x, w, null, { ...ok, batchNorm: {} as never }),
    /conv2dBatchNormEval\(\): eval mode/,
  );
  throwsRange(
    () =>
      conv2dBatchNormEval(x, w, null, {
        ...ok,
        batchNorm: { ...stats, residual: Tensor.zeros([2, 4, 8, 7]) },
      }),
    /conv2dBatchNormEval\(\): options.batchNorm.residual must have the output's shape \[2, 4, 8, 8\]/,
  );
  throwsRange(
    () => conv2dBatchNormEval(x, w, null, { ...ok, batchNorm: { ...stats, eps: -1 } }),
    /eps/,
  );
  throwsType(
    () => conv2dBatchNormEval(x, w, null, null as never),
    /conv2dBatchNormEval\(\): options/,
  );
  throwsType(
    () => conv2dBatchNormEval(x, w, null, { padding: 1 } as never),
    /conv2dBatchNormEval\(\): options.batchNorm/,
  );
  throwsType(
    () =>
      conv2dBatchNormEval(x, w, null, { ...ok, batchNorm: { ...stats, residual: [1] as never } }),
    /options.batchNorm.residual/,
  );
  throwsType(
    () => conv2dBatchNormEval(x, w, null, { ...ok, batchNorm: { ...stats, relu: 1 as never } }),
    /options.batchNorm.relu/,
  );
  throwsType(
    () => conv2dBatchNormEval("x" as never, w, null, ok),
    /conv2dBatchNormEval\(\): input/,
  );
});
