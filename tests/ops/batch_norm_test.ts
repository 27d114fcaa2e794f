import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { tidy } from "../../src/scope.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { batchNorm2d, type BatchNorm2dOptions } from "../../src/ops/batch_norm.ts";
import { assertClose, dot, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";
import { bnBackward, bnForward, type RefOptions } from "./_batch_norm_reference.ts";

// ---- helpers ----------------------------------------------------------------------------

/** Values as the GPU holds them (rounded to float32), in float64. */
function f32(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Random positive variances in [0.5, 1.5). */
function variances(n: number, seed: number): Float64Array {
  return f32(randomValues(n, seed, 0.5).map((v) => 1 + v));
}

async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.toArray());
}

/** Finite-difference tolerance for float64 references (central differences, eps 1e-6). */
const FD = { rtol: 1e-6, atol: 1e-7, maxRelL2: 1e-6 };

// ---- forward ----------------------------------------------------------------------------

gpuTest(
  "batchNorm2d() training matches float64 reference and updates running stats and counter " +
    "as PyTorch (momentum, unbiased variance)",
  async () => {
    const shape = [3, 5, 7, 9];
    const C = shape[1];
    const x = f32(randomValues(size(shape), 1, 2).map((v, i) => v + (i % 3)));
    const weight = f32(randomValues(C, 2));
    const bias = f32(randomValues(C, 3));
    const rm0 = f32(randomValues(C, 4));
    const rv0 = variances(C, 5);
    const runningMean = Tensor.from(rm0);
    const runningVar = Tensor.from(rv0);
    const counter = Tensor.zeros([]);
    const opts = (extra: Partial<BatchNorm2dOptions>): BatchNorm2dOptions => ({
      weight: Tensor.from(weight),
      bias: Tensor.from(bias),
      runningMean,
      runningVar,
      numBatchesTracked: counter,
      training: true,
      ...extra,
    });

    const y1 = batchNorm2d(Tensor.from(x, shape), opts({}));
    const r1 = bnForward(x, shape, {
      weight,
      bias,
      runningMean: rm0,
      runningVar: rv0,
      training: true,
    });
    assertClose(await read(y1), r1.y, { what: "y" });
    assertClose(await read(runningMean), r1.runningMean!, { what: "running mean" });
    assertClose(await read(runningVar), r1.runningVar!, { what: "running var" });
    assert.equal(await counter.item(), 1);

    // A second step starts from the updated running statistics, with other momentum and eps.
    const x2 = f32(randomValues(size(shape), 6));
    const y2 = batchNorm2d(Tensor.from(x2, shape), opts({ momentum: 0.3, eps: 1e-3 }));
    const r2 = bnForward(x2, shape, {
      weight,
      bias,
      runningMean: r1.runningMean,
      runningVar: r1.runningVar,
      training: true,
      momentum: 0.3,
      eps: 1e-3,
    });
    assertClose(await read(y2), r2.y, { what: "y (step 2)" });
    assertClose(await read(runningMean), r2.runningMean!, { what: "running mean (step 2)" });
    assertClose(await read(runningVar), r2.runningVar!, { what: "running var (step 2)" });
    assert.equal(await counter.item(), 2);

    // The unbiased factor n / (n - 1) is really applied: momentum 1 stores the batch variance.
    const rv = Tensor.ones([C]);
    batchNorm2d(Tensor.from(x2, shape), {
      runningMean: Tensor.zeros([C]),
      runningVar: rv,
      training: true,
      momentum: 1,
    });
    const n = shape[0] * shape[2] * shape[3];
    const biased = r2.invstd.map((s) => 1 / (s * s) - 1e-3);
    assertClose(await read(rv), biased.map((v) => v * n / (n - 1)), { what: "unbiased var" });
  },
);

gpuTest(
  "batchNorm2d() training without affine or running stats matches float64 reference for " +
    "batch 1, H*W above 256 (scalar and vec4 loads: 17x19, 16x20), batch 5 of 2x2 and N*H*W = 2",
  async () => {
    for (
      const [shape, seed] of [
        [[1, 7, 3, 5], 10],
        [[2, 3, 17, 19], 11],
        [[2, 3, 16, 20], 14],
        [[5, 4, 2, 2], 15],
        [[2, 3, 1, 1], 12],
      ] as [
        number[],
        number,
      ][]
    ) {
      const x = f32(randomValues(size(shape), seed));
      const y = batchNorm2d(Tensor.from(x, shape), { training: true });
      assertClose(await read(y), bnForward(x, shape, { training: true }).y, {
        what: `y ${shape}`,
      });
    }
  },
);

gpuTest(
  "batchNorm2d() keeps an accurate variance for values far from zero (100 +- 0.1), " +
    "planes of 81 (scalar loads) and 64 (vec4 loads)",
  async () => {
    for (const shape of [[4, 3, 9, 9], [4, 3, 8, 8]]) {
      const x = f32(randomValues(size(shape), 13, 0.1).map((v) => 100 + v));
      const runningMean = Tensor.zeros([3]);
      const runningVar = Tensor.zeros([3]);
      batchNorm2d(Tensor.from(x, shape), { runningMean, runningVar, training: true, momentum: 1 });
      const r = bnForward(x, shape, {
        runningMean: new Float64Array(3),
        runningVar: new Float64Array(3),
        training: true,
        momentum: 1,
      });
      // E[x^2] - E[x]^2 in float32 would lose every digit here (1e4 - 1e4 for a variance of 3e-3).
      const what = `${shape}`;
      assertClose(await read(runningMean), r.runningMean!, { rtol: 1e-6, atol: 0, what });
      assertClose(await read(runningVar), r.runningVar!, { rtol: 1e-4, atol: 0, what });
    }
  },
);

gpuTest(
  "batchNorm2d() eval mode normalizes with the running statistics and leaves them unchanged",
  async () => {
    const shape = [2, 5, 3, 3];
    const C = 5;
    const x = f32(randomValues(size(shape), 20, 2));
    const weight = f32(randomValues(C, 21));
    const bias = f32(randomValues(C, 22));
    const rm = f32(randomValues(C, 23));
    const rv = variances(C, 24);
    const runningMean = Tensor.from(rm);
    const runningVar = Tensor.from(rv);
    const counter = Tensor.full([], 5);
    const base = { runningMean, runningVar, numBatchesTracked: counter, training: false };
    const cases: [string, Float64Array | null, Float64Array | null][] = [
      ["affine", weight, bias],
      ["plain", null, null],
      ["weight only", weight, null],
      ["bias only", null, bias],
    ];
    for (const [what, w, b] of cases) {
      const y = batchNorm2d(Tensor.from(x, shape), {
        ...base,
        weight: w && Tensor.from(w),
        bias: b && Tensor.from(b),
        eps: 1e-4,
      });
      const ref = bnForward(x, shape, {
        weight: w,
        bias: b,
        runningMean: rm,
        runningVar: rv,
        training: false,
        eps: 1e-4,
      });
      assertClose(await read(y), ref.y, { what });
    }
    assert.deepEqual(await read(runningMean), rm);
    assert.deepEqual(await read(runningVar), rv);
    assert.equal(await counter.item(), 5);
  },
);

// ---- backward ---------------------------------------------------------------------------

/** Runs the op with gradients, seeds y with r, and returns the gradients of x, weight, bias. */
async function gpuGrads(
  x: Float64Array,
  shape: number[],
  r: Float64Array,
  o: RefOptions,
): Promise<{ gx: Float64Array; gw: Float64Array | null; gb: Float64Array | null }> {
  const xt = Tensor.from(x, shape, { requiresGrad: true });
  const wt = o.weight ? Tensor.from(o.weight, undefined, { requiresGrad: true }) : null;
  const bt = o.bias ? Tensor.from(o.bias, undefined, { requiresGrad: true }) : null;
  const y = batchNorm2d(xt, {
    weight: wt,
    bias: bt,
    runningMean: o.runningMean && Tensor.from(o.runningMean),
    runningVar: o.runningVar && Tensor.from(o.runningVar),
    training: o.training,
    eps: o.eps,
  });
  y.backward(Tensor.from(r, shape));
  return {
    gx: await read(xt.grad!),
    gw: wt ? await read(wt.grad!) : null,
    gb: bt ? await read(bt.grad!) : null,
  };
}

async function checkGradients(shape: number[], o: RefOptions, seed: number): Promise<void> {
  const x = f32(randomValues(size(shape), seed, 2));
  const r = f32(randomValues(size(shape), seed + 1));
  const ref = bnBackward(x, r, shape, o);
  const gpu = await gpuGrads(x, shape, r, o);
  assertClose(gpu.gx, ref.gx, { what: "grad x" });
  if (o.weight) assertClose(gpu.gw!, ref.gw, { what: "grad weight" });
  if (o.bias) assertClose(gpu.gb!, ref.gb, { what: "grad bias" });

  // The closed forms against central differences of the float64 forward.
  const loss = (xv: Float64Array, wv = o.weight, bv = o.bias) =>
    dot(bnForward(xv, shape, { ...o, weight: wv, bias: bv }).y, r);
  assertClose(ref.gx, finiteDifferences((v) => loss(v), x), { ...FD, what: "fd x" });
  if (o.weight) {
    assertClose(ref.gw, finiteDifferences((v) => loss(x, v), o.weight), { ...FD, what: "fd w" });
  }
  if (o.bias) {
    const fd = finiteDifferences((v) => loss(x, o.weight, v), o.bias);
    assertClose(ref.gb, fd, { ...FD, what: "fd b" });
  }
}

gpuTest(
  "batchNorm2d() training gradients of x, weight, bias match float64 reference and finite " +
    "differences",
  async () => {
    const C = 3;
    await checkGradients([2, C, 5, 7], {
      weight: f32(randomValues(C, 31)),
      bias: f32(randomValues(C, 32)),
      runningMean: new Float64Array(C),
      runningVar: new Float64Array(C).fill(1),
      training: true,
    }, 30);
  },
);

for (const shape of [[8, 3, 32, 32], [4, 2, 33, 33]]) {
  gpuTest(
    `batchNorm2d() statistics, running update and gradients over many values per channel ` +
      `(several chunks in the gpu family) match float64 reference: ${shape.join("x")}`,
    async () => {
      const C = shape[1];
      // Values far from zero, so that the shifted sums matter.
      const x = f32(randomValues(size(shape), 70, 2).map((v) => v + 50));
      const r = f32(randomValues(size(shape), 71));
      const o: RefOptions = {
        weight: f32(randomValues(C, 72)),
        bias: f32(randomValues(C, 73)),
        runningMean: f32(randomValues(C, 74)),
        runningVar: variances(C, 75),
        training: true,
      };
      const runningMean = Tensor.from(o.runningMean!);
      const runningVar = Tensor.from(o.runningVar!);
      const y = batchNorm2d(Tensor.from(x, shape), {
        weight: Tensor.from(o.weight!),
        bias: Tensor.from(o.bias!),
        runningMean,
        runningVar,
        training: true,
      });
      const ref = bnForward(x, shape, o);
      assertClose(await read(y), ref.y, { what: "y" });
      assertClose(await read(runningMean), ref.runningMean!, { what: "running mean" });
      assertClose(await read(runningVar), ref.runningVar!, { what: "running var" });
      const gpu = await gpuGrads(x, shape, r, o);
      const e = bnBackward(x, r, shape, o);
      assertClose(gpu.gx, e.gx, { what: "grad x" });
      assertClose(gpu.gw!, e.gw, { what: "grad weight" });
      assertClose(gpu.gb!, e.gb, { what: "grad bias" });
    },
  );
}

gpuTest(
  "batchNorm2d() training gradient without affine matches float64 reference (batch 1, 7 " +
    "channels, odd spatial size)",
  async () => {
    await checkGradients([1, 7, 3, 5], { training: true }, 40);
  },
);

gpuTest(
  "batchNorm2d() eval gradients (dx = dy * w * invstd, dweight, dbias) match float64 reference " +
    "and finite differences",
  async () => {
    const C = 5;
    await checkGradients([3, C, 3, 3], {
      weight: f32(randomValues(C, 51)),
      bias: f32(randomValues(C, 52)),
      runningMean: f32(randomValues(C, 53)),
      runningVar: variances(C, 54),
      training: false,
      eps: 1e-3,
    }, 50);
  },
);

gpuTest(
  "batchNorm2d() backward gives weight/bias gradients only where required, and none under " +
    "noGrad()",
  async () => {
    const shape = [2, 3, 3, 3];
    const C = 3;
    const x = f32(randomValues(size(shape), 60));
    const r = f32(randomValues(size(shape), 61));
    const w = f32(randomValues(C, 62));
    const xt = Tensor.from(x, shape, { requiresGrad: true });
    const wt = Tensor.from(w); // a constant weight, no bias
    const y = batchNorm2d(xt, { weight: wt, training: true });
    y.backward(Tensor.from(r, shape));
    const ref = bnBackward(x, r, shape, { weight: w, training: true });
    assertClose(await read(xt.grad!), ref.gx, { what: "grad x" });
    assert.equal(wt.grad, null);

    // Only the weight requires grad: dweight still comes from the batch statistics.
    const wg = Tensor.from(w, undefined, { requiresGrad: true });
    batchNorm2d(Tensor.from(x, shape), { weight: wg, training: true }).backward(
      Tensor.from(r, shape),
    );
    assertClose(await read(wg.grad!), ref.gw, { what: "grad weight" });

    // Eval mode with only x requiring grad skips the reduction.
    const rm = f32(randomValues(C, 63));
    const rv = variances(C, 64);
    const xe = Tensor.from(x, shape, { requiresGrad: true });
    batchNorm2d(xe, {
      weight: wt,
      runningMean: Tensor.from(rm),
      runningVar: Tensor.from(rv),
      training: false,
    }).backward(Tensor.from(r, shape));
    const refEval = bnBackward(x, r, shape, {
      weight: w,
      runningMean: rm,
      runningVar: rv,
      training: false,
    });
    assertClose(await read(xe.grad!), refEval.gx, { what: "eval grad x" });

    const untracked = noGrad(() => batchNorm2d(xt, { weight: wg, training: true }));
    assert.equal(untracked.requiresGrad, false);
    assert.equal(untracked.gradFn, null);
  },
);

gpuTest("batchNorm2d() steps with and without grad leave no GPU buffer behind", async () => {
  const shape = [2, 3, 5, 5];
  const x = Tensor.randn(shape, { seed: 70, requiresGrad: true });
  const weight = Tensor.ones([3], { requiresGrad: true });
  const bias = Tensor.zeros([3], { requiresGrad: true });
  const running = { runningMean: Tensor.zeros([3]), runningVar: Tensor.ones([3]) };
  const counter = Tensor.zeros([]);
  await counter.toArray();
  const mark = poolMark();
  for (const training of [true, false]) {
    const options = { weight, bias, ...running, numBatchesTracked: counter, training };
    tidy(() => {
      const y = batchNorm2d(x, options);
      y.backward(Tensor.ones(shape));
      noGrad(() => batchNorm2d(x, options));
    });
    for (const t of [x, weight, bias]) {
      t.grad!.dispose();
      t.grad = null;
    }
  }
  assert.equal(await counter.item(), 2);
  assert.equal(inUseBytesSince(mark), 0);
});

// ---- errors -----------------------------------------------------------------------------

gpuTest("batchNorm2d() rejects bad shapes, missing running stats and bad options", () => {
  const x = Tensor.zeros([2, 3, 4, 4]);
  const c3 = Tensor.zeros([3]);
  const c4 = Tensor.zeros([4]);
  assert.throws(() => batchNorm2d(Tensor.zeros([2, 3, 4]), { training: true }), RangeError);
  assert.throws(() => batchNorm2d(Tensor.zeros([2, 3, 4, 4, 1]), { training: true }), RangeError);
  assert.throws(
    () => batchNorm2d(x, { weight: c4, training: true }),
    /weight must be \[C\] = \[3\]/,
  );
  assert.throws(() => batchNorm2d(x, { bias: Tensor.zeros([3, 1]), training: true }), RangeError);
  assert.throws(
    () => batchNorm2d(x, { runningMean: c4, runningVar: Tensor.zeros([4]), training: true }),
    RangeError,
  );
  assert.throws(() => batchNorm2d(x, { training: false }), /eval mode/);
  assert.throws(() => batchNorm2d(x, { runningMean: c3, training: false }), RangeError);
  assert.throws(
    () => batchNorm2d(x, { runningMean: c3, runningVar: c3, training: true }),
    RangeError,
  );
  assert.throws(
    () => batchNorm2d(x, { numBatchesTracked: Tensor.zeros([]), training: true }),
    RangeError,
  );
  assert.throws(
    () =>
      batchNorm2d(x, {
        runningMean: c3,
        runningVar: Tensor.ones([3]),
        numBatchesTracked: Tensor.zeros([2]),
        training: true,
      }),
    RangeError,
  );
  // PyTorch: "Expected more than 1 value per channel when training".
  assert.throws(
    () => batchNorm2d(Tensor.zeros([1, 3, 1, 1]), { training: true }),
    /more than 1 value per channel/,
  );
  assert.throws(() => batchNorm2d(x, { training: true, eps: -1 }), RangeError);
  assert.throws(() => batchNorm2d(x, { training: true, momentum: NaN }), RangeError);
  // deno-lint-ignore no-explicit-any
  const loose = batchNorm2d as any;
  assert.throws(() => loose([1, 2], { training: true }), TypeError);
  assert.throws(() => loose(x), TypeError);
  assert.throws(() => loose(x, { training: "yes" }), TypeError);
  assert.throws(() => loose(x, { weight: [1, 2, 3], training: true }), TypeError);
  assert.throws(() => loose(x, { training: true, momentum: "0.1" }), TypeError);
});

// ---- residual and ReLU ------------------------------------------------------------------

interface ActCase {
  input: number[];
  training: boolean;
  affine: boolean;
  residual: boolean;
  relu: boolean;
}

/** A case's float32-exact values and its reference options. */
function actValues(c: ActCase, seed: number) {
  const [n, ch, h, w] = c.input;
  const count = n * ch * h * w;
  const x = f32(
    // Channels offset from zero, so that the statistics are not trivial.
    randomValues(count, seed).map((v, i) => v + (Math.floor(i / (h * w)) % ch) * 0.3),
  );
  const o: RefOptions = {
    weight: c.affine ? f32(randomValues(ch, seed + 1).map((v) => 1 + 0.5 * v)) : null,
    bias: c.affine ? f32(randomValues(ch, seed + 2)) : null,
    residual: c.residual ? f32(randomValues(count, seed + 3)) : null,
    runningMean: f32(randomValues(ch, seed + 4, 0.5)),
    runningVar: f32(randomValues(ch, seed + 5).map((v) => 0.5 + Math.abs(v))),
    training: c.training,
    momentum: 0.2,
    relu: c.relu,
  };
  return { x, o };
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
  ["training, batch 2, 3 channels, 5x3 (planes of 15: scalar path), affine, residual, ReLU", {
    input: [2, 3, 5, 3],
    training: true,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["eval, batch 3, 4 channels, 3x3 (planes of 9: scalar path), affine, residual, ReLU", {
    input: [3, 4, 3, 3],
    training: false,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["training, batch 2, 5 channels, 7x5 (planes of 35: scalar path), no affine, ReLU", {
    input: [2, 5, 7, 5],
    training: true,
    affine: false,
    residual: false,
    relu: true,
  }],
  ["training, batch 1, 37 channels, 9x7 (planes of 63: scalar path), affine, residual, ReLU", {
    input: [1, 37, 9, 7],
    training: true,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["training, batch 2, 1 channel, 128x130 (33 chunks in the gpu family), affine, residual, ReLU", {
    input: [2, 1, 128, 130],
    training: true,
    affine: true,
    residual: true,
    relu: true,
  }],
  ["training, batch 1, 1 channel, 99x101 (scalar path, 40 chunks in the gpu family), affine", {
    input: [1, 1, 99, 101],
    training: true,
    affine: true,
    residual: false,
    relu: false,
  }],
  ["eval, batch 1, 3 channels, 33x35 (scalar path, 5 backward chunks in the gpu family), ReLU", {
    input: [1, 3, 33, 35],
    training: false,
    affine: true,
    residual: false,
    relu: true,
  }],
];

for (const [i, [name, c]] of actCases.entries()) {
  gpuTest(
    `batchNorm2d() with residual/relu: forward, gradients and running stats match float64 ` +
      `reference: ${name}`,
    async () => {
      const { x: xv, o } = actValues(c, 3000 + 10 * i);
      const ch = c.input[1];
      const x = Tensor.from(xv, c.input, { requiresGrad: true });
      const gamma = o.weight ? Tensor.from(o.weight, [ch], { requiresGrad: true }) : null;
      const beta = o.bias ? Tensor.from(o.bias, [ch], { requiresGrad: true }) : null;
      const r = o.residual ? Tensor.from(o.residual, c.input, { requiresGrad: true }) : null;
      const runningMean = Tensor.from(o.runningMean!, [ch]);
      const runningVar = Tensor.from(o.runningVar!, [ch]);
      const counter = Tensor.zeros([]);
      const y = batchNorm2d(x, {
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
      const ref = bnForward(xv, c.input, o);
      assertClose(await y.toArray(), ref.y, { what: "y" });
      assertClose(await runningMean.toArray(), ref.runningMean!, { what: "running mean" });
      assertClose(await runningVar.toArray(), ref.runningVar!, { what: "running var" });
      assert.equal(await counter.item(), c.training ? 1 : 0);

      const gy = f32(randomValues(y.size, 3100 + i));
      y.backward(Tensor.from(gy, y.shape));
      const e = bnBackward(xv, gy, c.input, o);
      assertClose(await x.grad!.toArray(), e.gx, { what: "grad input" });
      if (gamma) assertClose(await gamma.grad!.toArray(), e.gw, { what: "grad weight" });
      if (beta) assertClose(await beta.grad!.toArray(), e.gb, { what: "grad bias" });
      if (r) assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
    },
  );
}

gpuTest(
  "batchNorm2d() training encodes two passes (statistics; normalization with the running " +
    "update), its backward two (reduction; input gradient), in either kernel family",
  async () => {
    // The gpu family's reductions split each channel into chunks: the pass after each one adds
    // the chunk sums itself, and does the per-channel work (running statistics and counter;
    // weight and bias gradients) once per channel, with no pass of its own.
    const c = actCases[0][1];
    const { x: xv, o } = actValues(c, 3500);
    const x = Tensor.from(xv, c.input, { requiresGrad: true });
    const gamma = Tensor.from(o.weight!, [5], { requiresGrad: true });
    const beta = Tensor.from(o.bias!, [5], { requiresGrad: true });
    const r = Tensor.from(o.residual!, c.input, { requiresGrad: true });
    const runningMean = Tensor.from(o.runningMean!, [5]);
    const runningVar = Tensor.from(o.runningVar!, [5]);
    const counter = Tensor.zeros([]);
    let before = gpuCounters().dispatches;
    const y = batchNorm2d(x, {
      weight: gamma,
      bias: beta,
      runningMean,
      runningVar,
      numBatchesTracked: counter,
      training: true,
      momentum: 0.2,
      residual: r,
      relu: true,
    });
    assert.equal(gpuCounters().dispatches - before, 2, `statistics and normalization passes`);
    const gy = f32(randomValues(y.size, 3501));
    const dy = Tensor.from(gy, y.shape);
    before = gpuCounters().dispatches;
    y.backward(dy);
    assert.equal(gpuCounters().dispatches - before, 2, "reduction and input passes");
    const training = { ...o, training: true };
    const ref = bnForward(xv, c.input, training);
    assertClose(await y.toArray(), ref.y, { what: "y" });
    assertClose(await runningMean.toArray(), ref.runningMean!, { what: "running mean" });
    assertClose(await runningVar.toArray(), ref.runningVar!, { what: "running var" });
    assert.equal(await counter.item(), 1);
    const e = bnBackward(xv, gy, c.input, training);
    assertClose(await x.grad!.toArray(), e.gx, { what: "grad input" });
    assertClose(await gamma.grad!.toArray(), e.gw, { what: "grad weight" });
    assertClose(await beta.grad!.toArray(), e.gb, { what: "grad bias" });
    assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
  },
);

gpuTest(
  "batchNorm2d() gives the weight and bias gradients of an input without gradient (no residual)",
  async () => {
    // The gpu family writes them in its input pass, which then runs for them alone.
    const shape = [2, 3, 5, 6];
    const xv = f32(randomValues(size(shape), 3700, 2));
    const o: RefOptions = {
      weight: f32(randomValues(3, 3701)),
      bias: f32(randomValues(3, 3702)),
      training: true,
    };
    const gamma = Tensor.from(o.weight!, [3], { requiresGrad: true });
    const beta = Tensor.from(o.bias!, [3], { requiresGrad: true });
    const y = batchNorm2d(Tensor.from(xv, shape), { weight: gamma, bias: beta, training: true });
    const gy = f32(randomValues(y.size, 3703));
    y.backward(Tensor.from(gy, shape));
    const e = bnBackward(xv, gy, shape, o);
    assertClose(await gamma.grad!.toArray(), e.gw, { what: "grad weight" });
    assertClose(await beta.grad!.toArray(), e.gb, { what: "grad bias" });
  },
);

gpuTest("batchNorm2d() with residual and relu computes only the gradients needed", async () => {
  const c = actCases[0][1];
  const { x: xv, o } = actValues(c, 3600);
  const x = Tensor.from(xv, c.input);
  const gamma = Tensor.from(o.weight!, [5], { requiresGrad: true });
  const r = Tensor.from(o.residual!, c.input, { requiresGrad: true });
  const y = batchNorm2d(x, {
    weight: gamma,
    bias: Tensor.from(o.bias!, [5]),
    training: true,
    residual: r,
    relu: true,
  });
  const gy = f32(randomValues(y.size, 3601));
  y.backward(Tensor.from(gy, y.shape));
  const e = bnBackward(xv, gy, c.input, { ...o, runningMean: null, runningVar: null });
  assert.equal(x.grad, null);
  assertClose(await gamma.grad!.toArray(), e.gw, { what: "grad weight" });
  assertClose(await r.grad!.toArray(), e.gr, { what: "grad residual" });
  const plain = noGrad(() => batchNorm2d(x, { weight: gamma, training: true }));
  assert.equal(plain.requiresGrad, false);
});

Deno.test("float64 reference backward with residual and relu matches finite differences", () => {
  for (const training of [true, false]) {
    for (const input of [[2, 3, 2, 3], [2, 2, 4, 4]]) {
      const c: ActCase = { input, training, affine: true, residual: true, relu: true };
      const { x, o } = actValues(c, 3700);
      const gy = randomValues(x.length, 3701);
      const e = bnBackward(x, gy, input, o);
      const loss = (changed: Partial<RefOptions> & { x?: Float64Array }) =>
        dot(bnForward(changed.x ?? x, input, { ...o, ...changed }).y, gy);
      const opts = { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-7 };
      assertClose(e.gx, finiteDifferences((v) => loss({ x: v }), x), { ...opts, what: "gx" });
      assertClose(e.gw, finiteDifferences((weight) => loss({ weight }), o.weight!), {
        ...opts,
        what: "gweight",
      });
      assertClose(e.gb, finiteDifferences((bias) => loss({ bias }), o.bias!), {
        ...opts,
        what: "gbias",
      });
      assertClose(e.gr, finiteDifferences((residual) => loss({ residual }), o.residual!), {
        ...opts,
        what: "gresidual",
      });
    }
  }
});

gpuTest("batchNorm2d() names the residual and relu options in its errors", () => {
  const x = Tensor.zeros([2, 3, 4, 4]);
  const throwsRange = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof RangeError && pattern.test(e.message));
  const throwsType = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof TypeError && pattern.test(e.message));
  throwsRange(() => batchNorm2d(Tensor.zeros([3, 4, 4]), { training: true }), /\[N, C, H, W\]/);
  throwsRange(
    () => batchNorm2d(x, { training: true, weight: Tensor.ones([4]) }),
    /batchNorm2d\(\): options.weight must be \[C\] = \[3\], got \[4\]/,
  );
  throwsRange(() => batchNorm2d(x, { training: false }), /batchNorm2d\(\): eval mode/);
  throwsRange(
    () => batchNorm2d(x, { training: true, runningMean: Tensor.zeros([3]) }),
    /both runningMean and runningVar/,
  );
  throwsRange(
    () => batchNorm2d(x, { training: true, residual: Tensor.zeros([2, 3, 4, 3]) }),
    /residual must have the output's shape \[2, 3, 4, 4\]/,
  );
  throwsRange(() => batchNorm2d(x, { training: true, eps: -1 }), /eps/);
  throwsType(() => batchNorm2d("x" as never, { training: true }), /batchNorm2d\(\): input/);
  throwsType(() => batchNorm2d(x, null as never), /batchNorm2d\(\): options/);
  throwsType(() => batchNorm2d(x, { training: 1 as never }), /training/);
  throwsType(() => batchNorm2d(x, { training: true, relu: "yes" as never }), /relu/);
  throwsType(() => batchNorm2d(x, { training: true, residual: [1] as never }), /residual/);
  throwsType(() => batchNorm2d(x, { training: true, weight: [1] as never }), /weight/);
});
