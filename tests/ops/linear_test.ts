import assert from "node:assert/strict";
import { linear, matmul } from "../../src/ops/linear.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

/** float64 c = op(a) op(b), a stored [m, k] (or [k, m] when ta), b stored [k, n] (or [n, k]). */
function mm(
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  ta = false,
  tb = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
      }
      c[i * n + j] = s;
    }
  }
  return c;
}

/** float64 F.linear: x [n, in], w [out, in], b [out]. */
function linearRef(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | null,
  n: number,
  inF: number,
  outF: number,
): Float64Array {
  const y = mm(x, w, n, inF, outF, false, true);
  if (b) { for (let i = 0; i < y.length; i++) y[i] += b[i % outF]; }
  return y;
}

const FD = { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-6 };

gpuTest("matmul() matches float64 references and gradients for odd and aligned sizes", async () => {
  // Aligned sizes take the unchecked vec4 path (inside blocks), the rest the checked one; [7, 8, 12]
  // mixes them in every product, including a^T gy with K = 7.
  const sizes = [[5, 7, 9], [33, 17, 10], [8, 12, 16], [7, 8, 12], [1, 1, 1], [6, 3, 2]];
  for (const [s, [m, k, n]] of sizes.entries()) {
    const a = f32(randomValues(m * k, 10 + s));
    const b = f32(randomValues(k * n, 20 + s));
    const r = f32(randomValues(m * n, 30 + s));
    const ta = Tensor.from(a, [m, k], { requiresGrad: true });
    const tb = Tensor.from(b, [k, n], { requiresGrad: true });
    const y = matmul(ta, tb);
    assert.deepEqual(y.shape, [m, n]);
    const what = `matmul ${m}x${k}x${n}`;
    assertClose(await y.toArray(), mm(a, b, m, k, n), { what });
    y.backward(Tensor.from(r, [m, n]));
    const ga = mm(r, b, m, n, k, false, true);
    const gb = mm(a, r, k, m, n, true, false);
    assertClose(await ta.grad!.toArray(), ga, { what: `${what} grad a` });
    assertClose(await tb.grad!.toArray(), gb, { what: `${what} grad b` });
    if (s < 2) {
      const numA = finiteDifferences((v) => dot(mm(v, b, m, k, n), r), a);
      const numB = finiteDifferences((v) => dot(mm(a, v, m, k, n), r), b);
      assertClose(ga, numA, FD);
      assertClose(gb, numB, FD);
    }
  }
});

gpuTest("matmul() with only one input requiring grad, and of a matrix with itself", async () => {
  const a = f32(randomValues(5 * 5, 1));
  const ta = Tensor.from(a, [5, 5], { requiresGrad: true });
  const tb = Tensor.from(a, [5, 5]);
  matmul(tb, ta).backward(Tensor.ones([5, 5]));
  assert.equal(tb.grad, null);
  assertClose(await ta.grad!.toArray(), mm(a, new Float64Array(25).fill(1), 5, 5, 5, true));
  const tc = Tensor.from(a, [5, 5], { requiresGrad: true });
  matmul(tc, tc).backward(Tensor.ones([5, 5]));
  const ones = new Float64Array(25).fill(1);
  const expected = mm(ones, a, 5, 5, 5, false, true).map((v, i) =>
    v + mm(a, ones, 5, 5, 5, true)[i]
  );
  assertClose(await tc.grad!.toArray(), expected);
});

gpuTest("linear() matches F.linear in float64 with and without bias, with gradients", async () => {
  // [N, in, out]
  const sizes = [[5, 7, 9], [33, 17, 10], [2, 16, 8], [7, 8, 12], [1, 3, 1]];
  for (const [s, [n, inF, outF]] of sizes.entries()) {
    for (const withBias of [true, false]) {
      const x = f32(randomValues(n * inF, 40 + s));
      const w = f32(randomValues(outF * inF, 50 + s));
      const b = withBias ? f32(randomValues(outF, 60 + s)) : null;
      const r = f32(randomValues(n * outF, 70 + s));
      const tx = Tensor.from(x, [n, inF], { requiresGrad: true });
      const tw = Tensor.from(w, [outF, inF], { requiresGrad: true });
      const tb = b ? Tensor.from(b, [outF], { requiresGrad: true }) : null;
      const y = linear(tx, tw, tb);
      const what = `linear N=${n} in=${inF} out=${outF} bias=${withBias}`;
      assert.deepEqual(y.shape, [n, outF]);
      assertClose(await y.toArray(), linearRef(x, w, b, n, inF, outF), { what });
      y.backward(Tensor.from(r, [n, outF]));
      const gx = mm(r, w, n, outF, inF);
      const gw = mm(r, x, outF, n, inF, true);
      assertClose(await tx.grad!.toArray(), gx, { what: `${what} grad x` });
      assertClose(await tw.grad!.toArray(), gw, { what: `${what} grad w` });
      let gb: Float64Array | null = null;
      if (b) {
        gb = new Float64Array(outF);
        r.forEach((v, i) => gb![i % outF] += v);
        assertClose(await tb!.grad!.toArray(), gb, { what: `${what} grad b` });
      }
      if (s === 0) {
        const f = (xv: Float64Array, wv: Float64Array, bv: Float64Array | null) =>
          dot(linearRef(xv, wv, bv, n, inF, outF), r);
        assertClose(gx, finiteDifferences((v) => f(v, w, b), x), FD);
        assertClose(gw, finiteDifferences((v) => f(x, v, b), w), FD);
        if (b) assertClose(gb!, finiteDifferences((v) => f(x, w, v), b), FD);
      }
    }
  }
});

gpuTest("linear() with a frozen weight gives only the input and bias gradients", async () => {
  const x = f32(randomValues(3 * 4, 5));
  const tx = Tensor.from(x, [3, 4], { requiresGrad: true });
  const tw = Tensor.from(randomValues(2 * 4, 6), [2, 4]);
  const tb = Tensor.from([0.5, -0.5], [2], { requiresGrad: true });
  linear(tx, tw, tb).backward(Tensor.ones([3, 2]));
  assert.equal(tw.grad, null);
  assertClose(await tb.grad!.toArray(), [3, 3]);
  assert.equal(linear(Tensor.ones([1, 4]), tw).requiresGrad, false);
});

gpuTest("matmul() and linear() reject wrong ranks, mismatched sizes and non-tensors", () => {
  const a = Tensor.zeros([5, 7]);
  assert.throws(() => matmul(a, Tensor.zeros([6, 9])), (e: Error) => {
    return e instanceof RangeError && /matmul\(\).*\[5, 7\].*\[6, 9\]/.test(e.message);
  });
  assert.throws(() => matmul(Tensor.zeros([35]), Tensor.zeros([35, 1])), RangeError);
  assert.throws(() => matmul(a, Tensor.zeros([7, 2, 1])), RangeError);
  assert.throws(() => matmul(a, null as unknown as Tensor), TypeError);
  const w = Tensor.zeros([9, 7]);
  assert.throws(() => linear(Tensor.zeros([5, 8]), w), (e: Error) => {
    return e instanceof RangeError && /linear\(\).*in = 7.*\[9, 7\].*\[5, 8\]/.test(e.message);
  });
  assert.throws(() => linear(Tensor.zeros([7]), w), RangeError);
  assert.throws(() => linear(a, Tensor.zeros([63])), RangeError);
  assert.throws(() => linear(a, w, Tensor.zeros([7])), /bias must be \[out\] = \[9\]/);
  assert.throws(() => linear(a, w, Tensor.zeros([1, 9])), RangeError);
  assert.throws(() => linear(a, w, [1] as unknown as Tensor), TypeError);
  assert.throws(() => linear(a, {} as Tensor), TypeError);
});
