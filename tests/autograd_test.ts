import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { inUseBytesSince, poolMark } from "../src/gpu/buffer_pool.ts";
import { add, mul, mulScalar } from "../src/ops/elementwise.ts";
import { sum } from "../src/ops/reduce.ts";
import { Tensor } from "../src/tensor.ts";
import { tidy } from "../src/scope.ts";
import { gpuTest } from "./_gpu.ts";

gpuTest("gradients accumulate across backward() calls like PyTorch's", async () => {
  const x = Tensor.from([1, 2, 3], [3], { requiresGrad: true });
  sum(mulScalar(x, 2)).backward();
  sum(mul(x, x)).backward();
  assert.deepEqual(Array.from(await x.grad!.toArray()), [4, 6, 8]);
});

gpuTest(
  "a second backward() through released nodes fails clearly; retainGraph allows it",
  async () => {
    const x = Tensor.from([1, 2], [2], { requiresGrad: true });
    const y = sum(mul(x, x));
    y.backward(undefined, { retainGraph: true });
    y.backward();
    assert.deepEqual(Array.from(await x.grad!.toArray()), [4, 8]);
    assert.throws(() => y.backward(), /second time.*retainGraph/);
  },
);

gpuTest("backward() refuses tensors without grad and non-scalars without a gradient", () => {
  const x = Tensor.from([1, 2], [2], { requiresGrad: true });
  assert.throws(() => Tensor.ones([1]).backward(), /does not require grad/);
  assert.throws(() => mulScalar(x, 2).backward(), RangeError);
  assert.throws(() => mulScalar(x, 2).backward(Tensor.ones([3])), RangeError);
});

gpuTest("a diamond graph sums both paths; the explicit gradient is not consumed", async () => {
  const x = Tensor.from([1, -2, 3], [3], { requiresGrad: true });
  const a = mulScalar(x, 3);
  const y = add(a, mul(a, x)); // y = 3x + 3x²  →  dy/dx = 3 + 6x
  const g = Tensor.from([1, 1, 2], [3]);
  y.backward(g);
  assert.deepEqual(Array.from(await x.grad!.toArray()), [9, -9, 42]);
  assert.deepEqual(Array.from(await g.toArray()), [1, 1, 2]);
});

gpuTest("noGrad() records nothing, also for async functions", async () => {
  const x = Tensor.ones([2], { requiresGrad: true });
  assert.equal(noGrad(() => mulScalar(x, 2)).requiresGrad, false);
  const y = await noGrad(async () => {
    await Promise.resolve();
    return mulScalar(x, 2);
  });
  assert.equal(y.requiresGrad, false);
  assert.equal(mulScalar(x, 2).requiresGrad, true);
});

gpuTest("backward() releases its intermediate gradients: only leaf grads remain", () => {
  const x = Tensor.randn([64], { seed: 1, requiresGrad: true });
  const mark = poolMark();
  tidy(() => sum(mul(mulScalar(x, 2), x)).backward());
  // Everything made inside is gone except x.grad (64 floats).
  assert.equal(inUseBytesSince(mark), 64 * 4);
});
