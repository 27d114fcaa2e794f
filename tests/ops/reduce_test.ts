import assert from "node:assert/strict";
import { mean, sum } from "../../src/ops/reduce.ts";
import { Tensor } from "../../src/tensor.ts";
import { tidy } from "../../src/scope.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

function normalize(dims: number | number[] | undefined, rank: number): boolean[] {
  if (dims === undefined) return new Array(rank).fill(true);
  const list = typeof dims === "number" ? [dims] : dims;
  const mask = new Array(rank).fill(false);
  for (const d of list) mask[d < 0 ? d + rank : d] = true;
  return mask;
}

/** For each element of x (row-major over shape), the row-major index of its kept coordinates. */
function outputIndex(shape: readonly number[], mask: readonly boolean[]): Int32Array {
  const size = shape.reduce((p, d) => p * d, 1);
  const index = new Int32Array(size);
  const coords = new Array(shape.length).fill(0);
  for (let i = 0; i < size; i++) {
    let o = 0;
    for (let d = 0; d < shape.length; d++) if (!mask[d]) o = o * shape[d] + coords[d];
    index[i] = o;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++coords[d] < shape[d]) break;
      coords[d] = 0;
    }
  }
  return index;
}

/** float64 reference of sum/mean over the masked dims; also its backward for gradient r. */
function reference(
  x: Float64Array,
  shape: readonly number[],
  mask: readonly boolean[],
  isMean: boolean,
) {
  const index = outputIndex(shape, mask);
  const outSize = shape.reduce((p, d, i) => mask[i] ? p : p * d, 1);
  const count = shape.reduce((p, d, i) => mask[i] ? p * d : p, 1);
  const scale = isMean ? 1 / count : 1;
  const forward = (v: Float64Array) => {
    const out = new Float64Array(outSize);
    v.forEach((u, i) => out[index[i]] += u);
    return out.map((u) => u * scale);
  };
  const backward = (r: Float64Array) => x.map((_, i) => r[index[i]] * scale);
  return { forward, backward, outSize };
}

interface Case {
  shape: number[];
  dims?: number | number[];
}

const CASES: Case[] = [
  { shape: [7] },
  { shape: [7], dims: 0 },
  { shape: [7], dims: -1 },
  { shape: [5, 3], dims: 0 },
  { shape: [5, 3], dims: -1 },
  { shape: [5, 3], dims: [1, 0] },
  { shape: [3, 5, 7], dims: [0, 2] },
  { shape: [3, 5, 7], dims: 1 },
  { shape: [3, 5, 7], dims: [-1, 0] },
  { shape: [3, 5, 7, 2] },
  { shape: [3, 5, 7, 2], dims: [0, 2, 3] },
  { shape: [3, 5, 7, 2], dims: [1, 3] },
  { shape: [3, 5, 7, 2], dims: [1, 2] },
  { shape: [3, 5, 7, 2], dims: -2 },
  { shape: [3, 1, 5, 1], dims: [1, 2] },
  { shape: [2, 3, 1, 2, 3, 2], dims: [0, 2, 4] },
  { shape: [2, 3, 1, 2, 3, 2], dims: [-1, 1] },
];

gpuTest(
  "sum() and mean() match float64 references over all, single, multiple, negative dims, keepDim",
  async () => {
    for (const [c, { shape, dims }] of CASES.entries()) {
      const size = shape.reduce((p, d) => p * d, 1);
      const x = f32(randomValues(size, 100 + c));
      const mask = normalize(dims, shape.length);
      for (const op of ["sum", "mean"] as const) {
        for (const keepDim of [false, true]) {
          const { forward, backward, outSize } = reference(x, shape, mask, op === "mean");
          const tx = Tensor.from(x, shape, { requiresGrad: true });
          const y = (op === "sum" ? sum : mean)(tx, dims, { keepDim });
          const expectedShape = keepDim
            ? shape.map((d, i) => mask[i] ? 1 : d)
            : shape.filter((_, i) => !mask[i]);
          const what = `${op}(${JSON.stringify(shape)}, ${JSON.stringify(dims)}, ${keepDim})`;
          assert.deepEqual(y.shape, expectedShape, what);
          assertClose(await y.toArray(), forward(x), { what });
          const r = f32(randomValues(outSize, 200 + c));
          y.backward(Tensor.from(r, y.shape));
          assert.deepEqual(tx.grad!.shape, shape);
          assertClose(await tx.grad!.toArray(), backward(r), { what: `${what} grad` });
        }
      }
    }
  },
);

gpuTest("sum()/mean() reference gradients agree with finite differences", () => {
  for (const { shape, dims } of [CASES[10], CASES[15]]) {
    const size = shape.reduce((p, d) => p * d, 1);
    const x = randomValues(size, 7);
    const mask = normalize(dims, shape.length);
    for (const isMean of [false, true]) {
      const { forward, backward, outSize } = reference(x, shape, mask, isMean);
      const r = randomValues(outSize, 8);
      const numeric = finiteDifferences((v) => dot(forward(v), r), x);
      assertClose(backward(r), numeric, { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-6 });
    }
  }
});

gpuTest(
  "sum() and mean() of large tensors split into partial passes and stay accurate",
  async () => {
    // Positive values, so a relative tolerance on the sum is meaningful.
    const n = 200_003;
    const x = f32(randomValues(n, 3).map((v) => v + 1.5));
    const total = x.reduce((s, v) => s + v, 0);
    const tx = Tensor.from(x, [n], { requiresGrad: true });
    assertClose([await sum(tx).item()], [total], { rtol: 1e-5 });
    const m = mean(tx);
    assertClose([await m.item()], [total / n], { rtol: 1e-5 });
    m.backward();
    const g = await tx.grad!.toArray();
    assertClose([g[0], g[n - 1]], [1 / n, 1 / n], { rtol: 1e-6, atol: 0 });
    // Few outputs, many reduced elements each: [3, 20001, 5] over dims 1.
    const shape = [3, 20_001, 5];
    const y = f32(randomValues(3 * 20_001 * 5, 4).map((v) => v + 1.5));
    const { forward } = reference(y, shape, [false, true, false], false);
    assertClose(await sum(Tensor.from(y, shape), 1).toArray(), forward(y), { rtol: 1e-5 });
    // The partial sums go back to the pool.
    tx.grad!.dispose();
    tx.grad = null;
    const mark = poolMark();
    tidy(() => mean(tx).backward());
    tx.grad!.dispose();
    assert.equal(inUseBytesSince(mark), 0);
  },
);

gpuTest("sum()/mean() of 0-d and empty tensors, and [] reducing all (PyTorch 1.13)", async () => {
  const s = Tensor.from([2.5], []);
  assert.deepEqual(sum(s).shape, []);
  assert.equal(await sum(s, 0).item(), 2.5);
  assert.equal(await mean(s, -1, { keepDim: true }).item(), 2.5);
  const x = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
  assert.deepEqual(sum(x, []).shape, []);
  assert.equal(await sum(x, []).item(), 21);
  assert.equal(await sum(Tensor.zeros([0, 3])).item(), 0);
  assert.ok(Number.isNaN(await mean(Tensor.zeros([0, 3])).item()));
  assert.deepEqual(Array.from(await sum(Tensor.zeros([0, 3]), 0).toArray()), [0, 0, 0]);
  assert.deepEqual(sum(Tensor.zeros([3, 0]), 0).shape, [0]);
});

gpuTest("sum() and mean() reject dims out of range, duplicates and bad types", () => {
  const x = Tensor.zeros([3, 5, 7, 2]);
  assert.throws(() => sum(x, 4), (e: Error) => {
    return e instanceof RangeError && /sum\(\).*\[-4, 3\].*\[3, 5, 7, 2\]/.test(e.message);
  });
  assert.throws(() => mean(x, -5), RangeError);
  assert.throws(() => sum(x, [1, -3]), /appears more than once/);
  assert.throws(() => mean(x, [0, 0]), RangeError);
  assert.throws(() => sum(x, 1.5), RangeError);
  assert.throws(() => sum(x, "1" as unknown as number), TypeError);
  assert.throws(() => sum(x, 0, { keepDim: 1 as unknown as boolean }), TypeError);
  assert.throws(() => mean([1, 2] as unknown as Tensor), TypeError);
  assert.throws(() => sum(Tensor.zeros([1, 1, 1, 1, 1, 1, 1, 1, 1])), RangeError);
  assert.throws(() => sum(Tensor.from([1], []), 1), RangeError);
});
