import assert from "node:assert/strict";
import { mulScalar } from "../../src/ops/elementwise.ts";
import { flatten, reshape } from "../../src/ops/shape.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, dot, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

gpuTest("reshape() infers -1, shares the buffer and keeps the values", async () => {
  const values = randomValues(3 * 5 * 7, 1);
  const x = Tensor.from(values, [3, 5, 7]);
  const cases: [number[], number[]][] = [
    [[-1], [105]],
    [[5, -1], [5, 21]],
    [[-1, 3, 7], [5, 3, 7]],
    [[1, 105, 1], [1, 105, 1]],
    [[7, 15], [7, 15]],
  ];
  const mark = poolMark();
  for (const [shape, expected] of cases) {
    const y = reshape(x, shape);
    assert.deepEqual(y.shape, expected);
    assert.equal(y.buffer, x.buffer);
    assertClose(await y.toArray(), Float32Array.from(values), { rtol: 0, atol: 0 });
  }
  assert.equal(inUseBytesSince(mark), 0, "a view allocates no buffer");
  assert.deepEqual(reshape(Tensor.from([5], []), [1, 1]).shape, [1, 1]);
  assert.deepEqual(reshape(Tensor.from([5], [1, 1]), []).shape, []);
  assert.deepEqual(reshape(Tensor.zeros([0, 4]), [2, 0, 3]).shape, [2, 0, 3]);
});

gpuTest("flatten() follows torch.flatten with dims 0..3, negative dims and 0-d input", () => {
  const x = Tensor.zeros([2, 3, 4, 5]);
  const cases: [number[], number[]][] = [
    [[], [2, 60]],
    [[0], [120]],
    [[1, 2], [2, 12, 5]],
    [[0, 1], [6, 4, 5]],
    [[2, -1], [2, 3, 20]],
    [[-3, -2], [2, 12, 5]],
    [[3, 3], [2, 3, 4, 5]],
    [[-1], [2, 3, 4, 5]],
  ];
  for (const [args, expected] of cases) {
    const y = flatten(x, ...args);
    assert.deepEqual(y.shape, expected, `flatten(x, ${args})`);
    assert.equal(y.buffer, x.buffer);
  }
  assert.deepEqual(flatten(Tensor.from([3], []), 0).shape, [1]);
  assert.deepEqual(flatten(Tensor.zeros([7]), 0).shape, [7]);
});

gpuTest("reshape() and flatten() pass gradients back with the input's shape", async () => {
  const x = randomValues(2 * 3 * 5, 2);
  const r = randomValues(2 * 3 * 5, 3);
  const tx = Tensor.from(x, [2, 3, 5], { requiresGrad: true });
  const y = mulScalar(flatten(reshape(tx, [6, 5]), 0), 2);
  assert.equal(y.gradFn?.name, "mulScalar");
  assert.deepEqual(y.shape, [30]);
  y.backward(Tensor.from(r, [30]));
  assert.deepEqual(tx.grad!.shape, [2, 3, 5]);
  const expected = r.map((v) => 2 * v);
  assertClose(await tx.grad!.toArray(), expected);
  // The reference backward against finite differences of the reference forward.
  const numeric = finiteDifferences((v) => dot(v.map((u) => 2 * u), r), x);
  assertClose(expected, numeric, { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-6 });
  assert.equal(reshape(Tensor.zeros([4]), [2, 2]).requiresGrad, false);
  assert.equal(flatten(tx).gradFn?.name, "flatten");
});

gpuTest("reshape() and flatten() reject bad sizes and dims", () => {
  const x = Tensor.zeros([2, 3, 4]);
  assert.throws(() => reshape(x, [5, 5]), (e: Error) => {
    return e instanceof RangeError && /reshape\(\).*\[2, 3, 4\].*\[5, 5\]/.test(e.message);
  });
  assert.throws(() => reshape(x, [-1, 5]), RangeError);
  assert.throws(() => reshape(x, [-1, -1]), /only one size may be -1/);
  assert.throws(() => reshape(x, [-2, -12]), RangeError);
  assert.throws(() => reshape(x, [2.5, 4]), RangeError);
  assert.throws(() => reshape(x, [0, -1]), RangeError);
  assert.throws(() => reshape(x, "24" as unknown as number[]), TypeError);
  assert.throws(() => reshape([1, 2] as unknown as Tensor, [2]), TypeError);
  assert.throws(() => flatten(x, 3), RangeError);
  assert.throws(() => flatten(x, 0, -4), RangeError);
  assert.throws(() => flatten(x, 2, 1), /startDim .* must not come after endDim/);
  assert.throws(() => flatten(Tensor.zeros([5])), RangeError);
  assert.throws(() => flatten(x, 0.5), RangeError);
  assert.throws(() => flatten({} as Tensor), TypeError);
});
