import assert from "node:assert/strict";
import { add, addScalar, mul, mulScalar, relu } from "../../src/ops/elementwise.ts";
import { sum } from "../../src/ops/reduce.ts";
import { Tensor } from "../../src/tensor.ts";
import { noGrad } from "../../src/autograd.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

function map(x: Float64Array, f: (v: number, i: number) => number): Float64Array {
  return x.map(f);
}

/** Reference backward checked against central differences of the reference forward. */
function assertReferenceGradient(
  forward: (x: Float64Array) => Float64Array,
  x: Float64Array,
  r: Float64Array,
  grad: Float64Array,
): void {
  const numeric = finiteDifferences((v) => dot(forward(v), r), x);
  assertClose(grad, numeric, { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-6, what: "reference grad" });
}

const SHAPES = [[1], [3, 5, 7], [2, 3, 5, 3]];

gpuTest("add() and mul() match float64 references and their gradients", async () => {
  for (const [s, shape] of SHAPES.entries()) {
    const n = shape.reduce((p, d) => p * d, 1);
    const a = f32(randomValues(n, 10 + s));
    const b = f32(randomValues(n, 20 + s, 3));
    const r = f32(randomValues(n, 30 + s));
    for (const op of ["add", "mul"] as const) {
      const ta = Tensor.from(a, shape, { requiresGrad: true });
      const tb = Tensor.from(b, shape, { requiresGrad: true });
      const y = op === "add" ? add(ta, tb) : mul(ta, tb);
      assert.deepEqual(y.shape, shape);
      const expected = op === "add" ? map(a, (v, i) => v + b[i]) : map(a, (v, i) => v * b[i]);
      assertClose(await y.toArray(), expected, { what: `${op} ${shape}` });
      y.backward(Tensor.from(r, shape));
      const ga = op === "add" ? r : map(r, (v, i) => v * b[i]);
      const gb = op === "add" ? r : map(r, (v, i) => v * a[i]);
      assertClose(await ta.grad!.toArray(), ga, { what: `${op} grad a` });
      assertClose(await tb.grad!.toArray(), gb, { what: `${op} grad b` });
      const fa = (v: Float64Array) =>
        op === "add" ? map(v, (u, i) => u + b[i]) : map(v, (u, i) => u * b[i]);
      const fb = (v: Float64Array) =>
        op === "add" ? map(v, (u, i) => a[i] + u) : map(v, (u, i) => a[i] * u);
      assertReferenceGradient(fa, a, r, ga);
      assertReferenceGradient(fb, b, r, gb);
    }
  }
});

gpuTest("mulScalar(), addScalar() and relu() match float64 references and gradients", async () => {
  for (const [s, shape] of SHAPES.entries()) {
    const n = shape.reduce((p, d) => p * d, 1);
    const x = f32(randomValues(n, 40 + s, 2));
    const r = f32(randomValues(n, 50 + s));
    const cases = [
      { name: "mulScalar", op: (t: Tensor) => mulScalar(t, -1.75), f: (v: number) => v * -1.75 },
      { name: "addScalar", op: (t: Tensor) => addScalar(t, 0.625), f: (v: number) => v + 0.625 },
      { name: "relu", op: relu, f: (v: number) => Math.max(v, 0) },
    ];
    const derivative: Record<string, (v: number) => number> = {
      mulScalar: () => -1.75,
      addScalar: () => 1,
      relu: (v) => v > 0 ? 1 : 0,
    };
    for (const { name, op, f } of cases) {
      const tx = Tensor.from(x, shape, { requiresGrad: true });
      const y = op(tx);
      assertClose(await y.toArray(), map(x, f), { what: `${name} ${shape}` });
      y.backward(Tensor.from(r, shape));
      const gx = map(x, (v, i) => r[i] * derivative[name](v));
      assertClose(await tx.grad!.toArray(), gx, { what: `${name} grad` });
      assertReferenceGradient((v) => map(v, f), x, r, gx);
    }
  }
});

gpuTest("a tensor used twice accumulates both gradients: add(x, x), mul(x, x)", async () => {
  const x = f32(randomValues(13, 1));
  const tx = Tensor.from(x, [13], { requiresGrad: true });
  sum(add(tx, tx)).backward();
  assertClose(await tx.grad!.toArray(), new Float64Array(13).fill(2));
  const ty = Tensor.from(x, [13], { requiresGrad: true });
  sum(mul(ty, ty)).backward();
  assertClose(await ty.grad!.toArray(), map(x, (v) => 2 * v));
  // x feeds two branches that meet again: relu(x) + 3x.
  const tz = Tensor.from(x, [13], { requiresGrad: true });
  sum(add(relu(tz), mulScalar(tz, 3))).backward();
  assertClose(await tz.grad!.toArray(), map(x, (v) => (v > 0 ? 1 : 0) + 3));
});

// WGSL lets implementations assume no NaN reaches a shader (Mesa's GL backend folds the select
// away), so NaN propagation is not asserted; finite edge cases are.
gpuTest("relu() zeroes negatives and -0, and its gradient at 0 is 0", async () => {
  const tx = Tensor.from([1e30, -2, 0, 3, -0.5], [5], { requiresGrad: true });
  const y = relu(tx);
  const values = await y.toArray();
  assert.deepEqual(Array.from(values), [1e30 as number, 0, 0, 3, 0].map(Math.fround));
  y.backward(Tensor.ones([5]));
  assert.deepEqual(Array.from(await tx.grad!.toArray()), [1, 0, 0, 1, 0]);
});

gpuTest("elementwise ops record only when an input requires grad, and not under noGrad", () => {
  const a = Tensor.ones([3]);
  const b = Tensor.ones([3], { requiresGrad: true });
  assert.equal(add(a, a).requiresGrad, false);
  assert.equal(mul(a, b).gradFn?.name, "mul");
  assert.equal(noGrad(() => relu(b)).requiresGrad, false);
  const empty = add(Tensor.zeros([0, 3]), Tensor.zeros([0, 3]));
  assert.deepEqual(empty.shape, [0, 3]);
});

gpuTest("elementwise ops reject mismatched shapes and non-tensors", () => {
  const a = Tensor.ones([2, 3]);
  assert.throws(() => add(a, Tensor.ones([3, 2])), (e: Error) => {
    return e instanceof RangeError && /add\(\).*\[2, 3\] and \[3, 2\]/.test(e.message);
  });
  assert.throws(() => mul(a, Tensor.ones([6])), RangeError);
  assert.throws(() => add(a, [1, 2] as unknown as Tensor), TypeError);
  assert.throws(() => relu(null as unknown as Tensor), TypeError);
  assert.throws(() => mulScalar(a, "2" as unknown as number), TypeError);
  assert.throws(() => addScalar({} as Tensor, 1), TypeError);
});
