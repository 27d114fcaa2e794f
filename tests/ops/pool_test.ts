import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { tidy } from "../../src/scope.ts";
import { avgPool2d, globalAvgPool2d, maxPool2d, type Pool2dOptions } from "../../src/ops/pool.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

// ---- float64 references -----------------------------------------------------------------

interface Window {
  k: [number, number];
  s: [number, number];
  p: [number, number];
}

function windowOf(o: Pool2dOptions): Window {
  const two = (v: number | [number, number]): [number, number] =>
    typeof v === "number" ? [v, v] : v;
  return { k: two(o.kernelSize), s: two(o.stride ?? o.kernelSize), p: two(o.padding ?? 0) };
}

function outShape(shape: number[], w: Window): number[] {
  const [N, C, H, W] = shape;
  return [
    N,
    C,
    Math.floor((H + 2 * w.p[0] - w.k[0]) / w.s[0]) + 1,
    Math.floor((W + 2 * w.p[1] - w.k[1]) / w.s[1]) + 1,
  ];
}

/** PyTorch's max_pool2d: -inf padding, row-major scan, a strictly greater value replaces. */
function maxPoolRef(x: Float64Array, shape: number[], w: Window) {
  const [N, C, H, W] = shape;
  const [, , OH, OW] = outShape(shape, w);
  const y = new Float64Array(N * C * OH * OW);
  const arg = new Int32Array(y.length); // flat input index of the maximum
  for (let pl = 0; pl < N * C; pl++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const hs = oh * w.s[0] - w.p[0];
        const ws = ow * w.s[1] - w.p[1];
        let best = -Infinity;
        let at = (pl * H + Math.max(hs, 0)) * W + Math.max(ws, 0);
        for (let ih = Math.max(hs, 0); ih < Math.min(hs + w.k[0], H); ih++) {
          for (let iw = Math.max(ws, 0); iw < Math.min(ws + w.k[1], W); iw++) {
            const v = x[(pl * H + ih) * W + iw];
            if (v > best) {
              best = v;
              at = (pl * H + ih) * W + iw;
            }
          }
        }
        const o = (pl * OH + oh) * OW + ow;
        y[o] = best;
        arg[o] = at;
      }
    }
  }
  return { y, arg };
}

function maxPoolBackwardRef(x: Float64Array, shape: number[], w: Window, gy: Float64Array) {
  const { arg } = maxPoolRef(x, shape, w);
  const gx = new Float64Array(x.length);
  for (let o = 0; o < gy.length; o++) gx[arg[o]] += gy[o];
  return gx;
}

/** Calls `visit(inputIndex, outputIndex, divisor)` for each (input, window) pair of avg pooling. */
function avgPoolWindows(
  shape: number[],
  w: Window,
  includePad: boolean,
  visit: (i: number, o: number, divisor: number) => void,
): void {
  const [N, C, H, W] = shape;
  const [, , OH, OW] = outShape(shape, w);
  for (let pl = 0; pl < N * C; pl++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const hs = oh * w.s[0] - w.p[0];
        const ws = ow * w.s[1] - w.p[1];
        const he = Math.min(hs + w.k[0], H + w.p[0]);
        const we = Math.min(ws + w.k[1], W + w.p[1]);
        const h0 = Math.max(hs, 0), h1 = Math.min(he, H);
        const w0 = Math.max(ws, 0), w1 = Math.min(we, W);
        const divisor = includePad ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);
        for (let ih = h0; ih < h1; ih++) {
          for (let iw = w0; iw < w1; iw++) {
            visit((pl * H + ih) * W + iw, (pl * OH + oh) * OW + ow, divisor);
          }
        }
      }
    }
  }
}

function avgPoolRef(x: Float64Array, shape: number[], w: Window, includePad: boolean) {
  const y = new Float64Array(size(outShape(shape, w)));
  avgPoolWindows(shape, w, includePad, (i, o, d) => y[o] += x[i] / d);
  return y;
}

function avgPoolBackwardRef(shape: number[], w: Window, includePad: boolean, gy: Float64Array) {
  const gx = new Float64Array(size(shape));
  avgPoolWindows(shape, w, includePad, (i, o, d) => gx[i] += gy[o] / d);
  return gx;
}

function globalRef(x: Float64Array, shape: number[]) {
  const [N, C, H, W] = shape;
  const y = new Float64Array(N * C);
  for (let pl = 0; pl < N * C; pl++) {
    for (let i = 0; i < H * W; i++) y[pl] += x[pl * H * W + i] / (H * W);
  }
  return y;
}

function globalBackwardRef(shape: number[], gy: Float64Array) {
  const hw = shape[2] * shape[3];
  return new Float64Array(size(shape)).map((_, i) => gy[Math.floor(i / hw)] / hw);
}

// ---- helpers ----------------------------------------------------------------------------

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.toArray());
}

const FD = { rtol: 1e-6, atol: 1e-7, maxRelL2: 1e-6 };

/**
 * Checks an op's forward and backward against float64 references, and the reference backward
 * against central differences of the reference forward.
 */
async function checkOp(
  shape: number[],
  seed: number,
  op: (x: Tensor) => Tensor,
  forward: (x: Float64Array) => Float64Array,
  backward: (x: Float64Array, gy: Float64Array) => Float64Array,
  what: string,
): Promise<void> {
  const x = f32(randomValues(size(shape), seed));
  const xt = Tensor.from(x, shape, { requiresGrad: true });
  const y = op(xt);
  const yRef = forward(x);
  assert.equal(y.size, yRef.length, `${what}: output size`);
  assertClose(await read(y), yRef, { what: `${what} forward` });
  const r = f32(randomValues(y.size, seed + 1));
  y.backward(Tensor.from(r, y.shape));
  const gRef = backward(x, r);
  assertClose(await read(xt.grad!), gRef, { what: `${what} grad` });
  const fd = finiteDifferences((v) => dot(forward(v), r), x);
  assertClose(gRef, fd, { ...FD, what: `${what} finite differences` });
}

/** Pooling windows: kernels 1/2/3/7, strides 1/2/3, paddings 0/1/3, non-square ones. */
const CASES: [number[], Pool2dOptions][] = [
  [[2, 3, 9, 7], { kernelSize: 3, stride: 2, padding: 1 }],
  [[1, 5, 7, 9], { kernelSize: 2, stride: 1 }],
  [[2, 3, 8, 11], { kernelSize: 2, stride: 2, padding: 1 }],
  [[1, 3, 5, 5], { kernelSize: 1 }],
  [[2, 3, 5, 7], { kernelSize: 1, stride: 2 }],
  [[1, 7, 5, 6], { kernelSize: 3, stride: 1, padding: 1 }],
  [[1, 3, 9, 9], { kernelSize: 7, stride: 2, padding: 3 }],
  [[2, 3, 7, 10], { kernelSize: [3, 2], stride: [1, 2], padding: [1, 0] }],
  [[1, 3, 11, 13], { kernelSize: 3, stride: 3, padding: 1 }],
  [[2, 3, 10, 11], { kernelSize: 2, stride: 3 }], // inputs outside every window get no gradient
];

function label(shape: number[], o: Pool2dOptions): string {
  return `[${shape}] k${o.kernelSize} s${o.stride ?? "=k"} p${o.padding ?? 0}`;
}

// ---- max pooling ------------------------------------------------------------------------

gpuTest(
  "maxPool2d() forward and backward match float64 reference for kernels 1/2/3/7, stride 1/2/3, " +
    "padding 0/1/3",
  async () => {
    let seed = 100;
    for (const [shape, o] of CASES) {
      const w = windowOf(o);
      await checkOp(
        shape,
        seed += 2,
        (x) => maxPool2d(x, o),
        (x) => maxPoolRef(x, shape, w).y,
        (x, gy) => maxPoolBackwardRef(x, shape, w, gy),
        `maxPool2d ${label(shape, o)}`,
      );
    }
  },
);

gpuTest(
  "maxPool2d() breaks ties by the first maximum in row-major order and routes the gradient " +
    "there; all -inf windows pick their first valid position",
  async () => {
    // Constant input, 2x2 windows, stride 2: each window's top-left takes the whole gradient.
    const shape = [1, 2, 4, 6];
    const x = Tensor.full(shape, 0.5, { requiresGrad: true });
    const y = maxPool2d(x, { kernelSize: 2 });
    assert.deepEqual(Array.from(await y.toArray()), new Array(12).fill(0.5));
    y.backward(Tensor.ones(y.shape));
    const gx = await read(x.grad!);
    for (let i = 0; i < gx.length; i++) {
      const row = Math.floor(i / 6) % 4;
      const col = i % 6;
      assert.equal(gx[i], row % 2 === 0 && col % 2 === 0 ? 1 : 0, `element ${i}`);
    }

    // Overlapping windows with padding over ties and over -inf: compare with the reference.
    const tieShape = [2, 3, 5, 5];
    const values = f32(randomValues(size(tieShape), 7).map((v) => Math.round(v * 2) / 2));
    values.fill(-Infinity, 25, 50); // one whole plane of -inf
    for (const o of [{ kernelSize: 3, stride: 1, padding: 1 }, { kernelSize: 2, stride: 1 }]) {
      const w = windowOf(o);
      const xt = Tensor.from(values, tieShape, { requiresGrad: true });
      const yt = maxPool2d(xt, o);
      assert.deepEqual(await read(yt), maxPoolRef(values, tieShape, w).y);
      const r = f32(randomValues(yt.size, 8));
      yt.backward(Tensor.from(r, yt.shape));
      assertClose(await read(xt.grad!), maxPoolBackwardRef(values, tieShape, w, r), {
        what: `tie gradients ${o.kernelSize}`,
      });
    }
  },
);

gpuTest("maxPool2d() under noGrad() gives the same values and records nothing", async () => {
  const shape = [2, 3, 9, 7];
  const x = f32(randomValues(size(shape), 9));
  const xt = Tensor.from(x, shape, { requiresGrad: true });
  const o = { kernelSize: 3, stride: 2, padding: 1 };
  const y = noGrad(() => maxPool2d(xt, o));
  assert.equal(y.gradFn, null);
  assert.deepEqual(await read(y), maxPoolRef(x, shape, windowOf(o)).y);
});

// ---- average pooling --------------------------------------------------------------------

gpuTest(
  "avgPool2d() forward and backward match float64 reference with countIncludePad true and false",
  async () => {
    let seed = 200;
    for (const includePad of [true, false]) {
      for (const [shape, o] of CASES) {
        // Padding-free windows do not depend on countIncludePad; test them once.
        if (!includePad && !o.padding) continue;
        const w = windowOf(o);
        await checkOp(
          shape,
          seed += 2,
          (x) => avgPool2d(x, { ...o, countIncludePad: includePad }),
          (x) => avgPoolRef(x, shape, w, includePad),
          (_x, gy) => avgPoolBackwardRef(shape, w, includePad, gy),
          `avgPool2d ${label(shape, o)} countIncludePad ${includePad}`,
        );
      }
    }
  },
);

gpuTest(
  "avgPool2d() divides border windows by 9 by default and by the valid count otherwise",
  async () => {
    const x = Tensor.ones([1, 1, 3, 3]);
    const o = { kernelSize: 3, stride: 1, padding: 1 };
    const included = await avgPool2d(x, o).toArray();
    assertClose(included, [4, 6, 4, 6, 9, 6, 4, 6, 4].map((v) => v / 9));
    const excluded = await avgPool2d(x, { ...o, countIncludePad: false }).toArray();
    assertClose(excluded, new Array(9).fill(1));
  },
);

// ---- global average pooling -------------------------------------------------------------

gpuTest(
  "globalAvgPool2d() forward and backward match float64 reference ([N, C, H, W] -> [N, C])",
  async () => {
    let seed = 300;
    for (const shape of [[2, 5, 3, 3], [1, 7, 1, 1], [3, 3, 9, 11]]) {
      const y = globalAvgPool2d(Tensor.zeros(shape));
      assert.deepEqual(y.shape, shape.slice(0, 2));
      await checkOp(
        shape,
        seed += 2,
        globalAvgPool2d,
        (x) => globalRef(x, shape),
        (_x, gy) => globalBackwardRef(shape, gy),
        `globalAvgPool2d [${shape}]`,
      );
    }
  },
);

gpuTest("pooling steps leave no GPU buffer behind (arg-max indices are released)", async () => {
  const x = Tensor.randn([2, 3, 9, 7], { seed: 400, requiresGrad: true });
  await x.toArray();
  const mark = poolMark();
  const ops = [
    (t: Tensor) => maxPool2d(t, { kernelSize: 3, stride: 2, padding: 1 }),
    (t: Tensor) => avgPool2d(t, { kernelSize: 2 }),
    globalAvgPool2d,
  ];
  for (const op of ops) {
    tidy(() => {
      const y = op(x);
      y.backward(Tensor.ones(y.shape));
    });
    x.grad!.dispose();
    x.grad = null;
  }
  assert.equal(inUseBytesSince(mark), 0);
});

// ---- errors -----------------------------------------------------------------------------

gpuTest("pooling ops reject bad ranks, sizes, paddings and option types", () => {
  const x = Tensor.zeros([1, 2, 5, 5]);
  for (const pool of [maxPool2d, avgPool2d]) {
    assert.throws(() => pool(Tensor.zeros([2, 5, 5]), { kernelSize: 2 }), RangeError);
    assert.throws(() => pool(x, { kernelSize: 0 }), RangeError);
    assert.throws(() => pool(x, { kernelSize: 2.5 }), RangeError);
    assert.throws(() => pool(x, { kernelSize: 2, stride: 0 }), RangeError);
    assert.throws(() => pool(x, { kernelSize: 2, padding: -1 }), RangeError);
    // PyTorch: "pad should be at most half of effective kernel size".
    assert.throws(() => pool(x, { kernelSize: 3, padding: 2 }), /at most half/);
    assert.throws(() => pool(x, { kernelSize: 1, padding: 1 }), /at most half/);
    assert.throws(() => pool(x, { kernelSize: [3, 4], padding: [1, 3] }), /at most half/);
    assert.throws(() => pool(x, { kernelSize: 7 }), /too small/);
    // deno-lint-ignore no-explicit-any
    const loose = pool as any;
    assert.throws(() => loose(x, { kernelSize: "3" }), TypeError);
    assert.throws(() => loose(x, { kernelSize: [3] }), RangeError);
    assert.throws(() => loose(x), TypeError);
    assert.throws(() => loose([1, 2], { kernelSize: 2 }), TypeError);
  }
  // deno-lint-ignore no-explicit-any
  assert.throws(() => avgPool2d(x, { kernelSize: 2, countIncludePad: 1 as any }), TypeError);
  assert.throws(() => globalAvgPool2d(Tensor.zeros([2, 5])), RangeError);
  assert.throws(() => globalAvgPool2d(Tensor.zeros([2, 5, 0, 3])), RangeError);
});
