import assert from "node:assert/strict";
import { batchNormAct, conv2dBatchNorm } from "../../src/ops/fused.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { batchNorm2d } from "../../src/ops/batch_norm.ts";
import { add, relu } from "../../src/ops/elementwise.ts";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { assertClose, dot, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";
import { convBackwardReference, convReference, type Geo } from "./_conv_reference.ts";

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

/** z = conv2d(x, w) + b, the convolution before the batch norm. */

/** y = act((z - mean) / sqrt(var + eps) * gamma + beta + r), and the pre-activation v. */
function refForward(v: Values, c: Case) {
  const g = geo(c);
  const z = convReference(v.x, v.w, v.b, g);
  const pre = new Float64Array(z.length);
  const y = new Float64Array(z.length);
  const hw = g.oh * g.ow;
  for (let i = 0; i < z.length; i++) {
    const o = Math.floor(i / hw) % g.o;
    const invstd = 1 / Math.sqrt(v.variance[o] + EPS);
    let u = (z[i] - v.mean[o]) * invstd * (v.gamma ? v.gamma[o] : 1) + (v.beta ? v.beta[o] : 0);
    if (v.r) u += v.r[i];
    pre[i] = u;
    y[i] = c.relu ? Math.max(u, 0) : u;
  }
  return { z, pre, y };
}

/** Gradients of sum(y * gy) with respect to every input, by the chain rule in float64. */
function refBackward(v: Values, c: Case, gy: ArrayLike<number>) {
  const g = geo(c);
  const { z, pre } = refForward(v, c);
  const hw = g.oh * g.ow;
  const gz = new Float64Array(z.length);
  const gr = new Float64Array(z.length);
  const ggamma = new Float64Array(g.o);
  const gbeta = new Float64Array(g.o);
  for (let i = 0; i < z.length; i++) {
    const o = Math.floor(i / hw) % g.o;
    const invstd = 1 / Math.sqrt(v.variance[o] + EPS);
    const gu = c.relu && !(pre[i] > 0) ? 0 : gy[i];
    gr[i] = gu;
    gbeta[o] += gu;
    ggamma[o] += gu * (z[i] - v.mean[o]) * invstd;
    gz[i] = gu * invstd * (v.gamma ? v.gamma[o] : 1);
  }
  const { gx, gw, gb } = convBackwardReference(v.x, v.w, gz, g);
  return { gx, gw, gb, ggamma, gbeta, gr };
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
  return conv2dBatchNorm(t.x, t.w, t.b, {
    stride: c.stride,
    padding: c.padding,
    batchNorm: {
      runningMean: t.mean,
      runningVar: t.variance,
      weight: t.gamma,
      bias: t.beta,
      training: false,
    },
    residual: t.r,
    relu: c.relu,
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
    "7x7, stride 1, padding 3, 3 -> 5 channels, 9x7, residual, ReLU (general kernel, then batchNormAct)",
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
  ["3x3, stride 2, padding 1, 4 -> 3 channels, 11x11, ReLU (general kernel, then batchNormAct)", {
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
    `conv2dBatchNorm() in eval mode matches float64 reference: ${name}`,
    async () => {
      const v = values(c, 100 * i + 1);
      const t = tensors(v, c, false);
      const before = gpuCounters().dispatches;
      const y = run(t, c);
      if (name.includes("vec4 rows")) {
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
  gpuTest(`conv2dBatchNorm() gradients in eval mode match float64 reference: ${name}`, async () => {
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
  });
}

gpuTest(
  "conv2dBatchNorm() in eval mode under noGrad fuses even with parameters that need grad",
  async () => {
    const c = cases[0][1];
    const v = values(c, 700);
    const t = tensors(v, c, true);
    const before = gpuCounters().dispatches;
    const y = noGrad(() => run(t, c));
    assert.equal(gpuCounters().dispatches - before, 3);
    assert.equal(y.requiresGrad, false);
    assertClose(await y.toArray(), refForward(v, c).y);
  },
);

gpuTest(
  "conv2dBatchNorm() in training mode equals the separate ops and updates running stats",
  async () => {
    const c = cases[0][1];
    const v = values(c, 800);
    const make = () => tensors(v, c, false);
    const a = make();
    const b = make();
    const bnOptions = (m: Made) => ({
      runningMean: m.mean,
      runningVar: m.variance,
      weight: m.gamma,
      bias: m.beta,
      training: true,
      momentum: 0.3,
    });
    const fused = conv2dBatchNorm(a.x, a.w, a.b, {
      padding: 1,
      batchNorm: bnOptions(a),
      residual: a.r,
      relu: true,
    });
    const separate = relu(
      add(batchNorm2d(conv2d(b.x, b.w, b.b, { padding: 1 }), bnOptions(b)), b.r!),
    );
    assert.deepEqual(await fused.toArray(), await separate.toArray());
    assert.deepEqual(await a.mean.toArray(), await b.mean.toArray());
    assert.deepEqual(await a.variance.toArray(), await b.variance.toArray());
    assert.notDeepEqual(await a.mean.toArray(), Float32Array.from(v.mean));
  },
);

// ---- the reference backward against finite differences -----------------------------------------

Deno.test("float64 reference conv2dBatchNorm backward matches finite differences", () => {
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

gpuTest("conv2dBatchNorm() rejects wrong shapes and options with named errors", () => {
  const x = Tensor.zeros([2, 3, 8, 8]);
  const w = Tensor.zeros([4, 3, 3, 3]);
  const stats = { runningMean: Tensor.zeros([4]), runningVar: Tensor.ones([4]), training: false };
  const ok = { padding: 1, batchNorm: stats };
  const throwsRange = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof RangeError && pattern.test(e.message));
  const throwsType = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof TypeError && pattern.test(e.message));
  throwsRange(
    () => conv2dBatchNorm(Tensor.zeros([2, 4, 8, 8]), w, null, ok),
    /conv2dBatchNorm\(\): input must be \[N, C, H, W\] with C = 3/,
  );
  throwsRange(
    () => conv2dBatchNorm(x, w, null, { ...ok, stride: 0 }),
    /conv2dBatchNorm\(\): stride/,
  );
  throwsRange(
    () =>
      conv2dBatchNorm(x, w, null, {
        ...ok,
        batchNorm: { ...stats, runningMean: Tensor.zeros([3]) },
      }),
    /conv2dBatchNorm\(\): options.batchNorm.runningMean must be \[O\] = \[4\].*got \[3\]/,
  );
  throwsRange(
    () => conv2dBatchNorm(x, w, null, { ...ok, batchNorm: { training: false } }),
    /conv2dBatchNorm\(\): eval mode/,
  );
  throwsRange(
    () => conv2dBatchNorm(x, w, null, { ...ok, residual: Tensor.zeros([2, 4, 8, 7]) }),
    /conv2dBatchNorm\(\): options.residual must have the output's shape \[2, 4, 8, 8\]/,
  );
  throwsRange(
    () => conv2dBatchNorm(x, w, null, { ...ok, batchNorm: { ...stats, eps: -1 } }),
    /eps/,
  );
  throwsType(() => conv2dBatchNorm(x, w, null, null as never), /conv2dBatchNorm\(\): options/);
  throwsType(
    () => conv2dBatchNorm(x, w, null, { padding: 1 } as never),
    /conv2dBatchNorm\(\): options.batchNorm/,
  );
  throwsType(
    () => conv2dBatchNorm(x, w, null, { ...ok, batchNorm: { ...stats, training: "no" as never } }),
    /training/,
  );
  throwsType(
    () => conv2dBatchNorm(x, w, null, { ...ok, residual: [1] as never }),
    /options.residual/,
  );
  throwsType(() => conv2dBatchNorm(x, w, null, { ...ok, relu: 1 as never }), /options.relu/);
  throwsType(() => conv2dBatchNorm("x" as never, w, null, ok), /conv2dBatchNorm\(\): input/);
});

// ---- batchNormAct -------------------------------------------------------------------------------

interface ActCase {
  input: number[];
  training: boolean;
  affine: boolean;
  residual: boolean;
  relu: boolean;
}

interface ActValues {
  x: Float64Array;
  gamma: Float64Array | null;
  beta: Float64Array | null;
  r: Float64Array | null;
  mean: Float64Array;
  variance: Float64Array;
}

function actValues(c: ActCase, seed: number): ActValues {
  const [n, ch, h, w] = c.input;
  const size = n * ch * h * w;
  return {
    // Channels offset from zero, so that the statistics are not trivial.
    x: f32(randomValues(size, seed).map((v, i) => v + (Math.floor(i / (h * w)) % ch) * 0.3)),
    gamma: c.affine ? f32(randomValues(ch, seed + 1).map((v) => 1 + 0.5 * v)) : null,
    beta: c.affine ? f32(randomValues(ch, seed + 2)) : null,
    r: c.residual ? f32(randomValues(size, seed + 3)) : null,
    mean: f32(randomValues(ch, seed + 4, 0.5)),
    variance: f32(randomValues(ch, seed + 5).map((v) => 0.5 + Math.abs(v))),
  };
}

/** The per-channel (mean, invstd) the op normalizes with: the batch's, or the running ones. */
function actStats(v: ActValues, c: ActCase) {
  const [n, ch, h, w] = c.input;
  const hw = h * w;
  const mean = new Float64Array(ch);
  const invstd = new Float64Array(ch);
  const unbiased = new Float64Array(ch);
  for (let k = 0; k < ch; k++) {
    let s = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < hw; i++) s += v.x[(b * ch + k) * hw + i];
    const m = s / (n * hw);
    let q = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) q += (v.x[(b * ch + k) * hw + i] - m) ** 2;
    }
    unbiased[k] = q / (n * hw - 1);
    mean[k] = c.training ? m : v.mean[k];
    invstd[k] = 1 / Math.sqrt((c.training ? q / (n * hw) : v.variance[k]) + EPS);
  }
  return { mean, invstd, unbiased };
}

function actForward(v: ActValues, c: ActCase) {
  const [, ch, h, w] = c.input;
  const { mean, invstd } = actStats(v, c);
  const pre = new Float64Array(v.x.length);
  const y = new Float64Array(v.x.length);
  for (let i = 0; i < v.x.length; i++) {
    const k = Math.floor(i / (h * w)) % ch;
    let u = (v.x[i] - mean[k]) * invstd[k] * (v.gamma ? v.gamma[k] : 1) + (v.beta ? v.beta[k] : 0);
    if (v.r) u += v.r[i];
    pre[i] = u;
    y[i] = c.relu ? Math.max(u, 0) : u;
  }
  return { pre, y };
}

function actBackward(v: ActValues, c: ActCase, gy: ArrayLike<number>) {
  const [n, ch, h, w] = c.input;
  const hw = h * w;
  const count = n * hw;
  const { mean, invstd } = actStats(v, c);
  const { pre } = actForward(v, c);
  const g = Float64Array.from(gy, (d, i) => (c.relu && !(pre[i] > 0) ? 0 : d));
  const gx = new Float64Array(v.x.length);
  const ggamma = new Float64Array(ch);
  const gbeta = new Float64Array(ch);
  for (let k = 0; k < ch; k++) {
    const gamma = v.gamma ? v.gamma[k] : 1;
    let sumG = 0;
    let sumGXhat = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const j = (b * ch + k) * hw + i;
        sumG += g[j];
        sumGXhat += g[j] * (v.x[j] - mean[k]) * invstd[k];
      }
    }
    gbeta[k] = sumG;
    ggamma[k] = sumGXhat;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const j = (b * ch + k) * hw + i;
        const xhat = (v.x[j] - mean[k]) * invstd[k];
        gx[j] = c.training
          ? gamma * invstd[k] / count * (count * g[j] - sumG - xhat * sumGXhat)
          : g[j] * gamma * invstd[k];
      }
    }
  }
  return { gx, ggamma, gbeta, gr: g };
}

const actCases: [string, ActCase][] = [
  ["training, batch 3, 5 channels, 4x6, affine, residual, ReLU", {
    input: [3, 5, 4, 6],
    training: true,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["training, batch 1, 3 channels, 8x8, no affine, ReLU", {
    input: [1, 3, 8, 8],
    training: true,
    affine: false,
    residual: false,
    relu: true,
  }],
  ["training, batch 2, 6 channels, 2x2, affine, residual, no ReLU", {
    input: [2, 6, 2, 2],
    training: true,
    affine: true,
    residual: true,
    relu: false,
  }],
  ["eval, batch 2, 7 channels, 4x4, affine, residual, ReLU", {
    input: [2, 7, 4, 4],
    training: false,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["training, batch 2, 3 channels, 5x3 (planes of 15: the separate ops), affine, ReLU", {
    input: [2, 3, 5, 3],
    training: true,
    affine: true,
    residual: true,
    relu: true,
  }],
];

for (const [i, [name, c]] of actCases.entries()) {
  gpuTest(
    `batchNormAct() forward, gradients and running stats match float64 reference: ${name}`,
    async () => {
      const v = actValues(c, 3000 + 10 * i);
      const ch = c.input[1];
      const x = Tensor.from(v.x, c.input, { requiresGrad: true });
      const gamma = v.gamma ? Tensor.from(v.gamma, [ch], { requiresGrad: true }) : null;
      const beta = v.beta ? Tensor.from(v.beta, [ch], { requiresGrad: true }) : null;
      const r = v.r ? Tensor.from(v.r, c.input, { requiresGrad: true }) : null;
      const runningMean = Tensor.from(v.mean, [ch]);
      const runningVar = Tensor.from(v.variance, [ch]);
      const counter = Tensor.zeros([]);
      const y = batchNormAct(x, {
        weight: gamma,
        bias: beta,
        runningMean,
        runningVar,
        numBatchesTracked: c.training ? counter : null,
        training: c.training,
        momentum: 0.2,
        residual: r,
        relu: c.relu,
      });
      assertClose(await y.toArray(), actForward(v, c).y, { what: "y" });
      const { mean, unbiased } = actStats(v, c);
      const expectMean = c.training ? v.mean.map((m, k) => 0.8 * m + 0.2 * mean[k]) : v.mean;
      const expectVar = c.training
        ? v.variance.map((s, k) => 0.8 * s + 0.2 * unbiased[k])
        : v.variance;
      assertClose(await runningMean.toArray(), expectMean, { what: "running mean" });
      assertClose(await runningVar.toArray(), expectVar, { what: "running var" });
      assert.equal(await counter.item(), c.training ? 1 : 0);

      const gy = f32(randomValues(y.size, 3100 + i));
      y.backward(Tensor.from(gy, y.shape));
      const e = actBackward(v, c, gy);
      assertClose(await x.grad!.toArray(), e.gx, { what: "grad input" });
      if (gamma) assertClose(await gamma.grad!.toArray(), e.ggamma, { what: "grad weight" });
      if (beta) assertClose(await beta.grad!.toArray(), e.gbeta, { what: "grad bias" });
      if (r) assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
    },
  );
}

gpuTest(
  "batchNormAct() encodes statistics and one fused pass; the backward two passes",
  async () => {
    const c = { ...actCases[0][1], affine: false };
    const v = actValues(c, 3500);
    const x = Tensor.from(v.x, c.input, { requiresGrad: true });
    const r = Tensor.from(v.r!, c.input, { requiresGrad: true });
    const options = {
      runningMean: Tensor.from(v.mean, [5]),
      runningVar: Tensor.from(v.variance, [5]),
      training: true,
      residual: r,
      relu: true,
    };
    let before = gpuCounters().dispatches;
    const y = batchNormAct(x, options);
    assert.equal(gpuCounters().dispatches - before, 2);
    const gy = f32(randomValues(y.size, 3501));
    before = gpuCounters().dispatches;
    y.backward(Tensor.from(gy, y.shape));
    assert.equal(gpuCounters().dispatches - before, 2, "reduce and input passes");
    const e = actBackward(v, c, gy);
    assertClose(await x.grad!.toArray(), e.gx, { what: "grad input" });
    assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
  },
);

gpuTest("batchNormAct() computes only the gradients that are needed", async () => {
  const c = actCases[0][1];
  const v = actValues(c, 3600);
  const x = Tensor.from(v.x, c.input);
  const gamma = Tensor.from(v.gamma!, [5], { requiresGrad: true });
  const r = Tensor.from(v.r!, c.input, { requiresGrad: true });
  const y = batchNormAct(x, {
    weight: gamma,
    bias: Tensor.from(v.beta!, [5]),
    training: true,
    residual: r,
    relu: true,
  });
  const gy = f32(randomValues(y.size, 3601));
  y.backward(Tensor.from(gy, y.shape));
  const e = actBackward(v, c, gy);
  assert.equal(x.grad, null);
  assertClose(await gamma.grad!.toArray(), e.ggamma, { what: "grad weight" });
  assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
  const plain = noGrad(() => batchNormAct(x, { weight: gamma, training: true }));
  assert.equal(plain.requiresGrad, false);
});

Deno.test("float64 reference batchNormAct backward matches finite differences", () => {
  for (const training of [true, false]) {
    const c: ActCase = { input: [2, 3, 2, 3], training, affine: true, residual: true, relu: true };
    const v = actValues(c, 3700);
    const gy = randomValues(v.x.length, 3701);
    const e = actBackward(v, c, gy);
    const loss = (changed: Partial<ActValues>) => dot(actForward({ ...v, ...changed }, c).y, gy);
    const opts = { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-7 };
    assertClose(e.gx, finiteDifferences((x) => loss({ x }), v.x), { ...opts, what: "gx" });
    assertClose(e.ggamma, finiteDifferences((gamma) => loss({ gamma }), v.gamma!), {
      ...opts,
      what: "ggamma",
    });
    assertClose(e.gbeta, finiteDifferences((beta) => loss({ beta }), v.beta!), {
      ...opts,
      what: "gbeta",
    });
    assertClose(e.gr, finiteDifferences((r) => loss({ r }), v.r!), { ...opts, what: "gr" });
  }
});

gpuTest("batchNormAct() rejects wrong shapes and options with named errors", () => {
  const x = Tensor.zeros([2, 3, 4, 4]);
  const throwsRange = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof RangeError && pattern.test(e.message));
  const throwsType = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof TypeError && pattern.test(e.message));
  throwsRange(() => batchNormAct(Tensor.zeros([3, 4, 4]), { training: true }), /\[N, C, H, W\]/);
  throwsRange(
    () => batchNormAct(x, { training: true, weight: Tensor.ones([4]) }),
    /batchNormAct\(\): options.weight must be \[C\] = \[3\], got \[4\]/,
  );
  throwsRange(() => batchNormAct(x, { training: false }), /batchNormAct\(\): eval mode/);
  throwsRange(
    () => batchNormAct(x, { training: true, runningMean: Tensor.zeros([3]) }),
    /both runningMean and runningVar/,
  );
  throwsRange(
    () => batchNormAct(Tensor.zeros([1, 3, 1, 1]), { training: true }),
    /more than 1 value per channel/,
  );
  throwsRange(
    () => batchNormAct(x, { training: true, residual: Tensor.zeros([2, 3, 4, 3]) }),
    /residual must have the output's shape \[2, 3, 4, 4\]/,
  );
  throwsRange(() => batchNormAct(x, { training: true, eps: -1 }), /eps/);
  throwsType(() => batchNormAct("x" as never, { training: true }), /batchNormAct\(\): input/);
  throwsType(() => batchNormAct(x, null as never), /batchNormAct\(\): options/);
  throwsType(() => batchNormAct(x, { training: 1 as never }), /training/);
  throwsType(() => batchNormAct(x, { training: true, relu: "yes" as never }), /relu/);
  throwsType(() => batchNormAct(x, { training: true, weight: [1] as never }), /weight/);
});
